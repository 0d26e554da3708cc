"""Watch events straight to passes: the events of a job and of its children become passes of that job, with at most
one queued per job, without kopf's per-object machinery.

kopf gives every object it dispatches a worker of its own: a task and a queue of the object's events, a record kept
until the object is deleted, a logger and a handler call in its executor per event. The operator watches about 19
objects a job (its pods, the progress report, the applied children), and that machinery, with its backlog during a
bring-up or a takeover, would be most of the operator's memory per job (benchmarks/README.md, "Where it stands":
733 against 179 KiB a job at 1,000 jobs). Nothing of it is needed: a handler reads nothing
of an event but the job it concerns (passes read the store, which has the event before it gets here), and passes of
one job never overlap (`handlers.sync`). So `watches` hands every event of the kinds the operator dispatches here
instead of to kopf, and kopf keeps what it is good at: opening, listing, resuming and backing off the watch streams
(its registrations say which streams), and the events of the kinds it still handles (Nodes).

A job with a pass queued and not started gets nothing more for an event: that pass has not read the store yet and
will see it. The queue is bounded by the number of jobs, whatever the rate of events.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from dstj_operator import metrics

Key = tuple[str, str]
log = logging.getLogger(__name__)


class Dispatcher:
    """Runs `run(key)` in a pool of `threads` for every `submit(key)`, at most one queued per key."""

    def __init__(self, run: Callable[[Key], None], threads: int) -> None:
        self._run = run
        self._threads = threads
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="pass")  # its threads start on first submit
        self._lock = threading.Lock()
        self._queued: set[Key] = set()

    def submit(self, key: Key) -> None:
        """Queue a call for `key` unless one is queued and has not started (called on kopf's event loop: never
        blocks)."""
        with self._lock:
            if key in self._queued:
                metrics.COALESCED_EVENTS.inc()
                return
            self._queued.add(key)
        try:
            self._pool.submit(self._call, key)
        except RuntimeError:  # the interpreter is shutting down (SIGTERM): no pass is owed any more
            with self._lock:
                self._queued.discard(key)

    def queued(self) -> int:
        """Calls queued and not started."""
        with self._lock:
            return len(self._queued)

    def _call(self, key: Key) -> None:
        with self._lock:
            self._queued.discard(key)  # an event from now on may come after this call's pass has read the store
        try:
            self._run(key)
        except Exception:  # a transient failure requeued itself (handlers.sync); this is a bug's trace
            log.exception("pass of %s/%s failed", *key)
