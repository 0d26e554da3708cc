"""When containers restart, and how they stop: restart policy, back-off, grace periods.

Pure rules plus one blocking loop, kept apart from the pod worker's stage machine:
``should_restart`` is the restart policy (init containers restart on failure unless
``Never``); ``back_off`` puts a crashed container into ``CrashLoopBackOff`` for a doubling
delay; ``grace_period`` reads the deletion's grace period (a second delete may shorten it);
``stop_all`` is the runtime's stop: SIGTERM, then SIGKILL when the grace period is over.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from localcluster.nodeagent import status
from localcluster.nodeagent.status import Slot

Obj = dict[str, Any]


def should_restart(slot: Slot, policy: str, code: int) -> bool:
    """Whether a container that exited with ``code`` runs again under ``policy``."""
    if slot.init:
        return code != 0 and policy != "Never"
    return policy == "Always" or (policy == "OnFailure" and code != 0)


def back_off(slot: Slot, now: float, initial: float, longest: float) -> None:
    """Record the finished run and wait ``initial * 2^restarts`` (at most ``longest``) seconds."""
    assert slot.run is not None
    slot.last_terminated, slot.run = status.terminated(slot.run), None
    delay = min(initial * 2 ** slot.restarts, longest)
    slot.backoff_until, slot.waiting_reason = now + delay, "CrashLoopBackOff"
    slot.waiting_message = f"back-off {delay:.0f}s restarting failed container={slot.name}"


def grace_period(pod: Obj, removed: bool) -> float:
    """The grace period now: the deletion's, else the spec's; 2 s when force-deleted."""
    grace = pod["metadata"].get("deletionGracePeriodSeconds")
    if grace is None:
        grace = pod["spec"].get("terminationGracePeriodSeconds", 30)
    return min(float(grace), 2.0) if removed else float(grace)


def stop_all(slots: list[Slot], grace: Callable[[], float], wake: threading.Event) -> None:
    """SIGTERM every running container, wait within the grace period, then SIGKILL; all slots
    end up finished (no restarts after a stop)."""
    for s in slots:
        s.backoff_until = None
        if s.run is not None and s.run.exit_code is None:
            s.run.terminate(grace())
    while True:
        live = [s.run for s in slots if s.run is not None and s.run.poll() is None]
        if not live:
            break
        now = time.monotonic()
        for run in live:
            run.terminate(grace())  # a later delete may have shortened it
            if run.overdue(now):
                run.kill()
        wake.wait(0.05)
        wake.clear()
    for s in slots:
        if s.run is not None:
            s.finished = True
