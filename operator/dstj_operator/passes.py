"""Whether reconcile passes still finish: the operator's liveness.

`handlers.sync` wraps every pass in `PASSES.pending()`, from the moment it queues for its job's
lock to its end (raised or not). The operator is stuck when passes are pending and none has
finished for `DSTJ_STUCK_SECONDS`: a deadlock, an API call that never returns, a hung watch
thread pool. An idle operator (nothing pending) is never stuck, however long ago its last pass was.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class PassState:
    """Passes pending now, and since when the operator has been waiting on them."""

    pending: int
    """Passes queued for their job's lock or running."""
    waiting_since: float
    """Monotonic time of the last finished pass, or of the first pass queued after an idle spell."""


def stuck(state: PassState, now: float, limit: float) -> str | None:
    """Why the operator is not live (passes pending, none finished for `limit` seconds), or None."""
    waited = now - state.waiting_since
    if state.pending and waited > limit:
        return (f"{state.pending} reconcile pass(es) pending and none finished for {waited:.0f} s "
                f"(DSTJ_STUCK_SECONDS={limit:g})")
    return None


class PassTracker:
    """Counts pending passes; thread-safe (passes run in kopf's executor threads)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._pending = 0
        self._since = clock()

    def queued(self) -> None:
        """A pass was queued; from an idle operator, the wait starts now."""
        with self._lock:
            if self._pending == 0:
                self._since = self._clock()
            self._pending += 1

    def finished(self) -> None:
        """A pass ended (returned or raised): progress, so the wait starts again."""
        with self._lock:
            self._pending -= 1
            self._since = self._clock()

    @contextmanager
    def pending(self) -> Iterator[None]:
        """`queued` now, `finished` when the block ends however it ends."""
        self.queued()
        try:
            yield
        finally:
            self.finished()

    def state(self) -> PassState:
        """A snapshot for the health server's thread."""
        with self._lock:
            return PassState(self._pending, self._since)


PASSES = PassTracker()
"""The process's passes (handlers.sync reports here, the health server reads)."""
