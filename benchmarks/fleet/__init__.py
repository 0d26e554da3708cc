"""`python -m benchmarks.fleet`: the operator at fleet scale, on simulated nodes (see `run.py`)."""
