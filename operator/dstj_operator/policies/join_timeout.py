"""rendezvous.joinTimeoutSeconds: a published generation that sent no progress report within the timeout
(its group never formed: a member hung before joining, a store that lost its keys) is published again
with the same members under fresh rendezvous keys."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from dstj_operator.policies.clock import age
from dstj_operator.spec import DeepSeekTrainingJobSpec
from dstj_operator.status import JobStatus


@dataclass(frozen=True, slots=True)
class JoinVerdict:
    """Republish now, or look again in `recheck_in` seconds (None: nothing to watch)."""

    republish: bool
    recheck_in: float | None = None


def evaluate(spec: DeepSeekTrainingJobSpec, status: JobStatus, running: bool, now: datetime) -> JoinVerdict:
    """The verdict for the published generation."""
    current, timeout = status.membership, spec.rendezvous.join_timeout_seconds
    if not running or current is None or current.state != "running" or current.world_size == 0:
        return JoinVerdict(False)
    if status.bookkeeping.stall_generation != current.generation:
        return JoinVerdict(False)  # published in this very pass: its clock starts with the next one
    if status.progress is not None and status.progress.generation == current.generation:
        return JoinVerdict(False)
    waited = age(status.bookkeeping.generation_time, now) or 0.0
    if waited >= timeout:
        return JoinVerdict(True)
    return JoinVerdict(False, max(1.0, timeout - waited))
