"""Liveness and readiness on DSTJ_HEALTH_PORT: /healthz and /readyz answer while the process serves.

A standby waiting for the leader lease is healthy too (the probes must not restart it).
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        ok = self.path.split("?")[0] in ("/healthz", "/readyz")
        self.send_response(200 if ok else 404)
        self.send_header("Content-Type", "text/plain")
        self.end_headers()
        self.wfile.write(b"ok\n" if ok else b"not found\n")

    def log_message(self, format: str, *args: object) -> None:  # probes every few seconds: stay quiet
        return


def serve_health(port: int) -> ThreadingHTTPServer:
    """Serve the probes in a daemon thread; returns the server (port 0 picks a free one)."""
    server = ThreadingHTTPServer(("0.0.0.0", port), _Handler)
    threading.Thread(target=server.serve_forever, name="health", daemon=True).start()
    return server
