"""How long a job's events wait in the operator: the marks `lag` keeps per job, on a clock the test moves."""

from __future__ import annotations

from prometheus_client import REGISTRY

from dstj_api.contract import JOB_LABEL, PLURAL
from dstj_operator.lag import EventLag, job_of


def observed(until: str) -> tuple[float, float]:
    """(count, sum) of the event-wait histogram's series `until`."""
    labels = {"until": until}
    return (REGISTRY.get_sample_value("dstj_operator_event_wait_seconds_count", labels) or 0.0,
            REGISTRY.get_sample_value("dstj_operator_event_wait_seconds_sum", labels) or 0.0)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_an_event_belongs_to_the_job_itself_or_to_the_job_its_label_names() -> None:
    assert job_of(PLURAL, {"metadata": {"namespace": "ns", "name": "moe"}}) == ("ns", "moe")
    assert job_of("pods", {"metadata": {"namespace": "ns", "name": "moe-w-0", "labels": {JOB_LABEL: "moe"}}}) \
        == ("ns", "moe")
    assert job_of("pods", {"metadata": {"namespace": "ns", "name": "unrelated"}}) is None
    assert job_of("nodes", {"metadata": {"name": "node-1"}}) is None


def test_a_burst_of_events_waits_from_its_first_event_and_the_next_burst_from_its_own() -> None:
    clock = Clock()
    lag = EventLag(clock)
    handler0, pass0, status0 = observed("handler"), observed("pass"), observed("status")
    lag.received(("ns", "moe"))
    clock.now += 2.0
    lag.received(("ns", "moe"))  # served by the same handler call and pass: adds nothing
    clock.now += 1.0
    assert lag.handled(("ns", "moe")) == 3.0
    clock.now += 0.5
    since = lag.reading(("ns", "moe"))
    clock.now += 0.25
    lag.written(since)
    assert observed("handler") == (handler0[0] + 1, handler0[1] + 3.0)
    assert observed("pass") == (pass0[0] + 1, pass0[1] + 3.5)
    assert observed("status") == (status0[0] + 1, status0[1] + 3.75)
    assert lag.handled(("ns", "moe")) is None and lag.reading(("ns", "moe")) is None  # a requeue: nothing waited
    lag.received(("ns", "moe"))
    clock.now += 0.5
    assert lag.handled(("ns", "moe")) == 0.5


def test_a_deleted_jobs_marks_are_dropped() -> None:
    lag = EventLag(Clock())
    lag.received(("ns", "gone"))
    lag.forget(("ns", "gone"))
    assert lag.handled(("ns", "gone")) is None and lag.reading(("ns", "gone")) is None
