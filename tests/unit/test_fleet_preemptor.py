"""The fleet bench's preemptor as data: once halted, no deletion lands after the caller starts checking the fleet."""

from __future__ import annotations

import threading
from typing import Any, cast

from benchmarks.fleet.loadgen import FleetView, Preemptor


class SlowApi:
    """Answers a pod deletion only once `release` is set."""

    def __init__(self) -> None:
        self.started, self.release = threading.Event(), threading.Event()
        self.deleted: list[str] = []

    def delete(self, path: str) -> dict[str, Any]:
        self.started.set()
        self.release.wait(10)
        self.deleted.append(path)
        return {}


def test_halt_waits_for_a_deletion_in_flight_and_a_deletion_submitted_before_it_chooses_nothing() -> None:
    api = SlowApi()
    view = FleetView(cast(Any, api), "fleet")
    for job in ("job-0", "job-1"):
        view.world[job], view.generation[job] = 2, 3
        view.workers[job] = {f"{job}-w0": "0", f"{job}-w1": "1"}
    pre = Preemptor(view, rate=1.0, workers=2)
    pre.active.set()
    first = threading.Thread(target=pre._delete_one)
    first.start()
    assert api.started.wait(10)
    halting = threading.Thread(target=pre.halt)
    halting.start()
    halting.join(0.2)
    assert halting.is_alive()  # the deletion is unanswered: halt has not returned
    api.release.set()
    halting.join(10)
    first.join(10)
    assert not halting.is_alive() and pre.deleted == 1 and pre.in_flight == 0
    pending = dict(pre.pending)
    pre._delete_one()  # submitted by the loop before the halt, run after it: the other job is ready, yet untouched
    assert len(api.deleted) == 1 and pre.pending == pending
