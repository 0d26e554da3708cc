"""What keeps the operator's cost per job low under load: coalesced events, remembered children.

The API server is the boundary here: `_sync_locked`, `create_if_absent` and `_apply` are replaced by
recorders, since what is tested is only how often they run (the passes themselves are tested
against the local cluster in tests/operator).
"""

from __future__ import annotations

import threading
from typing import Any

import pytest

from dstj_operator import cache, cluster, events, handlers, requeue
from dstj_operator.converge import Mode
from localcluster.waiting import wait_until


def _slow_passes(monkeypatch: pytest.MonkeyPatch) -> tuple[threading.Event, threading.Event, list[str]]:
    """Make every pass record its job, say it started, and hold until released: (release, started, passes)."""
    release, started, passes = threading.Event(), threading.Event(), []

    def slow_pass(namespace: str, name: str) -> None:
        passes.append(name)
        started.set()
        release.wait(5)

    monkeypatch.setattr(handlers, "_sync_locked", slow_pass)
    return release, started, passes


def test_events_arriving_while_a_pass_is_queued_do_not_queue_another(monkeypatch: pytest.MonkeyPatch) -> None:
    release, started, passes = _slow_passes(monkeypatch)
    running = threading.Thread(target=handlers.sync, args=("ns", "job"))
    running.start()
    assert started.wait(5)  # pass 1 holds the lock and has read the cluster
    queued = threading.Thread(target=handlers.sync, args=("ns", "job"))
    queued.start()  # pass 2 waits for the lock: it will see everything that happens from now on
    wait_until(lambda: ("ns", "job") in handlers._waiting, timeout=5, interval=0.01, what="pass 2 to queue")
    for _ in range(20):  # a burst of progress reports: each returns at once
        handlers.sync("ns", "job")
    release.set()
    running.join(5)
    queued.join(5)
    assert passes == ["job", "job"]
    handlers.sync("ns", "job")  # nothing queued any more: a new event gets its own pass
    assert passes == ["job", "job", "job"]


def test_an_event_of_a_busy_job_returns_at_once_and_its_pass_runs_right_after_the_running_one(
        monkeypatch: pytest.MonkeyPatch) -> None:
    release, started, passes = _slow_passes(monkeypatch)
    running = threading.Thread(target=handlers.sync, args=("ns", "busy"))
    running.start()
    assert started.wait(5)
    event = threading.Thread(target=handlers.sync, args=("ns", "busy"))
    event.start()
    event.join(5)
    assert not event.is_alive() and passes == ["busy"]  # no executor thread waits on the busy job
    release.set()
    running.join(5)
    assert passes == ["busy", "busy"] and ("ns", "busy") not in handlers._running


def test_an_event_during_a_failed_pass_still_gets_its_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    release, started, requeued = threading.Event(), threading.Event(), []

    def failing_pass(namespace: str, name: str) -> None:
        started.set()
        release.wait(5)
        raise RuntimeError("the API server went away")

    class Later:
        def after(self, key: tuple[str, str], seconds: float) -> None:
            requeued.append(key)

    monkeypatch.setattr(handlers, "_sync_locked", failing_pass)
    monkeypatch.setattr(handlers, "_requeue", Later)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            handlers.sync("ns", "flaky")
        except RuntimeError as e:
            errors.append(e)

    running = threading.Thread(target=run)
    running.start()
    assert started.wait(5)
    handlers.sync("ns", "flaky")
    release.set()
    running.join(5)
    assert errors and requeued == [("ns", "flaky")] and ("ns", "flaky") not in handlers._running


class CountingCluster(cluster.Cluster):
    """Counts the API calls `converge` would make (the API server is the boundary)."""

    def __init__(self) -> None:
        super().__init__(core=None, apis=None)
        self.calls = 0

    def create_if_absent(self, obj: dict[str, Any]) -> bool:
        self.calls += 1
        return False

    def _apply(self, obj: dict[str, Any]) -> str:
        self.calls += 1
        return f"rv-{self.calls}"


SERVICE = {"kind": "Service", "metadata": {"name": "job-rdzv", "namespace": "ns", "ownerReferences": [{"uid": "u-1"}]},
           "spec": {"ports": [{"port": 29400}]}}


def _applied_version(obj: dict[str, Any]) -> dict[str, Any]:
    hint = cache.STORE._hints[cache.hint_key(obj)]
    return {**obj, "metadata": {**obj["metadata"], "resourceVersion": hint.resource_version}}


@pytest.fixture
def now(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """A fresh store on a clock the test moves."""
    clock = [1000.0]
    monkeypatch.setattr(cache, "STORE", cache.Store(clock=lambda: clock[0]))
    monkeypatch.setattr(cluster.time, "monotonic", lambda: clock[0])
    return clock


def test_a_child_applied_with_the_same_hash_is_not_applied_again_until_the_recheck(now: list[float]) -> None:
    c = CountingCluster()
    assert c.converge(SERVICE) and not c.converge(SERVICE)
    assert c.calls == 1
    now[0] += cluster.RECHECK_SECONDS  # a kind the operator cannot watch still heals by now
    c.converge(SERVICE)
    assert c.calls == 2
    other_owner = {**SERVICE, "metadata": {**SERVICE["metadata"], "ownerReferences": [{"uid": "u-2"}]}}
    c.converge(other_owner)  # a re-created job of the same name is a different owner
    assert c.calls == 3


def test_a_watched_child_applied_with_the_same_hash_is_not_applied_again_however_long_ago(now: list[float]) -> None:
    c = CountingCluster()
    cache.STORE.opening("services", None)
    cache.STORE.listed("services", None, None)
    c.converge(SERVICE)
    now[0] += 10 * cluster.RECHECK_SECONDS  # its stream would have said if it changed
    assert not c.converge(SERVICE) and c.calls == 1


def test_a_spec_edit_applies_the_child_again_at_once(now: list[float]) -> None:
    c = CountingCluster()
    c.converge(SERVICE)
    c.converge({**SERVICE, "spec": {"ports": [{"port": 29500}]}})
    assert c.calls == 2


def test_a_child_edited_or_deleted_by_hand_is_applied_again_after_its_watch_event(now: list[float]) -> None:
    c = CountingCluster()
    c.converge(SERVICE)
    cache.STORE.event("services", None, {"type": "MODIFIED", "object": _applied_version(SERVICE)})  # its own apply
    assert not c.converge(SERVICE)
    edited = {**SERVICE, "metadata": {**SERVICE["metadata"], "resourceVersion": "someone-else"}}
    cache.STORE.event("services", None, {"type": "MODIFIED", "object": edited})
    assert c.converge(SERVICE) and c.calls == 2
    cache.STORE.event("services", None, {"type": "DELETED", "object": _applied_version(SERVICE)})
    assert c.converge(SERVICE) and c.calls == 3


def test_a_child_deleted_while_its_stream_was_down_is_applied_again_after_the_relisting(now: list[float]) -> None:
    c = CountingCluster()
    cache.STORE.opening("services", None)
    cache.STORE.listed("services", None, None)
    c.converge(SERVICE)
    cache.STORE.ended("services", None)
    now[0] += 1
    cache.STORE.opening("services", None)  # the relisting does not hold it: deleted meanwhile
    cache.STORE.listed("services", None, None)
    assert c.converge(SERVICE) and c.calls == 2


def test_the_progress_configmap_is_created_once_and_its_reports_do_not_reapply_it(now: list[float]) -> None:
    c = CountingCluster()
    progress = {"kind": "ConfigMap", "metadata": {"name": "job-progress", "namespace": "ns",
                                                  "ownerReferences": [{"uid": "u-1"}]}, "data": {"report": "null"}}
    c.converge(progress, Mode.CREATE_ONLY)
    report = {**progress, "metadata": {**progress["metadata"], "resourceVersion": "41"}}
    cache.STORE.event("configmaps", None, {"type": "MODIFIED", "object": report})
    assert not c.converge(progress, Mode.CREATE_ONLY) and c.calls == 1


def test_expired_hints_are_dropped_once_there_are_many(now: list[float]) -> None:
    stale = cache.Hint("h", "1", Mode.APPLY, 0.0)
    cache.STORE._hints.update({("gone", "Service", "ns", f"s{i}"): stale for i in range(cache.HINTS_PRUNED_AT)})
    CountingCluster().converge({"kind": "Service", "metadata": {"name": "new", "namespace": "ns"}})
    assert list(cache.STORE._hints) == [("", "Service", "ns", "new")]


def test_children_are_filtered_by_the_job_label_on_the_api_server_and_the_job_itself_is_not() -> None:
    import kopf
    from kopf._cogs.structs.references import Resource

    settings = kopf.OperatorSettings()
    handlers.configure(settings=settings)

    selectors = settings.watching.label_selectors
    for group, version, plural in handlers.CHILD_KINDS:
        assert selectors.collect(Resource(group, version, plural)) == [handlers.JOB_LABEL], plural
    assert selectors.collect(Resource(handlers.GROUP, handlers.VERSION, handlers.PLURAL)) == []



def test_kopf_builds_no_diff_essence_of_an_event_and_passes_run_in_enough_threads() -> None:
    import kopf

    settings = kopf.OperatorSettings()
    handlers.configure(settings=settings)

    pod = kopf.Body({"metadata": {"name": "w", "labels": {handlers.JOB_LABEL: "j"}, "managedFields": [{}] * 50},
                     "spec": {"containers": [{"name": "trainer"}]}})
    assert settings.persistence.diffbase_storage.build(body=pod) == {}  # no deep copy of every body
    assert settings.persistence.diffbase_storage.fetch(body=pod) is None
    assert handlers.DISPATCH._threads == handlers.HANDLER_THREADS
    assert cluster.POOL_CONNECTIONS >= handlers.HANDLER_THREADS + requeue.WORKERS + events.THREADS  # one per caller


class VersionedCluster(CountingCluster):
    """Its applies answer numbered resourceVersions, as the API server's do: 101, 102..."""

    def _apply(self, obj: dict[str, Any]) -> str:
        self.calls += 1
        return str(100 + self.calls)


def test_a_child_applied_while_its_stream_relisted_is_applied_again_only_if_it_went_before_the_listing(
        now: list[float]) -> None:
    c = VersionedCluster()
    other = {**SERVICE, "metadata": {**SERVICE["metadata"], "name": "job-workers"}}
    cache.STORE.opening("services", None)
    c.converge(SERVICE)  # answered 101 while the stream lists
    c.converge(other)  # answered 102
    cache.STORE.listed("services", None, "101")  # neither in it: the first was deleted, the second came after
    assert c.converge(SERVICE) and not c.converge(other) and c.calls == 3
