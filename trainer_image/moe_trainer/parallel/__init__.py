"""This process's place in the run (`context.py`: rank, world, layout, groups) and the EP x DP process
groups with the gradient sync over them (`groups.py`). Knows nothing of the model or of training.
"""
