"""A generation that never reports within joinTimeoutSeconds is published again."""

from __future__ import annotations

import pytest

from dstj_operator.policies import join_timeout
from tests.unit.policies.builders import NOW, ago, job_spec, job_status, membership, report

SPEC = job_spec(rendezvous={"joinTimeoutSeconds": 600})


@pytest.mark.parametrize(("report_generation", "published_ago", "republish", "recheck"), [
    pytest.param(4, 600, True, None, id="no-report-of-this-generation-in-time"),
    pytest.param(4, 599, False, 1.0, id="not-yet"),
    pytest.param(5, 6000, False, None, id="it-formed"),
    pytest.param(None, 500, False, 100.0, id="no-report-at-all-yet"),
])
def test_a_generation_that_never_reports_is_published_again(report_generation: int | None, published_ago: float,
                                                           republish: bool, recheck: float | None) -> None:
    status = job_status(membership=membership(5, "w0", "w1"), stall_generation=5, generation_time=ago(published_ago),
                        progress=report(report_generation, 10, 0) if report_generation is not None else None)
    verdict = join_timeout.evaluate(SPEC, status, True, NOW)
    assert (verdict.republish, verdict.recheck_in) == (republish, recheck)


def test_a_suspended_generation_never_times_out() -> None:
    status = job_status(membership=membership(6, state="suspended"), stall_generation=6, generation_time=ago(10**4))
    assert not join_timeout.evaluate(SPEC, status, True, NOW).republish


def test_a_generation_published_in_this_pass_starts_its_clock_next_pass() -> None:
    status = job_status(membership=membership(7, "w0"), stall_generation=6, generation_time=ago(10**4))
    assert not join_timeout.evaluate(SPEC, status, True, NOW).republish
