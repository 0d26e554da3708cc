"""activeDeadlineSeconds counts running time only: a suspended or waiting job stops the clock."""

from __future__ import annotations

import pytest

from dstj_operator.policies import deadline
from dstj_operator.status import Bookkeeping
from tests.unit.policies.builders import NOW, ago, job_spec


@pytest.mark.parametrize(("book", "limit", "exceeded", "recheck"), [
    pytest.param(Bookkeeping(), None, False, None, id="no-deadline"),
    pytest.param(Bookkeeping(running_since=ago(30)), 60, False, 30.0, id="running-half-way"),
    pytest.param(Bookkeeping(running_since=ago(60)), 60, True, None, id="running-past-the-deadline"),
    pytest.param(Bookkeeping(running_seconds=50, running_since=ago(5)), 60, False, 5.0,
                 id="earlier-stretches-count"),
    pytest.param(Bookkeeping(running_seconds=50), 60, False, None, id="clock-stopped-while-not-running"),
    pytest.param(Bookkeeping(running_seconds=61), 60, True, None, id="stopped-clock-past-the-deadline"),
])
def test_the_deadline_counts_running_time_only(book: Bookkeeping, limit: int | None, exceeded: bool,
                                               recheck: float | None) -> None:
    verdict = deadline.evaluate(job_spec(activeDeadlineSeconds=limit), book, NOW)
    assert (verdict.exceeded, verdict.recheck_in) == (exceeded, recheck)


def test_a_suspended_job_stops_the_clock_and_a_resumed_one_starts_it_again() -> None:
    running = Bookkeeping(running_seconds=10, running_since=ago(20))
    seconds, since = deadline.tick(running, False, NOW)  # suspended now: the stretch is banked
    assert (seconds, since) == (30.0, None)
    stopped = Bookkeeping(running_seconds=seconds, running_since=since)
    assert deadline.tick(stopped, False, NOW) == (30.0, None)  # stays stopped: no status change
    assert deadline.tick(stopped, True, NOW) == (30.0, ago(0))  # resumed: a new stretch


def test_a_running_clock_changes_nothing_between_passes() -> None:
    book = Bookkeeping(running_seconds=10, running_since=ago(20))
    assert deadline.tick(book, True, NOW) == (10, ago(20))
