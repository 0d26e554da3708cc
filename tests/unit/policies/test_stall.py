"""Stalled: running without a progress report for stallSeconds; restartOnStall republishes once."""

from __future__ import annotations

import pytest

from dstj_operator.policies import stall
from tests.unit.policies.builders import NOW, ago, job_spec, job_status, membership, report

POLICY = {"faultPolicy": {"stallSeconds": 60}}
STALLED = [{"type": "Stalled", "status": "True", "reason": "NoProgress", "message": "", "lastTransitionTime": ""}]


@pytest.mark.parametrize(("report_ago", "generation_ago", "stalled", "recheck"), [
    pytest.param(10, 500, False, 50.0, id="recent-report"),
    pytest.param(60, 500, True, 1.0, id="no-report-for-stallSeconds"),
    pytest.param(500, 20, False, 40.0, id="a-new-generation-gets-its-own-time"),
    pytest.param(None, 70, True, 1.0, id="never-reported"),
])
def test_a_running_job_without_progress_reports_is_stalled(report_ago: float | None, generation_ago: float,
                                                          stalled: bool, recheck: float) -> None:
    status = job_status(membership=membership(3, "w0", "w1"), generation_time=ago(generation_ago),
                        progress=report(3, 40, report_ago) if report_ago is not None else None)
    verdict = stall.evaluate(job_spec(**POLICY), status, True, NOW)
    assert (verdict.stalled, verdict.newly, verdict.restart, verdict.recheck_in) == (stalled, stalled, False, recheck)


def test_a_job_that_is_not_running_is_never_stalled() -> None:
    status = job_status(generation_time=ago(10**5))
    assert stall.evaluate(job_spec(**POLICY), status, False, NOW).stalled is False


def test_restart_on_stall_republishes_once_when_the_stall_begins() -> None:
    spec = job_spec(faultPolicy={"stallSeconds": 60, "restartOnStall": True})
    status = job_status(membership=membership(3, "w0", "w1"), generation_time=ago(100), progress=report(3, 4, 100))
    first = stall.evaluate(spec, status, True, NOW)
    assert (first.stalled, first.newly, first.restart) == (True, True, True)
    status.conditions = job_status(conditions=STALLED).conditions
    again = stall.evaluate(spec, status, True, NOW)
    assert (again.stalled, again.newly, again.restart) == (True, False, False)


def test_without_restart_on_stall_a_stall_only_reports() -> None:
    status = job_status(membership=membership(3, "w0"), generation_time=ago(100), progress=report(3, 4, 100))
    assert stall.evaluate(job_spec(**POLICY), status, True, NOW).restart is False
