"""Ended workers: which ends are new, which count as crashes, how long to back off, when the job fails.

Preemptions (evictions, node loss, a deletion by someone else while the worker was wanted, the
trainer's stop code) never count. Crashes back off exponentially: `backoffSeconds`, doubling with
each crash in a row, at most `maxBackoffSeconds`. A run of `stableRunSeconds` without a crash (the job
Running all the while) resets both the backoff and the budget: the budget catches crash loops, and a
job that trains for days must not fail on its fourth unrelated crash. `status.crashes` keeps the total.
A worker that exits with the configuration-error code fails the job at once: retrying cannot help.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from dstj_operator.decide import EndKind, Worker
from dstj_operator.policies.clock import age
from dstj_operator.spec import DeepSeekTrainingJobSpec
from dstj_operator.status import Bookkeeping


@dataclass(frozen=True, slots=True)
class End:
    """A worker's end, not yet counted."""

    worker: str
    kind: EndKind
    reason: str


def new_ends(spec: DeepSeekTrainingJobSpec, book: Bookkeeping, workers: list[Worker]) -> list[End]:
    """Ends to count in this pass: each pod once (by name), preemptions, crashes and config errors."""
    ends = []
    for w in workers:
        kind, reason = w.end, w.reason
        if kind is None and w.terminating and w.index < spec.replicas and not spec.suspend:
            # Deleted by someone else (a user, a drain, a spot controller) while wanted: a preemption.
            kind, reason = EndKind.PREEMPTED, "deleted"
        if kind is not None and kind is not EndKind.SUCCEEDED and w.name not in book.counted_pods:
            ends.append(End(w.name, kind, reason))
    return ends


def stable(spec: DeepSeekTrainingJobSpec, book: Bookkeeping, running: bool, now: datetime) -> bool:
    """Whether the run since the last crash counts as stable (resets the backoff and the budget)."""
    since = age(book.last_crash_time, now)
    return running and book.consecutive_crashes > 0 and since is not None \
        and since >= spec.fault_policy.stable_run_seconds


def backoff_left(spec: DeepSeekTrainingJobSpec, book: Bookkeeping, now: datetime) -> float:
    """Seconds replacements must still wait after the last crash (0: none)."""
    if book.consecutive_crashes <= 0 or not book.last_crash_time:
        return 0.0
    policy = spec.fault_policy
    wait = min(policy.backoff_seconds * 2 ** (book.consecutive_crashes - 1),
               max(policy.backoff_seconds, policy.max_backoff_seconds))
    return max(0.0, wait - (age(book.last_crash_time, now) or 0.0))


def exceeded(spec: DeepSeekTrainingJobSpec, book: Bookkeeping) -> bool:
    """Whether the crashes since the last stable run exceed faultPolicy.crashBudget."""
    return book.consecutive_crashes > spec.fault_policy.crash_budget
