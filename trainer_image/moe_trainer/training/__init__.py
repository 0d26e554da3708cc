"""One rank's training: the trainer that owns model, optimizer and data and runs the optimizer step
over the global batch (`trainer.py`), and AdamW with its learning-rate schedule (`optim.py`).
It neither forms process groups nor follows membership (`runtime/` does).
"""
