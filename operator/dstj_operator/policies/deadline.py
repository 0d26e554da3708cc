"""activeDeadlineSeconds: fail a job that has trained longer than this.

Only running time counts (phase Running): a suspended job, or one queued waiting for its workers,
stops the clock, as Kueue and JobSet do for theirs. The clock is kept as the seconds of finished
running stretches plus the start of the current one, so it changes only when the job starts or stops
running, not on every pass (each change is a status write).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from dstj_operator.policies.clock import age
from dstj_operator.spec import DeepSeekTrainingJobSpec
from dstj_operator.status import Bookkeeping, stamp


@dataclass(frozen=True, slots=True)
class DeadlineVerdict:
    """Whether the deadline has passed, and when to look again."""

    exceeded: bool
    running_seconds: float
    recheck_in: float | None = None
    """Seconds until the deadline passes while the clock runs (None: no deadline or the clock stopped)."""


def running_time(book: Bookkeeping, now: datetime) -> float:
    """Seconds the job has been running, the current stretch included."""
    return book.running_seconds + max(0.0, age(book.running_since, now) or 0.0)


def evaluate(spec: DeepSeekTrainingJobSpec, book: Bookkeeping, now: datetime) -> DeadlineVerdict:
    """The deadline's verdict from the clock as stored by the last pass."""
    used = running_time(book, now)
    limit = spec.active_deadline_seconds
    if limit is None:
        return DeadlineVerdict(False, used)
    if used >= limit:
        return DeadlineVerdict(True, used)
    return DeadlineVerdict(False, used, limit - used if book.running_since else None)


def tick(book: Bookkeeping, running: bool, now: datetime) -> tuple[float, str | None]:
    """The clock after this pass: (seconds of finished stretches, start of the current one or None)."""
    if running:
        return book.running_seconds, book.running_since or stamp(now)
    if book.running_since:
        return running_time(book, now), None
    return book.running_seconds, None
