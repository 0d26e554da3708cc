"""A progress report's write never holds up training.

Rank 0 publishes from inside the training loop, and a write to the API server can take seconds (a throttled
server, a connection being re-established): a synchronous write stalls every rank at the next collective. The
writer hands routine reports to a thread of its own and returns at once; when the thread is still busy with an
older report, only the newest waiting one is kept (it carries everything the dropped ones had, newer). A report
that ends a generation (stopped, finished, failed) is the last this process may send before it exits, so
`publish` waits for it to be written, up to `FINAL_WAIT_S`.
"""

from __future__ import annotations

import logging
import threading

from dstj_api import ProgressReport
from moe_trainer.runtime.membership import ProgressSink

log = logging.getLogger(__name__)

FINAL_WAIT_S = 15.0
"""How long a generation's last report may hold up its rank 0 (it is about to stop or exit anyway)."""


class BackgroundProgressSink:
    """Writes reports through another sink from a daemon thread, newest first, dropping the superseded."""

    def __init__(self, inner: ProgressSink, final_wait: float = FINAL_WAIT_S) -> None:
        self.inner = inner
        self.final_wait = final_wait
        self._pending: ProgressReport | None = None
        self._written = 0
        """Reports handed over so far that the thread has written (or dropped as superseded)."""
        self._handed = 0
        self._cond = threading.Condition()
        threading.Thread(target=self._run, name="progress-writer", daemon=True).start()

    def publish(self, report: ProgressReport) -> None:
        """Queue `report` (replacing one not yet written); wait for it when it ends the generation."""
        with self._cond:
            self._pending = report
            self._handed += 1
            ticket = self._handed
            self._cond.notify_all()
            if report.state != "running" and not self._cond.wait_for(lambda: self._written >= ticket,
                                                                     timeout=self.final_wait):
                log.warning("the final progress report (step %d, %s) was not written within %.0f s; going on",
                            report.step, report.state, self.final_wait)

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._pending is not None)
                report, ticket, self._pending = self._pending, self._handed, None
            try:
                self.inner.publish(report)  # type: ignore[arg-type]
            except Exception as e:  # best effort, as the inner sink's own failures are
                log.warning("writing the progress report failed: %s", e)
            with self._cond:
                self._written = ticket
                self._cond.notify_all()
