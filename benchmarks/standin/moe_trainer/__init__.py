"""A stand-in for the trainer package, for measuring the operator alone (`benchmarks.operator`).

Worker pods of the benchmark's jobs put this directory first on PYTHONPATH, so their
`python -m moe_trainer.launch` runs `launch.py` here: no torch, a progress report every few seconds.
"""
