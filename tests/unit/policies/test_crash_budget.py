"""Ends are counted once; crashes back off exponentially, reset after a stable run, and fail the job
past the budget; preemptions never count."""

from __future__ import annotations

import pytest

from dstj_operator.decide import EndKind
from dstj_operator.policies import crash_budget
from dstj_operator.status import Bookkeeping
from tests.unit.policies.builders import NOW, ago, job_spec, worker

POLICY = {"faultPolicy": {"crashBudget": 2, "backoffSeconds": 10, "maxBackoffSeconds": 60,
                          "stableRunSeconds": 300}}


def test_each_end_is_counted_once_and_a_deletion_while_wanted_is_a_preemption() -> None:
    spec = job_spec(replicas=3, **POLICY)
    workers = [worker(0, ready=False, end=EndKind.CRASHED, reason="exit code 1"),
               worker(1, ready=False, terminating=True),
               worker(2, ready=False, end=EndKind.PREEMPTED, reason="Evicted"),
               worker(3, ready=False, terminating=True),  # above replicas: a scale-down, not a preemption
               worker(4, ready=False, end=EndKind.SUCCEEDED)]
    ends = crash_budget.new_ends(spec, Bookkeeping(counted_pods=["w2"]), workers)
    assert [(e.worker, e.kind) for e in ends] == [("w0", EndKind.CRASHED), ("w1", EndKind.PREEMPTED)]


def test_deleting_workers_of_a_suspended_job_is_no_preemption() -> None:
    spec = job_spec(suspend=True)
    assert crash_budget.new_ends(spec, Bookkeeping(), [worker(0, ready=False, terminating=True)]) == []


@pytest.mark.parametrize(("crashes", "last_ago", "left"), [
    pytest.param(0, None, 0.0, id="no-crash-no-wait"),
    pytest.param(1, 4, 6.0, id="first-crash-waits-backoffSeconds"),
    pytest.param(2, 4, 16.0, id="second-in-a-row-doubles"),
    pytest.param(3, 0, 40.0, id="third-doubles-again"),
    pytest.param(6, 0, 60.0, id="capped-at-maxBackoffSeconds"),
    pytest.param(2, 25, 0.0, id="waited-out"),
])
def test_crashes_back_off_exponentially_up_to_the_cap(crashes: int, last_ago: float | None, left: float) -> None:
    book = Bookkeeping(consecutive_crashes=crashes, last_crash_time=ago(last_ago) if last_ago is not None else None)
    assert crash_budget.backoff_left(job_spec(**POLICY), book, NOW) == left


def test_the_cap_never_shortens_the_first_backoff() -> None:
    spec = job_spec(faultPolicy={"backoffSeconds": 30, "maxBackoffSeconds": 5})
    assert crash_budget.backoff_left(spec, Bookkeeping(consecutive_crashes=3, last_crash_time=ago(0)), NOW) == 30


@pytest.mark.parametrize(("crashes", "exceeded"), [(2, False), (3, True)])
def test_the_job_fails_once_crashes_in_a_row_exceed_the_budget(crashes: int, exceeded: bool) -> None:
    assert crash_budget.exceeded(job_spec(**POLICY), Bookkeeping(consecutive_crashes=crashes)) is exceeded


@pytest.mark.parametrize(("running", "last_ago", "stable"), [
    pytest.param(True, 300, True, id="running-for-stableRunSeconds"),
    pytest.param(True, 299, False, id="not-yet"),
    pytest.param(False, 3000, False, id="not-running-is-not-stable"),
])
def test_a_stable_run_resets_the_budget_and_the_backoff(running: bool, last_ago: float, stable: bool) -> None:
    book = Bookkeeping(consecutive_crashes=2, last_crash_time=ago(last_ago))
    assert crash_budget.stable(job_spec(**POLICY), book, running, NOW) is stable
