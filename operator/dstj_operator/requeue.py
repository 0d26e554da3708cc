"""Delayed re-syncs: a job asks to be looked at again later (crash backoff, deadline, TTL, stall).

Held in memory only: a restarted operator re-syncs every job when its watches start, and each
pass asks again for what it still needs. kopf timers would do this too, but they put a finalizer
on every job, and a job must stay deletable while the operator is down.
"""

from __future__ import annotations

import heapq
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

Key = tuple[str, str]
log = logging.getLogger(__name__)


WORKERS = 4
"""Passes the requeue runs at once: one that waits out a throttled API server's Retry-After must not hold up
every other job's retry (events run in kopf's own executor, beside these)."""


class Requeue:
    """Calls `sync(namespace, name)` once at the earliest time asked for each job."""

    def __init__(self, sync: Callable[[str, str], None], workers: int = WORKERS) -> None:
        self._sync = sync
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="requeue")
        self._heap: list[tuple[float, Key]] = []
        self._due: dict[Key, float] = {}
        self._cv = threading.Condition()
        threading.Thread(target=self._run, name="requeue", daemon=True).start()

    def after(self, key: Key, seconds: float) -> None:
        """Sync `key` in `seconds` (an earlier request for the same job wins)."""
        at = time.monotonic() + max(0.0, seconds)
        with self._cv:
            if key in self._due and self._due[key] <= at:
                return
            self._due[key] = at
            heapq.heappush(self._heap, (at, key))
            self._cv.notify()

    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._heap or self._heap[0][0] > time.monotonic():
                    self._cv.wait(None if not self._heap else self._heap[0][0] - time.monotonic())
                at, key = heapq.heappop(self._heap)
                if self._due.get(key) != at:
                    continue  # superseded by an earlier request
                del self._due[key]
            try:
                self._pool.submit(self._call, key)
            except RuntimeError:  # the interpreter is shutting down (SIGTERM): no pass is owed any more
                return

    def _call(self, key: Key) -> None:
        try:
            self._sync(*key)
        except Exception:  # a transient failure requeued itself (handlers.sync); this is a bug's trace
            log.exception("delayed sync of %s/%s failed", *key)
