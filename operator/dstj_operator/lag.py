"""How long a job's events wait in the operator: until a thread takes them up, until a pass reads them, until the
status that answers them is written.

The operator's own share of "a pod changed -> the job's status says so" (the rest is the API server's watch
delivery): the queue of passes and its threads (received -> handler, `dispatch`), a pass of the same job already
running (handler -> pass), and the pass with its writes (pass -> status written). Marks are per job: the first
event no thread has taken up yet, and the first no pass has read yet; the events after it, until then,
are served by the same call and the same pass, so they add nothing.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from dstj_api.contract import JOB_LABEL, PLURAL
from dstj_operator import metrics

Key = tuple[str, str]


def job_of(plural: str, obj: Mapping[str, Any]) -> Key | None:
    """The job an object of a watch stream belongs to: the job itself, or the job its label names (None: no job)."""
    meta = obj.get("metadata") or {}
    ns = meta.get("namespace")
    name = meta.get("name") if plural == PLURAL else (meta.get("labels") or {}).get(JOB_LABEL)
    return (ns, name) if ns and name else None


class EventLag:
    """Per-job marks of the oldest event not yet handled and not yet read; thread-safe (fed on kopf's event loop,
    taken in executor threads)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._unhandled: dict[Key, float] = {}
        self._unread: dict[Key, float] = {}

    def received(self, key: Key) -> None:
        """An event of job `key` reached the operator."""
        now = self._clock()
        with self._lock:
            self._unhandled.setdefault(key, now)
            self._unread.setdefault(key, now)

    def handled(self, key: Key) -> float | None:
        """A thread took up the events of job `key`: the seconds its oldest unhandled event waited (None: none)."""
        with self._lock:
            since = self._unhandled.pop(key, None)
        if since is None:
            return None
        waited = self._clock() - since
        metrics.EVENT_WAIT.labels(until="handler").observe(waited)
        return waited

    def reading(self, key: Key) -> float | None:
        """A pass of job `key` starts reading: the time its oldest unread event arrived (None: a pass no event
        asked for, a requeue)."""
        with self._lock:
            since = self._unread.pop(key, None)
        if since is not None:
            metrics.EVENT_WAIT.labels(until="pass").observe(self._clock() - since)
        return since

    def written(self, since: float | None) -> None:
        """The pass that read an event arrived at `since` wrote the job's status."""
        if since is not None:
            metrics.EVENT_WAIT.labels(until="status").observe(self._clock() - since)

    def forget(self, key: Key) -> None:
        """Job `key` is gone: drop its marks."""
        with self._lock:
            self._unhandled.pop(key, None)
            self._unread.pop(key, None)


LAG = EventLag()
"""The process's marks: fed by `watches`, taken by `handlers`."""
