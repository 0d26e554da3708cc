"""Events are posted by threads of their own: a pass hands them over and goes on; a backlog is bounded."""

from __future__ import annotations

import threading

from prometheus_client import REGISTRY

from dstj_operator.events import EventPoster


def dropped() -> float:
    return REGISTRY.get_sample_value("dstj_operator_events_dropped_total") or 0.0


def test_a_handed_over_event_is_posted_by_a_poster_thread_while_the_pass_goes_on() -> None:
    poster, release, posted = EventPoster(threads=1), threading.Event(), []

    def slow_post() -> None:
        release.wait(5)  # the API server takes its time
        posted.append(threading.current_thread().name)

    assert poster.submit(slow_post)  # returns at once
    assert posted == []
    release.set()
    assert poster.drain(5)
    assert posted == ["events-0"]


def test_beyond_the_bound_new_events_are_dropped_and_counted_and_a_failed_post_stops_nothing() -> None:
    poster, release, posted = EventPoster(queued=2, threads=1), threading.Event(), []
    taken = threading.Event()
    before = dropped()

    def failing() -> None:
        taken.set()
        release.wait(5)
        raise RuntimeError("429 Too Many Requests")

    assert poster.submit(failing)
    assert taken.wait(5)  # the thread holds the failing post; the queue is empty
    assert poster.submit(lambda: posted.append("a")) and poster.submit(lambda: posted.append("b"))
    assert not poster.submit(lambda: posted.append("c"))  # two wait already
    assert dropped() == before + 1
    release.set()
    assert poster.drain(5)
    assert posted == ["a", "b"]
