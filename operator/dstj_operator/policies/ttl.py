"""ttlSecondsAfterFinished: delete a finished job (not its kept checkpoints) this long after it ended."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from dstj_operator.policies.clock import age
from dstj_operator.spec import DeepSeekTrainingJobSpec
from dstj_operator.status import JobStatus


@dataclass(frozen=True, slots=True)
class TtlVerdict:
    """Delete now, or look again in `recheck_in` seconds (None: never)."""

    delete: bool
    recheck_in: float | None = None


def evaluate(spec: DeepSeekTrainingJobSpec | None, status: JobStatus, now: datetime) -> TtlVerdict:
    """The verdict for a finished job."""
    ttl = spec.ttl_seconds_after_finished if spec else None
    if ttl is None:
        return TtlVerdict(False)
    left = ttl - (age(status.completion_time, now) or 0.0)
    return TtlVerdict(True) if left <= 0 else TtlVerdict(False, left)
