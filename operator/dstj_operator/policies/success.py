"""Success: the trainer reported that it finished every step of train.steps."""

from __future__ import annotations

from dstj_api import ProgressReport


def finished(progress: ProgressReport | None) -> bool:
    """Whether the report says training finished at its last step (a stopped or partial run is not success)."""
    return progress is not None and progress.state == "finished" and progress.step == progress.total_steps
