"""The operator's decisions, one policy per module: pure functions of (spec, status, workers, now).

None of them calls the API server or reads a clock; `reconcile` gathers the facts, asks each policy
and carries out what they decide. Each module has a table test in tests/unit/policies.
"""
