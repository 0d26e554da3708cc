"""Whether kopf's watch streams are up: the leader's half of readiness.

kopf says nothing public about its watches: its `ready_flag` is raised once the startup handlers
have run, before any watch connects, and its liveness endpoint only runs `@kopf.on.probe`
handlers. What kopf does internally (1.45, `kopf/_cogs/clients/watching.py`) is one
`continuous_watch` per resource and namespace: it lists the objects, yields the marker
`Bookmark.LISTED`, then watches from the list's resourceVersion, and it ends (to be started again by
`infinite_watch` after a back-off) when the stream breaks for good (410 Gone, a refused request,
a lost connection while listing). So a stream counts as connected from its `LISTED` marker until
its `continuous_watch` ends. `install` wraps that one function and nothing else (it also counts the
objects each stream delivers, `dstj_operator_watch_events_total`: what the API server sends, before kopf's
client-side handler filters, and hands each one to the read layer, `cache.STORE`, before kopf sees it:
the store knows a kind in a namespace from its stream's `LISTED` until the stream ends, and marks the job's
event as received for `lag`; then it hands the event to `dispatch` (`handlers.watch_event`: the job's and its
children's events become passes without kopf's per-object machinery), and kopf gets only the events of the kinds
it still handles, slimmed, `cache.handed_to_kopf`). It also wraps the
listing kopf's stream starts with (`fetching.fetch_objs`), for the one thing `LISTED` does not carry: the
listing's resourceVersion, which tells the store whether an object missing from it went before the listing
was taken or was written after. A unit test pins the names it relies on, so a kopf upgrade that moves them
fails the tests, not production.

What this does not see: a watch request that fails inside a running `continuous_watch` is retried
there without ending it, so a brief outage after the listing keeps the stream "connected".
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any

import kopf
from kopf._cogs.clients import fetching, watching

from dstj_operator import cache, lag, metrics

_KOPF_CONTINUOUS_WATCH = watching.continuous_watch
_KOPF_FETCH_OBJS = fetching.fetch_objs
"""kopf's own, kept so that installing a second tracker (tests) replaces the first instead of stacking."""

@dataclass(frozen=True, slots=True)
class WatchState:
    """A snapshot of kopf's watch streams as this process saw them."""

    expected: int
    """Streams kopf will open: watched resources x namespaces (one stream when cluster-wide)."""
    connected: frozenset[str]
    """Streams that finished their initial listing and have not ended since."""
    opened: frozenset[str]
    """Streams kopf has started, connected or not."""


def expected_streams(namespaces: Collection[str]) -> int:
    """How many watch streams kopf opens for the registered handlers in `namespaces` (empty: cluster-wide)."""
    selectors = kopf.get_default_registry()._watching.get_all_selectors()
    return len(selectors) * max(1, len(namespaces))


class WatchTracker:
    """Counts kopf's watch streams as they list, and as they end."""

    def __init__(self, expected: int, store: cache.Store | None = None,
                 dispatch: Callable[[str, Mapping[str, Any]], bool] | None = None) -> None:
        self.expected = expected
        self.store = store
        """Where every stream's objects go (None: nowhere; the operator passes `cache.STORE`)."""
        self.dispatch = dispatch
        """Takes a raw event (plural, event) once the store has it, True when kopf must not get it (None: kopf gets
        all; the operator passes `handlers.watch_event`)."""
        self._lock = threading.Lock()
        self._connected: set[str] = set()
        self._opened: set[str] = set()
        self._listing_versions: dict[tuple[str, Any], str] = {}
        """(plural, namespace) -> the resourceVersion of the listing its stream is taking now."""

    def state(self) -> WatchState:
        """The streams now (called from the health server's thread)."""
        with self._lock:
            return WatchState(self.expected, frozenset(self._connected), frozenset(self._opened))

    def _opening(self, key: str) -> None:
        with self._lock:
            self._opened.add(key)
            self._connected.discard(key)

    def _listed(self, key: str) -> None:
        with self._lock:
            self._connected.add(key)

    def _ended(self, key: str) -> None:
        with self._lock:
            self._connected.discard(key)

    def install(self) -> None:
        """Wrap kopf's `continuous_watch` (and its listing) so every stream reports here. Call once, before
        `kopf.run`."""
        original, fetch = _KOPF_CONTINUOUS_WATCH, _KOPF_FETCH_OBJS
        tracker = self

        async def listing(*, resource: Any, namespace: Any, **kwargs: Any) -> AsyncIterator[Any]:
            async for chunk, version in fetch(resource=resource, namespace=namespace, **kwargs):
                tracker._listing_versions[resource.plural, namespace] = version  # one for every chunk
                yield chunk, version

        async def tracked(*, resource: Any, namespace: Any, **kwargs: Any) -> AsyncIterator[Any]:
            key = f"{resource.plural}.{resource.group}" if resource.group else resource.plural
            received = metrics.WATCH_EVENTS.labels(resource=resource.plural)
            key += f" in {namespace}" if namespace else " (cluster-wide)"
            store = tracker.store
            tracker._opening(key)
            tracker._listing_versions.pop((resource.plural, namespace), None)
            if store is not None:
                store.opening(resource.plural, namespace)
            try:
                async for item in original(resource=resource, namespace=namespace, **kwargs):
                    if item is watching.Bookmark.LISTED:
                        tracker._listed(key)
                        version = tracker._listing_versions.pop((resource.plural, namespace), None)
                        if store is not None:
                            store.listed(resource.plural, namespace, version)
                    elif not isinstance(item, watching.Bookmark):
                        received.inc()
                        if store is not None:
                            store.event(resource.plural, namespace, item)
                            job = lag.job_of(resource.plural, item.get("object") or {})
                            if job is not None:
                                lag.LAG.received(job)
                        if tracker.dispatch is not None and tracker.dispatch(resource.plural, item):
                            continue
                        if store is not None:
                            handed: Any = cache.handed_to_kopf(resource.plural, item)  # kopf's RawEvent shape
                            yield handed
                            continue
                    yield item
            finally:
                tracker._ended(key)
                if store is not None:
                    store.ended(resource.plural, namespace)

        watching.continuous_watch = tracked
        fetching.fetch_objs = listing
