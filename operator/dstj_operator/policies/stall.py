"""Stalled: running, but no progress report for faultPolicy.stallSeconds, counted from the later of the
last report and the current generation's start (a new generation gets its own time to form)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from dstj_operator.policies.clock import age
from dstj_operator.spec import DeepSeekTrainingJobSpec
from dstj_operator.status import JobStatus


@dataclass(frozen=True, slots=True)
class StallVerdict:
    """Whether the job is stalled, whether it just became so, and what to do."""

    stalled: bool
    newly: bool = False
    quiet_seconds: float = 0.0
    restart: bool = False
    """Publish the members again as a new generation (faultPolicy.restartOnStall)."""
    recheck_in: float | None = None


def evaluate(spec: DeepSeekTrainingJobSpec, status: JobStatus, running: bool, now: datetime) -> StallVerdict:
    """The verdict; `status` carries the last report, the generation's first sighting and the last Stalled."""
    policy = spec.fault_policy
    if not running:
        return StallVerdict(False)
    ages = [a for a in (age(status.progress.updated if status.progress else None, now),
                        age(status.bookkeeping.generation_time, now)) if a is not None]
    quiet = min(ages) if ages else 0.0
    stalled = quiet >= policy.stall_seconds
    newly = stalled and not status.is_true("Stalled")
    restart = newly and policy.restart_on_stall and status.membership is not None
    return StallVerdict(stalled, newly, quiet, restart, max(1.0, policy.stall_seconds - quiet))
