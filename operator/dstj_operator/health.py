"""Liveness and readiness on DSTJ_HEALTH_PORT: `/healthz` and `/readyz`, each able to fail (503).

- `/healthz` (liveness; a failure restarts the pod): fails when reconcile passes are pending and
  none has finished for DSTJ_STUCK_SECONDS (`passes.stuck`). A standby has no passes: it is live.
- `/readyz` (readiness; gates `helm install --wait` and rollouts): a leader (or an operator
  without election) is ready when every kopf watch stream has listed and is still up
  (`watches`); a standby is ready while it keeps reading the leader Lease, its last successful
  read no older than the lease duration (a standby that cannot see the Lease could not take over).

The decisions are pure functions of a snapshot and the time; the server only asks them.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from dstj_operator.passes import PassTracker, stuck
from dstj_operator.watches import WatchState


def not_ready(*, leading: bool, watches: WatchState, lease_read_at: float | None, lease_seconds: float,
              now: float) -> str | None:
    """Why this replica is not ready, or None. `lease_read_at`: monotonic time of the last Lease read."""
    if leading:
        if len(watches.connected) >= watches.expected:
            return None
        waiting = sorted(watches.opened - watches.connected)
        return (f"leader: {len(watches.connected)} of {watches.expected} watch streams connected"
                + (f"; not yet: {', '.join(waiting)}" if waiting else "; kopf has not opened them yet"))
    if lease_read_at is None:
        return "standby: the leader Lease has not been read yet"
    age = now - lease_read_at
    if age > lease_seconds:
        return f"standby: the leader Lease was last read {age:.0f} s ago (lease duration {lease_seconds:g} s)"
    return None


@dataclass(frozen=True, slots=True, kw_only=True)
class Probes:
    """Where the endpoints look: the passes, kopf's watches and the leader election."""

    passes: PassTracker
    stuck_seconds: float
    watches: Callable[[], WatchState]
    leading: Callable[[], bool]
    """True for the holder of the Lease, and for an operator that runs without election."""
    lease_read_at: Callable[[], float | None]
    lease_seconds: float
    clock: Callable[[], float] = time.monotonic

    def healthz(self) -> str | None:
        """Why the process is not live, or None."""
        return stuck(self.passes.state(), self.clock(), self.stuck_seconds)

    def readyz(self) -> str | None:
        """Why the process is not ready, or None."""
        return not_ready(leading=self.leading(), watches=self.watches(), lease_read_at=self.lease_read_at(),
                         lease_seconds=self.lease_seconds, now=self.clock())


def _handler(probes: Probes) -> type[BaseHTTPRequestHandler]:
    checks = {"/healthz": probes.healthz, "/readyz": probes.readyz}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            check = checks.get(self.path.split("?")[0])
            if check is None:
                code, body = 404, "not found"
            else:
                failure = check()
                code, body = (503, failure) if failure else (200, "ok")
            self.send_response(code)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.end_headers()
            self.wfile.write(body.encode() + b"\n")

        def log_message(self, format: str, *args: object) -> None:  # probes every few seconds: stay quiet
            return

    return Handler


def serve_health(port: int, probes: Probes, host: str = "0.0.0.0") -> ThreadingHTTPServer:
    """Serve the probes in a daemon thread; returns the server (port 0 picks a free one)."""
    server = ThreadingHTTPServer((host, port), _handler(probes))
    threading.Thread(target=server.serve_forever, name="health", daemon=True).start()
    return server
