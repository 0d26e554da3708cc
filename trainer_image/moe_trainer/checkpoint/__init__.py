"""Reshardable, atomic, generation-fenced checkpoints (`checkpointer.py`) and where they live: a shared
directory or an fsspec URL (`storage.py`).
"""
