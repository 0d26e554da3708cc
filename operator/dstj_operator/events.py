"""Kubernetes Events on jobs, posted by threads of their own: a pass hands its Events over and ends.

An Event is a record for people (`kubectl describe`, `kubectl get events`) that the operator never reads, and
each is an API write: on a loaded API server a write takes up to a second, and a pass that posted its two or
three Events itself held its job, and a handler thread, that much longer, while the next event of that job (a
pod deleted) waited. A pass hands them over only after the status they describe is written, and each carries
the time it was handed over, so `kubectl` shows them in the pass's order whichever thread posts first. At most
`QUEUED` wait: beyond that new ones are dropped and counted (`dstj_operator_events_dropped_total`), so a
backlog of Events on a throttled API server never grows the operator's memory.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable

from dstj_operator import metrics

log = logging.getLogger(__name__)

QUEUED = 5000
"""Events waiting to be posted, at most (about 1 KiB each)."""
THREADS = 4
"""Threads that post: a fleet's passes hand over tens of Events a second, each a write of up to a second."""


class EventPoster:
    """Runs the posts it is handed in its own threads (started on the first), in order per thread."""

    def __init__(self, queued: int = QUEUED, threads: int = THREADS) -> None:
        self._queue: queue.Queue[Callable[[], None]] = queue.Queue(queued)
        self._threads = threads
        self._started = False
        self._lock = threading.Lock()

    def submit(self, post: Callable[[], None]) -> bool:
        """Post later, in a poster thread; False when too many wait and this one was dropped."""
        with self._lock:
            if not self._started:
                for i in range(self._threads):
                    threading.Thread(target=self._run, name=f"events-{i}", daemon=True).start()
                self._started = True
        try:
            self._queue.put_nowait(post)
        except queue.Full:
            metrics.EVENTS_DROPPED.inc()
            return False
        return True

    def drain(self, timeout: float) -> bool:
        """Wait until every Event handed over has been posted (or has failed); False on timeout. For tests."""
        done = threading.Event()

        def join() -> None:
            self._queue.join()
            done.set()

        threading.Thread(target=join, daemon=True).start()
        return done.wait(timeout)

    def _run(self) -> None:
        while True:
            post = self._queue.get()
            try:
                post()
            except Exception as e:  # an Event is a record: a failed one is logged, never retried
                log.warning("could not post an event: %s", str(e).splitlines()[0][:300] if str(e) else repr(e))
            finally:
                self._queue.task_done()


POSTER = EventPoster()
"""The process's poster (`Cluster.event` hands it every Event)."""
