"""spec.autoscaling: which world sizes a job may train at, and which one it trains at (status.targetReplicas).

Design. Pure decisions like every policy: no API calls, no clock.
Inputs: the spec; the status (targetReplicas, throughput per size, the growth and cooldown bookkeeping);
`Placement` facts about the workers, which reconcile reads from their pods and events (bound to a node;
unschedulable since when; kept for a cluster autoscaler: a TriggeredScaleUp event or a nominatedNodeName);
when the cluster last signalled capacity (a Node added or become schedulable, pods deleted in the
namespace; None where the operator has no Node watch); now.
Output: a `SizeVerdict`: the target size, the workers to remove because they stayed unschedulable, the
Scaling condition (status, reason, message), the bookkeeping to store (`record` writes it all), and when
to look again.
What reconcile does with it: call `evaluate` on every pass, `record` the verdict, and
use the target where it would use spec.replicas (worker indices to keep and create, the start gang,
Degraded); delete the `remove` workers (indices below the target come back as fresh pods that may
schedule into the room the removed ones freed); give workers from index minReplicas up the
surplusPriorityClassName; publish at most `fit(eligible(spec), seated)` members, so a generation only
trains at an eligible size; set the Scaling condition and emit an event when the target changed; feed
steady tokens/s from progress reports into status.throughput (`with_measurement`); requeue after
`recheck_in`.

Rules.
- Eligible sizes (`eligible`): worker counts n in [minReplicas, replicas] (replicas is the ceiling; the
  operator never writes it) whose n x processes-per-worker ranks have a layout (`plan_layout` with the
  trainer's expertParallel and epCap), restricted to allowedWorldSizes or to powers of two.
- EP = 1: with expertParallel auto, at least MANY_EXPERTS routed experts and no allowedWorldSizes (a size
  the user listed is chosen knowingly), a size whose layout has EP = 1 (every rank holds every expert) is
  dropped when a smaller candidate size has EP > 1. The smaller size trains the same model with a
  fraction of the expert memory per rank; one more worker is not worth replicating every expert on every
  rank (it may not even fit). With 8 experts, sizes 1..8 give 1, 2, 4, 6, 8. An EP = 1 size with no
  smaller EP > 1 candidate stays: it is the only way to train that small.
- Capacity: the first target is the largest eligible size (the whole ask), or the smallest with the
  efficiency rule on (it must measure each step; a job already training keeps its size). While workers
  of the target are not yet scheduled, and none has been unschedulable for unschedulableSeconds
  (KEEP_SECONDS for one a cluster autoscaler is provisioning for), the job waits (WaitingForCapacity). A
  worker unschedulable longer is removed and the target settles at the largest eligible size the
  scheduled workers fill (CapacityLimited), a failed growth. Once every worker of the target is
  scheduled the job grows one eligible step, after the growth backoff (growthBackoffSeconds, doubling per
  failure in a row, at most maxGrowthBackoffSeconds), or at once when the cluster signalled capacity
  since the last failure. At the largest eligible size: AtMaximum.
- Efficiency (minScalingEfficiency > 0): growing from n to the next measured size m pays when
  (tps[m] - tps[n]) / (m - n) >= minScalingEfficiency x tps[n] / n. The job grows beyond its size only once
  that size's throughput is measured since it got there (MeasuringThroughput); a size that does not pay
  sends it back to the smaller one (EfficiencyLimited) and is not tried again within cooldownSeconds.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from dstj_api import plan_layout
from dstj_operator import conditions
from dstj_operator.decide import Worker
from dstj_operator.policies.clock import age
from dstj_operator.spec import DeepSeekTrainingJobSpec
from dstj_operator.status import JobStatus, SizeThroughput, UnpaidSize, stamp

MANY_EXPERTS = 4
"""From this many routed experts on, a size with EP = 1 gives way to a smaller one with EP > 1."""
KEEP_SECONDS = 900
"""How long a worker a cluster autoscaler is provisioning for may stay unschedulable (cluster-autoscaler's
default --max-node-provision-time), unless unschedulableSeconds is longer: a failed scale-up must end too."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Placement:
    """Where one worker stands with the scheduler, as reconcile reads it from the pod and its events."""

    index: int
    scheduled: bool
    """Bound to a node."""
    unschedulable_since: str | None = None
    """When its PodScheduled condition turned False with reason Unschedulable (None: not unschedulable)."""
    scale_up_triggered: bool = False
    """A TriggeredScaleUp event names it: a cluster autoscaler is adding a node for it."""
    nominated: bool = False
    """status.nominatedNodeName is set: a node is being made ready for it."""


@dataclass(frozen=True, slots=True)
class Growth:
    """Growth backoff state: failed tries in a row and when the last one failed."""

    failures: int = 0
    failed_at: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class SizeVerdict:
    """The chosen size, why, and what to store; `record` writes it into the status."""

    target: int
    """status.targetReplicas: the workers to run (indices below it)."""
    scaling: bool
    """The Scaling condition's status: True while resizing, False once settled."""
    reason: str
    message: str
    schedulable: int = 0
    """Workers of the target bound to a node (status.schedulableReplicas)."""
    remove: tuple[int, ...] = ()
    """Indices of workers unschedulable too long: delete them."""
    growth: Growth = field(default_factory=Growth)
    unpaid: tuple[UnpaidSize, ...] = ()
    target_since: str | None = None
    recheck_in: float | None = None
    """Seconds until the verdict may change with no event (None: only an event changes it)."""


def placements(workers: Sequence[Worker], scale_up_triggered: set[str] | frozenset[str] = frozenset()
               ) -> list[Placement]:
    """The placement of each live worker (ended and terminating ones hold no capacity); `scale_up_triggered`
    names the pods a TriggeredScaleUp event is about."""
    return [Placement(index=w.index, scheduled=w.scheduled, unschedulable_since=w.unschedulable_since,
                      nominated=w.nominated, scale_up_triggered=w.name in scale_up_triggered)
            for w in workers if w.end is None and not w.terminating]


def candidates(spec: DeepSeekTrainingJobSpec) -> list[int]:
    """Worker counts in [minReplicas, replicas] with a valid layout, restricted by allowedWorldSizes/powersOfTwo."""
    auto = spec.autoscaling
    allowed = set(auto.allowed_world_sizes) if auto.allowed_world_sizes is not None else None
    sizes = []
    for n in range(spec.min_replicas, spec.replicas + 1):
        if (allowed is not None and n not in allowed) or (auto.powers_of_two and n & (n - 1)):
            continue
        if _layout_ep(spec, n) is not None:
            sizes.append(n)
    return sizes


def eligible(spec: DeepSeekTrainingJobSpec) -> tuple[int, ...]:
    """The sizes the job may train at, ascending: the candidates less those the EP = 1 rule drops."""
    sizes = candidates(spec)
    if spec.trainer.parallel.expert_parallel != "auto" or spec.trainer.model.moe.n_routed < MANY_EXPERTS \
            or spec.autoscaling.allowed_world_sizes is not None:
        return tuple(sizes)
    kept, sharded_below = [], False
    for n in sizes:
        ep = _layout_ep(spec, n) or 1
        if ep == 1 and sharded_below:
            continue  # a smaller size shards the experts: do not replicate them all for one more worker
        sharded_below = sharded_below or ep > 1
        kept.append(n)
    return tuple(kept)


def _layout_ep(spec: DeepSeekTrainingJobSpec, n: int) -> int | None:
    """The EP degree of n workers' ranks, or None when no layout fits."""
    parallel = spec.trainer.parallel
    try:
        return plan_layout(n * max(spec.devices_per_worker, 1), spec.trainer.model.moe.n_routed,
                           parallel.expert_parallel, parallel.ep_cap).ep
    except ValueError:
        return None


def fit(sizes: Sequence[int], n: int) -> int | None:
    """The largest of `sizes` not above n (None: none fits): how many of n ready workers may train."""
    return max((s for s in sizes if s <= n), default=None)


def pays(throughput: Mapping[int, float], smaller: int, larger: int, min_efficiency: float) -> bool | None:
    """Whether growing from `smaller` to `larger` workers pays: each added worker brings at least
    `min_efficiency` of a worker's share at `smaller`. None while either size is unmeasured."""
    if smaller not in throughput or larger not in throughput or larger <= smaller:
        return None
    share = throughput[smaller] / smaller
    return (throughput[larger] - throughput[smaller]) / (larger - smaller) >= min_efficiency * share


def growth_backoff_left(spec: DeepSeekTrainingJobSpec, growth: Growth, now: datetime,
                        capacity_signal: str | datetime | None = None) -> float:
    """Seconds before the next try to grow (0: now). A capacity signal after the last failure ends it."""
    since = age(growth.failed_at, now)
    if growth.failures <= 0 or since is None:
        return 0.0
    signal = age(capacity_signal, now)
    if signal is not None and signal < since:
        return 0.0
    auto = spec.autoscaling
    wait = min(auto.growth_backoff_seconds * 2 ** (growth.failures - 1),
               max(auto.growth_backoff_seconds, auto.max_growth_backoff_seconds))
    return max(0.0, wait - since)


def with_measurement(throughput: Sequence[SizeThroughput], world_size: int, tokens_per_second: float,
             now: datetime) -> list[SizeThroughput]:
    """status.throughput with a steady measurement at `world_size` (replacing the older one), by size."""
    entry = SizeThroughput(world_size=world_size, tokens_per_second=tokens_per_second, measured=stamp(now))
    return sorted([t for t in throughput if t.world_size != world_size] + [entry], key=lambda t: t.world_size)


def evaluate(spec: DeepSeekTrainingJobSpec, status: JobStatus, placements: Sequence[Placement], now: datetime,
             capacity_signal: str | datetime | None = None) -> SizeVerdict:
    """The size to run now and why (see the module docstring for the rules)."""
    auto, book = spec.autoscaling, status.bookkeeping
    if not auto.enabled:
        return SizeVerdict(target=spec.replicas, scaling=False, reason=conditions.AUTOSCALING_OFF,
                           message="spec.autoscaling.enabled is false: spec.replicas is the size")
    sizes = eligible(spec)
    if not sizes:
        return SizeVerdict(target=spec.replicas, scaling=False, reason=conditions.NO_ELIGIBLE_SIZE,
                           message=f"no worker count in [minReplicas ({spec.min_replicas}), replicas "
                           f"({spec.replicas})] is allowed and has a layout; widen the bounds or relax "
                           "spec.autoscaling.allowedWorldSizes or powersOfTwo")
    unpaid = tuple(u for u in book.unpaid_sizes or [] if (age(u.since, now) or 0.0) < auto.cooldown_seconds)
    growth = Growth(book.growth_failures or 0, book.growth_failed_at)
    target, since = _current(spec, status, sizes), book.target_since
    if target != status.target_replicas:
        since = stamp(now)
    base = SizeVerdict(target=target, scaling=False, reason="", message="", growth=growth, unpaid=unpaid,
                       target_since=since)
    return _capacity(spec, base, sizes, placements, now, capacity_signal, status.throughput or [])


def _current(spec: DeepSeekTrainingJobSpec, status: JobStatus, sizes: tuple[int, ...]) -> int:
    """The stored target, snapped to an eligible size (the spec may have changed); else the first target:
    the whole ask, or with the efficiency rule the smallest size (or the size of a generation already
    training, so turning autoscaling on does not shrink a running job)."""
    if status.target_replicas is None:
        if spec.autoscaling.min_scaling_efficiency <= 0:
            return sizes[-1]
        current = status.membership
        training = current.world_size if current is not None and current.state == "running" else 0
        return fit(sizes, training) or sizes[0]
    return fit(sizes, status.target_replicas) or sizes[0]


def _capacity(spec: DeepSeekTrainingJobSpec, v: SizeVerdict, sizes: tuple[int, ...],
              placements: Sequence[Placement], now: datetime, capacity_signal: str | datetime | None,
              throughput: Sequence[SizeThroughput]) -> SizeVerdict:
    """Wait for, settle at, or grow from the current target's capacity."""
    limit = spec.autoscaling.unschedulable_seconds
    mine = [p for p in placements if p.index < v.target]
    scheduled = sum(1 for p in mine if p.scheduled)
    stuck, left = [], []
    for p in mine:
        waited = age(p.unschedulable_since, now)
        if p.scheduled or waited is None:
            continue
        allowed = max(limit, KEEP_SECONDS) if p.scale_up_triggered or p.nominated else limit
        if waited >= allowed:
            stuck.append(p.index)
        else:
            left.append(allowed - waited)
    v = _replace(v, schedulable=scheduled)
    if stuck:
        return _settle(spec, v, sizes, tuple(sorted(stuck)), scheduled, now)
    if scheduled < v.target:
        return _replace(v, scaling=True, reason=conditions.WAITING_FOR_CAPACITY, recheck_in=min(left, default=None),
                        message=f"{scheduled} of {v.target} workers scheduled; waiting up to "
                        f"unschedulableSeconds ({limit} s) for the rest")
    if v.growth.failures and (age(v.target_since, now) or 0.0) < (age(v.growth.failed_at, now) or 0.0):
        v = _replace(v, growth=Growth())  # a grown size scheduled in full: growth works again
    return _grow(spec, v, sizes, now, capacity_signal, throughput)


def _settle(spec: DeepSeekTrainingJobSpec, v: SizeVerdict, sizes: tuple[int, ...], stuck: tuple[int, ...],
            scheduled: int, now: datetime) -> SizeVerdict:
    """Remove the workers unschedulable too long; settle at the largest eligible size the others fill."""
    limit = spec.autoscaling.unschedulable_seconds
    settled = fit(sizes, scheduled)
    if settled is None:
        return _replace(v, target=sizes[0], scaling=True, reason=conditions.WAITING_FOR_CAPACITY, remove=stuck,
                        message=f"{len(stuck)} worker(s) unschedulable for {limit} s and only {scheduled} "
                        f"scheduled: fewer than the smallest eligible size ({sizes[0]}); retrying")
    growth = Growth(v.growth.failures + 1, stamp(now))
    retry = growth_backoff_left(spec, growth, now)
    return _replace(v, target=settled, target_since=stamp(now) if settled != v.target else v.target_since,
                    growth=growth, reason=conditions.CAPACITY_LIMITED, remove=stuck, recheck_in=retry,
                    message=f"{len(stuck)} worker(s) unschedulable for {limit} s (unschedulableSeconds): settled "
                    f"at {settled}, the largest eligible size that fits; trying to grow again at "
                    f"{_at(now, retry)} or when the cluster signals capacity")


def _grow(spec: DeepSeekTrainingJobSpec, v: SizeVerdict, sizes: tuple[int, ...], now: datetime,
          capacity_signal: str | datetime | None, throughput: Sequence[SizeThroughput]) -> SizeVerdict:
    """Every worker of the target is scheduled: grow one eligible step, unless a rule says stop."""
    step = next((s for s in sizes if s > v.target), None)
    if spec.autoscaling.min_scaling_efficiency > 0 and len(sizes) > 1:
        stop = _efficiency(spec, v, sizes, step, now, throughput)
        if stop is not None:
            return stop
    if step is None:
        return _replace(v, reason=conditions.AT_MAXIMUM,
                        message=f"at {v.target}, the largest eligible size up to replicas ({spec.replicas})")
    wait = growth_backoff_left(spec, v.growth, now, capacity_signal)
    if wait > 0:
        return _replace(v, reason=conditions.CAPACITY_LIMITED, recheck_in=wait,
                        message=f"at {v.target}: the workers of a larger size stayed unschedulable "
                        f"{v.growth.failures} time(s) in a row; "
                        f"trying {step} at {_at(now, wait)} or when the cluster signals capacity")
    return _replace(v, target=step, target_since=stamp(now), scaling=True, reason=conditions.WAITING_FOR_CAPACITY,
                    message=f"all {v.target} workers scheduled: growing to {step}")


def _efficiency(spec: DeepSeekTrainingJobSpec, v: SizeVerdict, sizes: tuple[int, ...], step: int | None,
                now: datetime, throughput: Sequence[SizeThroughput]) -> SizeVerdict | None:
    """Measure the target, go back from it if it does not pay, or stop before a size that did not;
    None when the rule lets the job grow to `step` (or stay at its maximum)."""
    auto = spec.autoscaling
    here = next((t for t in throughput if t.world_size == v.target), None)
    if here is None or measured_before(here.measured, v.target_since, now):
        return _replace(v, scaling=True, reason=conditions.MEASURING,
                        message=f"measuring steady tokens/s at {v.target} workers")
    tps = {t.world_size: t.tokens_per_second for t in throughput}
    below = max((s for s in sizes if s < v.target and s in tps), default=None)
    if below is not None and pays(tps, below, v.target, auto.min_scaling_efficiency) is False:
        unpaid = (*v.unpaid, UnpaidSize(world_size=v.target, since=stamp(now)))
        return _replace(v, target=below, target_since=stamp(now), unpaid=unpaid,
                        reason=conditions.EFFICIENCY_LIMITED, recheck_in=float(auto.cooldown_seconds),
                        message=f"{v.target} workers do not pay over {below}: each added worker brings less than "
                        f"minScalingEfficiency ({auto.min_scaling_efficiency}) of a worker's share; back to "
                        f"{below}, not trying {v.target} again for cooldownSeconds ({auto.cooldown_seconds} s)")
    blocked = next((u for u in v.unpaid if u.world_size == step), None)
    if blocked is not None:
        left = max(0.0, auto.cooldown_seconds - (age(blocked.since, now) or 0.0))
        return _replace(v, reason=conditions.EFFICIENCY_LIMITED, recheck_in=left,
                        message=f"at {v.target}: {step} workers did not pay; trying them again at {_at(now, left)}")
    return None


def measured_before(when: str, since: str | None, now: datetime) -> bool:
    """Whether `when` lies before `since` (a measurement taken before the job got to its size)."""
    return since is not None and (age(when, now) or 0.0) > (age(since, now) or 0.0)


def _at(now: datetime, seconds: float) -> str:
    """The time `seconds` from now, as a condition message says it: a fixed time, not a countdown, so the
    message (and the status) does not change on every pass."""
    return stamp(now + timedelta(seconds=seconds + 0.5))  # the nearest second: the same stamp every pass


def _replace(v: SizeVerdict, **changes: Any) -> SizeVerdict:
    return replace(v, **changes)


def record(status: JobStatus, verdict: SizeVerdict) -> None:
    """Store the verdict in the status: the target, the schedulable count and the bookkeeping (all cleared
    when autoscaling is off)."""
    book = status.bookkeeping
    if verdict.reason == conditions.AUTOSCALING_OFF:
        status.target_replicas = status.schedulable_replicas = None
        book.growth_failures = book.growth_failed_at = book.target_since = book.unpaid_sizes = None
        return
    status.target_replicas, status.schedulable_replicas = verdict.target, verdict.schedulable
    book.growth_failures = verdict.growth.failures or None
    book.growth_failed_at = verdict.growth.failed_at
    book.target_since = verdict.target_since
    book.unpaid_sizes = list(verdict.unpaid) or None
