"""Values computed once per version of a job's spec, not once per pass.

A pass runs on every event of its job (a progress report every 10 s, each change of each pod), while the
spec changes only with `metadata.generation` (the API server bumps it on every spec edit): parsing the
spec and building the trainer config from it were most of a pass's CPU, and are the same every time.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class PerGeneration(Generic[T]):
    """The last value computed for each job (by uid) from its spec at its generation (the spec is compared too,
    which costs little beside what it saves: the value never outlives the spec it came from); least recently
    used dropped beyond `capacity` jobs. Callers must not mutate what it returns."""

    def __init__(self, capacity: int = 5000) -> None:
        self.capacity = capacity
        self._held: OrderedDict[str, tuple[Any, Any, T]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, job: dict[str, Any], compute: Callable[[], T]) -> T:
        """The value for `job` now: held when its generation has not moved, else `compute()` (an exception
        is raised and nothing held)."""
        meta, spec = job.get("metadata") or {}, job.get("spec")
        uid, generation = meta.get("uid"), meta.get("generation")
        if not uid or generation is None:
            return compute()
        with self._lock:
            held = self._held.get(uid)
            if held is not None and held[0] == generation and held[1] == spec:
                self._held.move_to_end(uid)
                return held[2]
        value = compute()
        with self._lock:
            self._held[uid] = (generation, spec, value)
            self._held.move_to_end(uid)
            while len(self._held) > self.capacity:
                self._held.popitem(last=False)
        return value
