"""The start gang: before its first generation (and after a resume from suspend) the job waits for all
`replicas` workers to be Ready, at most rendezvous.gangTimeoutSeconds, then starts with those ready
(at least minReplicas). Starting at W=1 the moment one worker is up would re-form the group once per
late worker, each a stop checkpoint and a reload."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from dstj_operator.decide import Worker
from dstj_operator.policies.clock import age
from dstj_operator.spec import DeepSeekTrainingJobSpec
from dstj_operator.status import JobStatus, stamp


@dataclass(frozen=True, slots=True)
class GangVerdict:
    """Whether a first generation may be published now; when the wait began; when to look again."""

    may_start: bool
    since: str | None = None
    recheck_in: float | None = None


def gathering(status: JobStatus) -> bool:
    """Whether no generation is training: none published yet, or the last one was a suspension."""
    current = status.membership
    return current is None or current.state != "running" or current.world_size == 0


def evaluate(spec: DeepSeekTrainingJobSpec, status: JobStatus, workers: list[Worker],
             now: datetime) -> GangVerdict:
    """The verdict; `workers` are the live workers the membership would choose from."""
    if spec.suspend or not gathering(status):
        return GangVerdict(True)
    ready = sum(1 for w in workers if w.ready and w.index < spec.replicas)
    if ready >= spec.replicas:
        return GangVerdict(True)
    since = status.bookkeeping.gang_since or stamp(now)
    waited = age(since, now) or 0.0
    timeout = spec.rendezvous.gang_timeout_seconds
    if waited >= timeout:
        return GangVerdict(ready >= spec.min_replicas, since)
    return GangVerdict(False, since, max(0.5, timeout - waited))
