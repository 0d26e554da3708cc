"""The first generation waits for all replicas, at most gangTimeoutSeconds, then starts with those ready."""

from __future__ import annotations

import pytest

from dstj_operator.policies import start_gang
from tests.unit.policies.builders import NOW, ago, job_spec, job_status, membership, worker

SPEC = job_spec(replicas=3, minReplicas=2, maxReplicas=4, rendezvous={"gangTimeoutSeconds": 60})


@pytest.mark.parametrize(("ready", "since_ago", "may_start", "recheck"), [
    pytest.param(3, None, True, None, id="all-ready-start-at-once"),
    pytest.param(2, None, False, 60.0, id="first-look-starts-the-wait"),
    pytest.param(2, 30, False, 30.0, id="still-within-the-timeout"),
    pytest.param(2, 60, True, None, id="timeout-starts-with-those-ready"),
    pytest.param(1, 600, False, None, id="never-below-minReplicas"),
])
def test_the_first_generation_waits_for_the_whole_gang(ready: int, since_ago: float | None, may_start: bool,
                                                       recheck: float | None) -> None:
    workers = [worker(i, ready=i < ready) for i in range(3)]
    status = job_status(gang_since=ago(since_ago) if since_ago is not None else None)
    verdict = start_gang.evaluate(SPEC, status, workers, NOW)
    assert (verdict.may_start, verdict.recheck_in) == (may_start, recheck)
    if not may_start or since_ago is not None:
        assert verdict.since == (ago(since_ago) if since_ago is not None else ago(0))


def test_a_running_generation_is_not_held_back_by_the_gang() -> None:
    status = job_status(membership=membership(4, "w0", "w1"))
    verdict = start_gang.evaluate(SPEC, status, [worker(0), worker(1), worker(2, ready=False)], NOW)
    assert (verdict.may_start, verdict.since) == (True, None)


def test_a_resume_from_suspend_gathers_the_gang_again() -> None:
    status = job_status(membership=membership(5, state="suspended"))
    assert not start_gang.evaluate(SPEC, status, [worker(0), worker(1), worker(2, ready=False)], NOW).may_start


def test_a_zero_timeout_starts_as_soon_as_min_replicas_are_ready() -> None:
    spec = job_spec(replicas=3, minReplicas=1, maxReplicas=4, rendezvous={"gangTimeoutSeconds": 0})
    assert start_gang.evaluate(spec, job_status(), [worker(0), worker(1, ready=False)], NOW).may_start
