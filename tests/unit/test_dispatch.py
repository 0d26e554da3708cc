"""The queue of passes (`dispatch`): at most one queued per job, and an event after a pass started gets another."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from dstj_operator import handlers
from dstj_operator.dispatch import Dispatcher


def _until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 5
    while not condition():
        assert time.monotonic() < deadline, "not within 5 s"
        time.sleep(0.01)


def test_events_of_a_job_whose_pass_is_queued_add_nothing_and_one_after_it_started_gets_another() -> None:
    started, release, calls = threading.Event(), threading.Event(), []

    def run(key: tuple[str, str]) -> None:
        calls.append(key)
        started.set()
        release.wait(5)

    d = Dispatcher(run, threads=1)
    d.submit(("ns", "a"))
    assert started.wait(5)  # a's first call runs and holds the only thread
    for _ in range(3):
        d.submit(("ns", "a"))  # one queued call: it has not read the store yet and will see all three
        d.submit(("ns", "b"))
    assert d.queued() == 2
    release.set()
    _until(lambda: len(calls) == 3 and not d.queued())
    assert sorted(calls) == [("ns", "a"), ("ns", "a"), ("ns", "b")]


def test_a_failing_call_is_logged_and_the_job_is_dispatched_again(caplog: Any) -> None:
    done = threading.Event()
    calls: list[int] = []

    def run(key: tuple[str, str]) -> None:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("a bug")
        done.set()

    d = Dispatcher(run, threads=1)
    d.submit(("ns", "a"))
    _until(lambda: not d.queued() and len(calls) == 1)
    d.submit(("ns", "a"))
    assert done.wait(5)
    assert "pass of ns/a failed" in caplog.text


def test_watch_events_of_jobs_and_children_are_dispatched_and_nodes_left_to_kopf(monkeypatch: Any) -> None:
    submitted: list[tuple[str, str]] = []
    monkeypatch.setattr(handlers.DISPATCH, "submit", submitted.append)
    pod = {"metadata": {"name": "j-w-0", "namespace": "ns", "labels": {handlers.JOB_LABEL: "j"}}}
    job = {"metadata": {"name": "j", "namespace": "ns"}}
    assert handlers.watch_event("pods", {"type": "MODIFIED", "object": pod})
    assert handlers.watch_event(handlers.PLURAL, {"type": None, "object": job})  # from a listing: a takeover's pass
    assert handlers.watch_event("configmaps", {"type": "ADDED", "object": {"metadata": {"name": "x"}}})  # no job
    assert not handlers.watch_event("nodes", {"type": "ADDED", "object": {"metadata": {"name": "n"}}})
    assert submitted == [("ns", "j"), ("ns", "j")]


def test_a_bound_pod_deleted_sends_the_jobs_waiting_to_grow_in_its_namespace_to_look_again(monkeypatch: Any) -> None:
    requeued: list[tuple[tuple[str, str], float]] = []
    monkeypatch.setattr(handlers.DISPATCH, "submit", lambda key: None)
    monkeypatch.setattr(handlers.capacity, "signal", lambda ns, now: [("ns", "j"), ("ns", "waiting")])

    class Requeue:
        def after(self, key: tuple[str, str], seconds: float) -> None:
            requeued.append((key, seconds))

    monkeypatch.setattr(handlers, "_requeue", Requeue)
    pod = {"metadata": {"name": "j-w-0", "namespace": "ns", "labels": {handlers.JOB_LABEL: "j"}},
           "spec": {"nodeName": "n"}}
    handlers.watch_event("pods", {"type": "DELETED", "object": pod})
    assert requeued == [(("ns", "waiting"), 0)]  # not the job whose pod it was
    requeued.clear()
    handlers.watch_event("pods", {"type": "DELETED", "object": {**pod, "spec": {}}})  # never bound: frees nothing
    assert requeued == []


def test_a_pool_shut_down_with_the_interpreter_drops_the_call_and_raises_nothing() -> None:
    d = Dispatcher(lambda key: None, threads=1)
    d.submit(("ns", "a"))
    _until(lambda: not d.queued())
    d._pool.shutdown()  # submit now raises RuntimeError, as every executor's does once the interpreter shuts down
    d.submit(("ns", "a"))  # on kopf's event loop: an exception here would end the watch stream
    assert d.queued() == 0
