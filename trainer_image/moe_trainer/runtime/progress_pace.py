"""A floor on how often rank 0's progress report reaches the API server.

The trainer reports every `train.logEvery` steps; with fast steps that is several writes a second per
job, and a fleet of jobs floods the API server (and the operator, which reconciles on each). The pace
lets a report through at most once per `REPORT_INTERVAL_S`, except the ones the operator must see at
once: the first, a new generation's (membership and the Progressing condition follow it), one that
shows a newly committed checkpoint, and the last (stopped or finished). A report held back is simply
dropped: the next one carries everything it had, newer.

`ReportPace.due` is a pure function of the reports and the time, so it is tested without a clock.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from dstj_api import ProgressReport
from moe_trainer.runtime.membership import ProgressSink

REPORT_INTERVAL_S = 10.0
"""Seconds between two routine reports of one job: 1,000 jobs make 100 writes a second at most."""


@dataclass(slots=True)
class ReportPace:
    """Decides which reports go out; remembers the last one that did."""

    interval: float = REPORT_INTERVAL_S
    """Seconds that must pass before a routine report follows the last one sent."""
    last: ProgressReport | None = None
    """The last report sent (None before the first)."""
    last_at: float = 0.0
    """When it was sent, on the caller's monotonic clock (seconds)."""

    def due(self, report: ProgressReport, now: float) -> bool:
        """Whether `report`, made at `now`, goes out."""
        last = self.last
        return (last is None or report.state != "running" or report.step >= report.total_steps
                or report.generation != last.generation
                or report.last_checkpoint_step != last.last_checkpoint_step
                or now - self.last_at >= self.interval)

    def sent(self, report: ProgressReport, now: float) -> None:
        """Record that `report` went out at `now`."""
        self.last, self.last_at = report, now


class PacedProgressSink:
    """A sink that passes reports to another at the pace of a `ReportPace`."""

    def __init__(self, inner: ProgressSink, interval: float = REPORT_INTERVAL_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.inner = inner
        self.pace = ReportPace(interval)
        self._clock = clock

    def publish(self, report: ProgressReport) -> None:
        """Publish `report` through the inner sink if it is due; drop it otherwise."""
        now = self._clock()
        if self.pace.due(report, now):
            self.inner.publish(report)
            self.pace.sent(report, now)
