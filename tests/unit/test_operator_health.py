"""The operator's /healthz and /readyz: the decisions as pure functions of a snapshot and the time, the
kopf hook they read the watch streams through, and the real HTTP server failing while a pass is stuck."""

from __future__ import annotations

import asyncio
import inspect
import threading
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from kopf._cogs.clients import fetching, watching

from dstj_api.contract import GROUP, PLURAL
from dstj_operator import cache, handlers, watches
from dstj_operator.health import Probes, not_ready, serve_health
from dstj_operator.passes import PASSES, PassState, PassTracker, stuck
from dstj_operator.watches import WatchState, WatchTracker
from localcluster.waiting import wait_until

ALL_UP = WatchState(3, frozenset({"a", "b", "c"}), frozenset({"a", "b", "c"}))


@pytest.mark.parametrize(("state", "now", "live"), [
    pytest.param(PassState(0, 0.0), 10_000.0, True, id="idle-for-hours-is-live"),
    pytest.param(PassState(2, 100.0), 399.0, True, id="pending-within-the-limit-is-live"),
    pytest.param(PassState(2, 100.0), 401.0, False, id="pending-past-the-limit-is-stuck"),
])
def test_liveness_fails_only_when_pending_passes_stop_finishing(state: PassState, now: float, live: bool) -> None:
    reason = stuck(state, now, limit=300)
    assert (reason is None) == live
    if not live:
        assert reason is not None and "2 reconcile pass(es) pending" in reason and "DSTJ_STUCK_SECONDS=300" in reason


def test_a_pass_queued_after_an_idle_spell_starts_the_wait_afresh() -> None:
    now = [0.0]
    tracker = PassTracker(clock=lambda: now[0])
    now[0] = 1000.0  # idle since 0: not stuck, and the next pass gets its own full limit
    tracker.queued()
    assert stuck(tracker.state(), 1200.0, limit=300) is None
    assert stuck(tracker.state(), 1301.0, limit=300) is not None


def test_any_finished_pass_resets_the_wait_while_others_stay_pending() -> None:
    now = [0.0]
    tracker = PassTracker(clock=lambda: now[0])
    tracker.queued()
    tracker.queued()
    now[0] = 250.0
    tracker.finished()
    assert tracker.state() == PassState(1, 250.0)
    assert stuck(tracker.state(), 500.0, limit=300) is None


def test_a_pass_that_raises_still_counts_as_finished() -> None:
    tracker = PassTracker()
    with pytest.raises(RuntimeError), tracker.pending():
        raise RuntimeError("API error")
    assert tracker.state().pending == 0


@pytest.mark.parametrize(("kwargs", "expect"), [
    pytest.param({"leading": True, "watches": ALL_UP}, None, id="leader-with-every-stream-listed"),
    pytest.param({"leading": True, "watches": WatchState(3, frozenset({"a"}), frozenset({"a", "b"}))},
                 "leader: 1 of 3 watch streams connected; not yet: b", id="leader-with-a-stream-listing"),
    pytest.param({"leading": True, "watches": WatchState(3, frozenset(), frozenset())},
                 "kopf has not opened them yet", id="leader-before-kopf-starts"),
    pytest.param({"leading": False, "watches": WatchState(3, frozenset(), frozenset()), "lease_read_at": 95.0},
                 None, id="standby-renewing-its-view-of-the-lease"),
    pytest.param({"leading": False, "watches": ALL_UP, "lease_read_at": 80.0},
                 "standby: the leader Lease was last read 20 s ago (lease duration 15 s)", id="standby-lost-the-lease"),
    pytest.param({"leading": False, "watches": ALL_UP, "lease_read_at": None},
                 "standby: the leader Lease has not been read yet", id="standby-before-its-first-read"),
])
def test_readiness_is_connected_watches_for_a_leader_and_a_fresh_lease_view_for_a_standby(
        kwargs: dict[str, Any], expect: str | None) -> None:
    reason = not_ready(**({"lease_read_at": None} | kwargs), lease_seconds=15, now=100.0)
    if expect is None:
        assert reason is None
    else:
        assert reason is not None and expect in reason


def test_kopf_still_has_the_watch_function_the_tracker_wraps() -> None:
    # watches.py relies on these kopf internals; a kopf upgrade that moves them must fail here.
    assert watching.Bookmark.LISTED
    assert "continuous_watch(" in inspect.getsource(watching.infinite_watch)
    assert set(inspect.signature(watching.continuous_watch).parameters) >= {"resource", "namespace"}
    # The listing's resourceVersion comes from the chunks of fetch_objs, which continuous_watch calls by module.
    assert "fetching.fetch_objs(" in inspect.getsource(watching.continuous_watch)
    assert set(inspect.signature(fetching.fetch_objs).parameters) >= {"resource", "namespace"}


class _Resource:
    plural, group = PLURAL, GROUP


def test_a_stream_counts_as_connected_from_its_listing_until_it_ends(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[WatchState] = []
    tracker = WatchTracker(expected=1)

    async def kopf_stream(**_: Any) -> AsyncIterator[Any]:  # stands in for kopf's continuous_watch
        yield {"type": None, "object": {}}
        seen.append(tracker.state())
        yield watching.Bookmark.LISTED
        seen.append(tracker.state())

    monkeypatch.setattr(watches, "_KOPF_CONTINUOUS_WATCH", kopf_stream)
    monkeypatch.setattr(watching, "continuous_watch", watching.continuous_watch)  # restored after the test
    tracker.install()

    _drain_stream()
    key = f"{PLURAL}.{GROUP} in team-a"
    assert [s.connected for s in seen] == [frozenset(), frozenset({key})]
    assert tracker.state() == WatchState(1, frozenset(), frozenset({key}))  # ended: no longer connected


def test_the_store_learns_the_resource_version_of_each_listing(monkeypatch: pytest.MonkeyPatch) -> None:
    # What tells a pod deleted before the listing (dropped) from one created after it (kept): see test_cache.
    store = cache.Store()
    tracker = WatchTracker(expected=1, store=store)

    async def kopf_fetch(**_: Any) -> AsyncIterator[Any]:  # stands in for kopf's fetch_objs: chunks and the version
        yield [], "41"
        yield [], "41"

    async def kopf_stream(**kwargs: Any) -> AsyncIterator[Any]:  # kopf's continuous_watch lists through fetch_objs
        async for _ in fetching.fetch_objs(**kwargs):
            pass
        yield watching.Bookmark.LISTED

    listed: list[tuple[str, str | None, str | None]] = []
    monkeypatch.setattr(store, "listed", lambda plural, namespace, version: listed.append((plural, namespace, version)))
    monkeypatch.setattr(watches, "_KOPF_CONTINUOUS_WATCH", kopf_stream)
    monkeypatch.setattr(watches, "_KOPF_FETCH_OBJS", kopf_fetch)
    monkeypatch.setattr(watching, "continuous_watch", watching.continuous_watch)  # both restored after the test
    monkeypatch.setattr(fetching, "fetch_objs", fetching.fetch_objs)
    tracker.install()

    _drain_stream()
    assert listed == [(PLURAL, "team-a", "41")]


def test_events_the_dispatcher_takes_never_reach_kopf(monkeypatch: pytest.MonkeyPatch) -> None:
    # kopf's per-object workers, queues and records were most of the operator's memory per job (`dispatch`).
    store, dispatched = cache.Store(), []
    tracker = WatchTracker(expected=1, store=store,
                           dispatch=lambda plural, raw: dispatched.append(raw["type"]) or raw["type"] != "MODIFIED")
    job = {"metadata": {"name": "j", "namespace": "team-a", "resourceVersion": "5"}}

    async def kopf_stream(**_: Any) -> AsyncIterator[Any]:
        yield {"type": None, "object": job}
        yield watching.Bookmark.LISTED
        yield {"type": "ADDED", "object": job}
        yield {"type": "MODIFIED", "object": job}  # one the dispatcher leaves to kopf

    monkeypatch.setattr(watches, "_KOPF_CONTINUOUS_WATCH", kopf_stream)
    monkeypatch.setattr(watching, "continuous_watch", watching.continuous_watch)  # restored after the test
    tracker.install()

    assert _drain_stream() == [watching.Bookmark.LISTED, "MODIFIED"]
    assert dispatched == [None, "ADDED", "MODIFIED"]
    assert store.job("team-a", "j") is not None  # the store had each event before the dispatcher


def _drain_stream() -> list[Any]:
    """Run kopf's (now wrapped) `continuous_watch` over the stand-in stream to its end: what kopf got (an event as its
    type)."""
    got: list[Any] = []

    async def consume() -> None:
        async for item in watching.continuous_watch(resource=_Resource(), namespace="team-a", settings=None,
                                                    operator_pause_waiter=None):
            got.append(item if isinstance(item, watching.Bookmark) else item["type"])

    asyncio.run(consume())
    return got


def _get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


@pytest.fixture
def standby_lease_read_at() -> list[float | None]:
    return [None]


@pytest.fixture
def server(standby_lease_read_at: list[float | None]) -> Iterator[int]:
    """The real health server over the process's PASSES, as a standby (stuck after 0.3 s, for the test)."""
    probes = Probes(passes=PASSES, stuck_seconds=0.3, watches=lambda: ALL_UP, leading=lambda: False,
                    lease_read_at=lambda: standby_lease_read_at[0], lease_seconds=15)
    httpd = serve_health(0, probes, host="127.0.0.1")
    yield httpd.server_address[1]
    httpd.shutdown()


def test_a_blocked_pass_fails_healthz_until_it_finishes(server: int, monkeypatch: pytest.MonkeyPatch) -> None:
    release = threading.Event()
    monkeypatch.setattr(handlers, "_sync_locked", lambda namespace, name: release.wait(30))  # the stuck pass
    assert _get(server, "/healthz") == (200, "ok\n")
    thread = threading.Thread(target=handlers.sync, args=("team-a", "blocked"), daemon=True)
    thread.start()
    _, body = wait_until(lambda: (r := _get(server, "/healthz"))[0] == 503 and r, timeout=10,
                         what="/healthz to fail while the pass blocks")
    assert "1 reconcile pass(es) pending and none finished" in body
    release.set()
    thread.join(10)
    wait_until(lambda: _get(server, "/healthz")[0] == 200, timeout=10, what="/healthz to recover")


def test_readyz_answers_503_with_the_reason_until_the_standby_reads_the_lease(
        server: int, standby_lease_read_at: list[float | None]) -> None:
    assert _get(server, "/readyz") == (503, "standby: the leader Lease has not been read yet\n")
    standby_lease_read_at[0] = time.monotonic()
    assert _get(server, "/readyz") == (200, "ok\n")
    assert _get(server, "/metrics")[0] == 404
