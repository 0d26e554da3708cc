"""What keeps the operator's cost per job low under load: coalesced events, remembered children.

The API server is the boundary here: `_sync_locked` and `create_if_absent` are replaced by
recorders, since what is tested is only how often they run (the passes themselves are tested
against the local cluster in tests/operator).
"""

from __future__ import annotations

import threading
from typing import Any

import pytest

from dstj_operator import cluster, handlers
from localcluster.waiting import wait_until


def test_events_arriving_while_a_pass_is_queued_do_not_queue_another(monkeypatch: pytest.MonkeyPatch) -> None:
    release, started, passes = threading.Event(), threading.Event(), []

    def slow_pass(namespace: str, name: str) -> None:
        passes.append(name)
        started.set()
        release.wait(5)

    monkeypatch.setattr(handlers, "_sync_locked", slow_pass)
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


class CountingCluster(cluster.Cluster):
    def __init__(self) -> None:
        super().__init__(core=None, apis=None)
        self.calls = 0

    def create_if_absent(self, obj: dict[str, Any]) -> bool:
        self.calls += 1
        return False


def test_a_child_seen_recently_is_not_posted_again_until_the_recheck(monkeypatch: pytest.MonkeyPatch) -> None:
    obj = {"kind": "Service", "metadata": {"name": "job-rdzv", "namespace": "ns",
                                           "ownerReferences": [{"uid": "u-1"}]}}
    c, now = CountingCluster(), [1000.0]
    monkeypatch.setattr(cluster.time, "monotonic", lambda: now[0])
    c.ensure(obj)
    c.ensure(obj)
    assert c.calls == 1
    now[0] += cluster.RECHECK_SECONDS  # a child deleted behind the operator's back comes back by now
    c.ensure(obj)
    assert c.calls == 2
    other_owner = {**obj, "metadata": {**obj["metadata"], "ownerReferences": [{"uid": "u-2"}]}}
    c.ensure(other_owner)  # a re-created job of the same name is a different owner
    assert c.calls == 3


def test_expired_hints_are_dropped_once_there_are_many(monkeypatch: pytest.MonkeyPatch) -> None:
    old = {("gone", "Service", "ns", f"s{i}"): 0.0 for i in range(10_001)}
    monkeypatch.setattr(cluster, "_seen", old)
    monkeypatch.setattr(cluster.time, "monotonic", lambda: 1000.0)
    CountingCluster().ensure({"kind": "Service", "metadata": {"name": "new", "namespace": "ns"}})
    assert list(cluster._seen) == [("", "Service", "ns", "new")]
