"""The autoscaling policy as data: which sizes are eligible, which one the job runs at and why, when it grows
again, and when a size does not pay."""

from __future__ import annotations

from typing import Any

import pytest

from dstj_operator import conditions
from dstj_operator.policies import autoscale
from dstj_operator.policies.autoscale import Growth, Placement
from dstj_operator.spec import DeepSeekTrainingJobSpec
from dstj_operator.status import JobStatus, SizeThroughput, UnpaidSize
from tests.unit.policies.builders import NOW, ago, job_spec, membership

ON = {"enabled": True, "unschedulableSeconds": 300, "growthBackoffSeconds": 60, "maxGrowthBackoffSeconds": 600,
      "cooldownSeconds": 1800}
"""Autoscaling on; with the tiny preset (8 experts, EP auto) and replicas 4 the eligible sizes are 1, 2, 4."""
EFFICIENT = {**ON, "minScalingEfficiency": 0.8}


def sized(replicas: int = 4, max_replicas: int = 4, autoscaling: dict[str, Any] | None = None,
          **fields: Any) -> DeepSeekTrainingJobSpec:
    """A spec with autoscaling (ON unless told otherwise) and the ceiling `replicas`."""
    return job_spec(replicas=replicas, maxReplicas=max_replicas, autoscaling=ON if autoscaling is None else autoscaling,
                    **fields)


def status(target: int | None = None, throughput: dict[int, tuple[float, float]] | None = None,
           **book: Any) -> JobStatus:
    """A status at `target`; `throughput` maps a size to (tokens/s, seconds ago measured)."""
    measured = [SizeThroughput(world_size=w, tokens_per_second=t, measured=ago(s))
                for w, (t, s) in sorted((throughput or {}).items())]
    return JobStatus.model_validate({"targetReplicas": target, "throughput": measured or None, "bookkeeping": book})


def up(*indices: int) -> list[Placement]:
    """Workers bound to a node."""
    return [Placement(index=i, scheduled=True) for i in indices]


def pending(*indices: int, since: float, **kw: Any) -> list[Placement]:
    """Workers unschedulable for `since` seconds."""
    return [Placement(index=i, scheduled=False, unschedulable_since=ago(since), **kw) for i in indices]


def experts(n: int, top_k: int = 2) -> dict[str, Any]:
    """A trainer config with n routed experts."""
    return {"model": {"preset": "tiny", "moe": {"nRouted": n, "topK": top_k}}}


# Eligible sizes.

@pytest.mark.parametrize(("fields", "sizes"), [
    pytest.param({"minReplicas": 2, "replicas": 6, "maxReplicas": 8}, (2, 4, 6),
                 id="between-min-and-replicas-the-ceiling-not-max"),
    pytest.param({"replicas": 8, "maxReplicas": 8, "autoscaling": {**ON, "powersOfTwo": True}}, (1, 2, 4, 8),
                 id="powers-of-two"),
    pytest.param({"replicas": 8, "maxReplicas": 8, "autoscaling": {**ON, "allowedWorldSizes": [3, 6, 8]}}, (3, 6, 8),
                 id="allowed-sizes-are-taken-as-listed-even-with-EP-1"),
    pytest.param({"replicas": 6, "maxReplicas": 6, "trainer": {"parallel": {"expertParallel": 2}}}, (2, 4, 6),
                 id="a-fixed-EP-must-divide-the-ranks"),
    pytest.param({"replicas": 4, "devicesPerWorker": 2, "trainer": {"parallel": {"expertParallel": 4}}}, (2, 4),
                 id="ranks-are-workers-times-devices"),
    pytest.param({"replicas": 8, "maxReplicas": 8}, (1, 2, 4, 6, 8),
                 id="EP-1-sizes-give-way-to-smaller-sharded-ones"),
    pytest.param({"minReplicas": 5, "replicas": 8, "maxReplicas": 8, "trainer": experts(64, 6)}, (5, 6, 8),
                 id="an-EP-1-size-with-nothing-smaller-sharded-stays"),
    pytest.param({"replicas": 3, "trainer": experts(2, 1)}, (1, 2, 3), id="few-experts-are-cheap-to-replicate"),
    pytest.param({"replicas": 3, "trainer": {"parallel": {"expertParallel": 1}}}, (1, 2, 3),
                 id="a-fixed-EP-1-is-the-users-choice"),
])
def test_eligible_sizes(fields: dict[str, Any], sizes: tuple[int, ...]) -> None:
    fields = {"autoscaling": ON, **fields}
    assert autoscale.eligible(job_spec(**fields)) == sizes


@pytest.mark.parametrize(("n", "fits"), [(0, None), (1, 1), (3, 2), (5, 4), (9, 8)])
def test_fit_is_the_largest_eligible_size_the_workers_fill(n: int, fits: int | None) -> None:
    assert autoscale.fit((1, 2, 4, 8), n) == fits


# The efficiency rule.

@pytest.mark.parametrize(("throughput", "smaller", "larger", "verdict"), [
    pytest.param({2: 200.0, 4: 400.0}, 2, 4, True, id="linear-scaling-pays"),
    pytest.param({2: 200.0, 4: 360.0}, 2, 4, True, id="eighty-percent-of-a-share-just-pays"),
    pytest.param({2: 200.0, 4: 350.0}, 2, 4, False, id="less-does-not"),
    pytest.param({2: 200.0, 4: 190.0}, 2, 4, False, id="a-slower-larger-size-does-not"),
    pytest.param({2: 200.0}, 2, 4, None, id="unmeasured-is-unknown"),
])
def test_one_more_worker_pays_when_it_adds_enough_of_a_workers_share(
        throughput: dict[int, float], smaller: int, larger: int, verdict: bool | None) -> None:
    assert autoscale.pays(throughput, smaller, larger, 0.8) is verdict


def test_a_new_measurement_replaces_the_old_one_at_that_size() -> None:
    old = [SizeThroughput(world_size=4, tokens_per_second=1.0, measured=ago(60)),
           SizeThroughput(world_size=1, tokens_per_second=2.0, measured=ago(60))]
    new = autoscale.with_measurement(old, 2, 3.0, NOW)
    assert [(t.world_size, t.tokens_per_second) for t in autoscale.with_measurement(new, 4, 5.0, NOW)] == \
        [(1, 2.0), (2, 3.0), (4, 5.0)]


# Growth backoff.

@pytest.mark.parametrize(("failures", "failed_ago", "signal_ago", "left"), [
    pytest.param(0, None, None, 0.0, id="no-failure-no-wait"),
    pytest.param(1, 20, None, 40.0, id="first-failure-waits-growthBackoffSeconds"),
    pytest.param(3, 40, None, 200.0, id="doubles-per-failure-in-a-row"),
    pytest.param(6, 0, None, 600.0, id="capped-at-maxGrowthBackoffSeconds"),
    pytest.param(2, 30, 5, 0.0, id="a-capacity-signal-since-the-failure-retries-at-once"),
    pytest.param(2, 30, 50, 90.0, id="a-signal-before-the-failure-does-not"),
])
def test_growth_backs_off_after_capacity_ran_out(failures: int, failed_ago: float | None,
                                                 signal_ago: float | None, left: float) -> None:
    growth = Growth(failures, ago(failed_ago) if failed_ago is not None else None)
    signal = ago(signal_ago) if signal_ago is not None else None
    assert autoscale.growth_backoff_left(sized(), growth, NOW, signal) == left


# Capacity: the target and the Scaling condition.

CAPACITY = [
    pytest.param(sized(autoscaling={}), status(), [], None, (4, False, conditions.AUTOSCALING_OFF, ()),
                 id="off-spec-replicas-is-the-size"),
    pytest.param(sized(replicas=2, autoscaling={**ON, "allowedWorldSizes": [4]}), status(), [], None,
                 (2, False, conditions.NO_ELIGIBLE_SIZE, ()), id="no-eligible-size-falls-back-to-replicas"),
    pytest.param(sized(), status(), [], None, (4, True, conditions.WAITING_FOR_CAPACITY, ()),
                 id="the-first-target-is-the-whole-ask"),
    pytest.param(sized(), status(4), up(0, 1, 2, 3), None, (4, False, conditions.AT_MAXIMUM, ()),
                 id="all-scheduled-at-the-largest-size"),
    pytest.param(sized(), status(4), up(0, 1) + pending(2, 3, since=100), None,
                 (4, True, conditions.WAITING_FOR_CAPACITY, ()), id="waits-unschedulableSeconds-for-pending-workers"),
    pytest.param(sized(), status(4), up(0, 1) + pending(2, 3, since=300), None,
                 (2, False, conditions.CAPACITY_LIMITED, (2, 3)), id="settles-at-what-fits-and-removes-the-rest"),
    pytest.param(sized(), status(4), up(0, 2, 3) + pending(1, since=300), None,
                 (2, False, conditions.CAPACITY_LIMITED, (1,)), id="settles-to-an-eligible-size-not-the-count"),
    pytest.param(sized(), status(4), up(0, 1) + pending(2, since=600, scale_up_triggered=True)
                 + pending(3, since=600, nominated=True), None, (4, True, conditions.WAITING_FOR_CAPACITY, ()),
                 id="keeps-workers-a-cluster-autoscaler-provisions-for"),
    pytest.param(sized(), status(4), up(0, 1) + pending(2, 3, since=900, scale_up_triggered=True), None,
                 (2, False, conditions.CAPACITY_LIMITED, (2, 3)), id="but-not-forever"),
    pytest.param(sized(), status(2), pending(0, 1, since=300), None, (1, True, conditions.WAITING_FOR_CAPACITY, (0, 1)),
                 id="nothing-fits-retries-at-the-smallest-size"),
    pytest.param(sized(), status(2, growth_failures=1, growth_failed_at=ago(20), target_since=ago(20)), up(0, 1),
                 None, (2, False, conditions.CAPACITY_LIMITED, ()), id="settled-waits-out-the-growth-backoff"),
    pytest.param(sized(), status(2, growth_failures=1, growth_failed_at=ago(60), target_since=ago(60)), up(0, 1),
                 None, (4, True, conditions.WAITING_FOR_CAPACITY, ()), id="then-grows-one-eligible-step"),
    pytest.param(sized(), status(2, growth_failures=1, growth_failed_at=ago(20), target_since=ago(20)), up(0, 1),
                 ago(5), (4, True, conditions.WAITING_FOR_CAPACITY, ()), id="or-at-once-when-a-node-joins"),
    pytest.param(sized(replicas=8, max_replicas=8), status(2), up(0, 1), None,
                 (4, True, conditions.WAITING_FOR_CAPACITY, ()), id="grows-one-step-at-a-time"),
    pytest.param(sized(replicas=2), status(4), up(0, 1), None, (2, False, conditions.AT_MAXIMUM, ()),
                 id="a-lowered-ceiling-shrinks-the-target"),
]


@pytest.mark.parametrize(("spec", "before", "placements", "signal", "expected"), CAPACITY)
def test_the_target_follows_capacity(spec: DeepSeekTrainingJobSpec, before: JobStatus, placements: list[Placement],
                                     signal: str | None, expected: tuple[int, bool, str, tuple[int, ...]]) -> None:
    v = autoscale.evaluate(spec, before, placements, NOW, signal)
    assert (v.target, v.scaling, v.reason, v.remove) == expected, v.message
    assert v.reason in conditions.REASONS[conditions.SCALING]


def test_settling_counts_a_failed_growth_and_says_when_it_tries_again() -> None:
    v = autoscale.evaluate(sized(), status(4), up(0, 1) + pending(2, 3, since=300), NOW)
    assert (v.growth, v.recheck_in, v.schedulable, v.target_since) == (Growth(1, ago(0)), 60.0, 2, ago(0))
    assert "unschedulable for 300 s" in v.message and "settled at 2" in v.message


def test_a_grown_size_that_schedules_in_full_resets_the_growth_backoff() -> None:
    before = status(4, growth_failures=2, growth_failed_at=ago(300), target_since=ago(100))
    v = autoscale.evaluate(sized(), before, up(0, 1, 2, 3), NOW)
    assert (v.reason, v.growth) == (conditions.AT_MAXIMUM, Growth())


def test_waiting_rechecks_when_the_first_pending_worker_runs_out_of_time() -> None:
    v = autoscale.evaluate(sized(), status(4), up(0, 1) + pending(2, since=100) + pending(3, since=250), NOW)
    assert (v.recheck_in, v.schedulable) == (50.0, 2)


def test_a_new_target_restarts_its_clock_and_an_unchanged_one_keeps_it() -> None:
    grown = autoscale.evaluate(sized(), status(2, target_since=ago(500)), up(0, 1), NOW)
    kept = autoscale.evaluate(sized(), status(4, target_since=ago(500)), up(0, 1, 2, 3), NOW)
    assert (grown.target_since, kept.target_since) == (ago(0), ago(500))


# Efficiency: measure each size, stop where one more worker does not pay.

EFFICIENCY = [
    pytest.param(status(), up(0), (1, conditions.MEASURING), id="starts-at-the-smallest-size-and-measures"),
    pytest.param(JobStatus(membership=membership(3, "w0", "w1")), up(0, 1), (2, conditions.MEASURING),
                 id="turned-on-for-a-training-job-keeps-its-size"),
    pytest.param(status(1, {1: (100.0, 10)}, target_since=ago(60)), up(0), (2, conditions.WAITING_FOR_CAPACITY),
                 id="grows-once-its-size-is-measured"),
    pytest.param(status(2, {1: (100.0, 200), 2: (190.0, 120)}, target_since=ago(60)), up(0, 1),
                 (2, conditions.MEASURING), id="a-measurement-from-before-it-got-there-does-not-count"),
    pytest.param(status(2, {1: (100.0, 200), 2: (190.0, 10)}, target_since=ago(60)), up(0, 1),
                 (4, conditions.WAITING_FOR_CAPACITY), id="a-size-that-pays-grows-on"),
    pytest.param(status(4, {2: (190.0, 200), 4: (250.0, 10)}, target_since=ago(60)), up(0, 1, 2, 3),
                 (2, conditions.EFFICIENCY_LIMITED), id="a-size-that-does-not-pay-goes-back"),
    pytest.param(status(4, {2: (190.0, 200), 4: (370.0, 10)}, target_since=ago(60)), up(0, 1, 2, 3),
                 (4, conditions.AT_MAXIMUM), id="the-largest-size-that-pays-is-the-maximum"),
    pytest.param(status(2, {2: (190.0, 10), 4: (250.0, 400)}, target_since=ago(60),
                        unpaid_sizes=[UnpaidSize(world_size=4, since=ago(400))]), up(0, 1),
                 (2, conditions.EFFICIENCY_LIMITED), id="is-not-retried-within-the-cooldown"),
    pytest.param(status(2, {2: (190.0, 10), 4: (250.0, 2000)}, target_since=ago(60),
                        unpaid_sizes=[UnpaidSize(world_size=4, since=ago(1800))]), up(0, 1),
                 (4, conditions.WAITING_FOR_CAPACITY), id="and-is-retried-after-it"),
    pytest.param(status(2, {2: (190.0, 10)}, target_since=ago(60)), up(0) + pending(1, since=30),
                 (2, conditions.WAITING_FOR_CAPACITY), id="capacity-comes-first"),
]


@pytest.mark.parametrize(("before", "placements", "expected"), EFFICIENCY)
def test_growth_stops_at_the_size_that_pays(before: JobStatus, placements: list[Placement],
                                            expected: tuple[int, str]) -> None:
    v = autoscale.evaluate(sized(autoscaling=EFFICIENT), before, placements, NOW)
    assert (v.target, v.reason) == expected, v.message


def test_a_size_found_not_to_pay_is_remembered_with_the_cooldown() -> None:
    before = status(4, {2: (190.0, 200), 4: (250.0, 10)}, target_since=ago(60))
    v = autoscale.evaluate(sized(autoscaling=EFFICIENT), before, up(0, 1, 2, 3), NOW)
    assert (v.unpaid, v.recheck_in, v.target_since) == ((UnpaidSize(world_size=4, since=ago(0)),), 1800.0, ago(0))
    assert "minScalingEfficiency (0.8)" in v.message


def test_an_expired_cooldown_is_forgotten() -> None:
    before = status(4, {4: (250.0, 10)}, target_since=ago(60), unpaid_sizes=[UnpaidSize(world_size=2, since=ago(1800))])
    assert autoscale.evaluate(sized(autoscaling=EFFICIENT), before, up(0, 1, 2, 3), NOW).unpaid == ()


# Recording the verdict.

def test_the_verdict_is_recorded_in_the_status_and_cleared_when_autoscaling_is_off() -> None:
    job = status(4)
    autoscale.record(job, autoscale.evaluate(sized(), job, up(0, 1) + pending(2, 3, since=300), NOW))
    dumped = job.dump()
    assert (dumped["targetReplicas"], dumped["schedulableReplicas"]) == (2, 2)
    assert dumped["bookkeeping"] == {"countedPods": [], "consecutiveCrashes": 0, "runningSeconds": 0.0,
                                     "syncFailures": 0, "growthFailures": 1, "growthFailedAt": ago(0),
                                     "targetSince": ago(0)}
    autoscale.record(job, autoscale.evaluate(sized(autoscaling={}), job, [], NOW))
    assert "targetReplicas" not in job.dump() and "growthFailures" not in job.dump()["bookkeeping"]
