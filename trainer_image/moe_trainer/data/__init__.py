"""Training data: a corpus, cleaned and deduplicated, tokenized, and served in a fixed order.

The order of samples is a pure function of (seed, step), so a resumed or resized run consumes
exactly the samples an uninterrupted one does.
"""

from moe_trainer.data.dataset import TokenDataset, build_datasets

__all__ = ["TokenDataset", "build_datasets"]
