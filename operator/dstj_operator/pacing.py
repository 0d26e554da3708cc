"""How often a job's status mirrors the routine part of its trainer's progress report.

A status write is the API server's dearest request in a fleet: a custom resource's update is decoded,
schema-checked, CEL-validated and field-managed as JSON, about 20 ms of its CPU each on two cores, and in
the N = 100 profile (benchmarks/README.md) the jobs' status patches took 43% of the API server's CPU. Most
of them only moved a step counter, since every job reports every 10 s. So a status change that only
advances the routine numbers of the report (the step, the loss, the throughputs, when it was written) is
held back until the job's status was last written at least `every` seconds ago, and a later pass writes
it then; anything else (a new generation, a new world size or layout, a checkpoint, a stop, the finish,
and every change outside `progress`) is written at once, carrying the latest report with it.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

Key = tuple[str, str]
ROUTINE = frozenset({"step", "loss", "tokensPerSecond", "steadyTokensPerSecond", "maxViolation", "updated"})
"""Fields of a progress report that change with every report while a generation trains."""
DEFAULT_SECONDS = 30
"""The trainers report every 10 s; mirroring every third report cuts a fleet's status writes about threefold."""


def routine_only(patch: Mapping[str, Any]) -> bool:
    """Whether a status merge patch changes nothing but the progress report's routine fields."""
    progress = patch.get("progress")
    return (set(patch) == {"progress"} and isinstance(progress, Mapping) and bool(progress)
            and set(progress) <= ROUTINE)


class ProgressPacer:
    """Remembers when each job's status was last written, and says how long to hold a routine patch."""

    def __init__(self, every: float = DEFAULT_SECONDS) -> None:
        self.every = every
        self._written: dict[Key, float] = {}
        self._lock = threading.Lock()

    def hold(self, key: Key, patch: Mapping[str, Any], now: float) -> float | None:
        """Seconds to hold `patch` back (None: write it now). `now` is a monotonic time."""
        if self.every <= 0 or not routine_only(patch):
            return None
        with self._lock:
            last = self._written.get(key)
        if last is None or now - last >= self.every:
            return None
        return last + self.every - now

    def wrote(self, key: Key, now: float) -> None:
        """The job's status was written at `now`."""
        with self._lock:
            self._written[key] = now

    def forget(self, key: Key) -> None:
        """The job is gone."""
        with self._lock:
            self._written.pop(key, None)
