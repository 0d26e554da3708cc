"""The kubelet API, as far as ``kubectl logs`` needs it: ``GET /containerLogs/{ns}/{pod}/{c}``.

``kubectl logs`` asks the API server, which calls the node's kubelet endpoint (the Node's
InternalIP and ``daemonEndpoints.kubeletEndpoint.Port``) with its kubelet-client certificate.
This server listens there with the node's serving certificate, accepts only clients whose
certificate the cluster CA signed and that are the API server (``kube-apiserver-kubelet-client``)
or cluster admins (``system:masters``), and serves ``follow``, ``previous``, ``tailLines`` and
``limitBytes``. Lines carry no timestamps (``timestamps=true`` is ignored). exec, attach and
port-forward are not served.
"""

from __future__ import annotations

import http.server
import logging
import re
import ssl
import threading
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from localcluster.nodeagent import container
from localcluster.nodeagent.status import Slot

#: (namespace, pod name) -> (pod directory, slots) of a pod this node runs, or None.
Lookup = Callable[[str, str], "tuple[Path, list[Slot]] | None"]
ALLOWED_CN = {"kube-apiserver-kubelet-client"}
ALLOWED_O = {"system:masters"}


def _tail(data: bytes, lines: int) -> bytes:
    """The last ``lines`` lines of ``data``."""
    if lines <= 0:
        return b""
    parts = data.splitlines(keepends=True)
    return b"".join(parts[-lines:])


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.0"  # the body ends when the connection closes: right for follow

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the agent's log holds what matters."""

    def _allowed(self) -> bool:
        """Whether the client certificate names the API server or an admin."""
        cert = self.connection.getpeercert() if isinstance(self.connection, ssl.SSLSocket) else None
        pairs = [(str(av[0]), str(av[1])) for rdn in (cert or {}).get("subject", ()) for av in rdn]
        cns = {v for k, v in pairs if k == "commonName"}
        orgs = {v for k, v in pairs if k == "organizationName"}
        return bool(cns & ALLOWED_CN or orgs & ALLOWED_O)

    def _error(self, code: int, message: str) -> None:
        body = message.encode()
        self.send_response(code)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        """Serve one request."""
        if not self._allowed():
            return self._error(403, "Forbidden: only the API server may call the kubelet API")
        url = urllib.parse.urlsplit(self.path)
        if url.path == "/healthz":
            return self._error(200, "ok")
        m = re.fullmatch(r"/containerLogs/([^/]+)/([^/]+)/([^/]+)", url.path)
        if not m:
            return self._error(404, f"not found: {url.path}")
        q = {k: v[-1] for k, v in urllib.parse.parse_qs(url.query).items()}
        self._logs(m.group(1), m.group(2), m.group(3), q)

    def _logs(self, ns: str, pod: str, name: str, q: dict[str, str]) -> None:
        found = self.server.lookup(ns, pod)
        slot = next((s for s in found[1] if s.name == name), None) if found else None
        if found is None or slot is None:
            return self._error(404, f'container "{name}" in pod "{pod}" not found on this node')
        pod_dir = found[0]
        previous = q.get("previous") == "true"
        # Run n logs to n.log; in back-off the newest file is the run that just crashed.
        runs = slot.restarts - (1 if previous else 0)
        path = container.log_path(pod_dir, name, runs)
        if runs < 0 or not path.exists():
            reason = slot.waiting_reason or "ContainerCreating"
            what = "previous terminated container" if previous else f"is waiting to start: {reason}"
            return self._error(400, f'container "{name}" in pod "{pod}" {what}')
        run = slot.run if not previous and slot.run is not None and slot.restarts == runs else None
        follow = q.get("follow") == "true" and run is not None
        limit = int(q["limitBytes"]) if q.get("limitBytes") else None
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.end_headers()
        with open(path, "rb") as f:
            data = f.read()
            if q.get("tailLines"):
                data = _tail(data, int(q["tailLines"]))
            sent = self._send(data, limit, 0)
            while follow and run is not None and (limit is None or sent < limit):
                chunk = f.read()
                if chunk:
                    sent = self._send(chunk, limit, sent)
                elif run.done.is_set():
                    sent = self._send(f.read(), limit, sent)
                    break
                else:
                    time.sleep(0.1)

    def _send(self, data: bytes, limit: int | None, sent: int) -> int:
        if limit is not None:
            data = data[: max(0, limit - sent)]
        if data:
            self.wfile.write(data)
            self.wfile.flush()
        return sent + len(data)


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    lookup: Lookup
    ssl_context: ssl.SSLContext

    def finish_request(self, request: Any, client_address: Any) -> None:
        """Do the TLS handshake in the request's own thread, so a slow client blocks no one."""
        try:
            tls = self.ssl_context.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError):
            return
        try:
            self.RequestHandlerClass(tls, client_address, self)  # type: ignore[arg-type]
        finally:
            tls.close()  # HTTP/1.0: closing ends the body


def serve(address: str, port: int, cert: Path, key: Path, ca: Path, lookup: Lookup,
          log: logging.Logger) -> _Server:
    """Start the kubelet API on ``address:port`` in a daemon thread and return the server."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(cert), str(key))
    ctx.load_verify_locations(str(ca))
    ctx.verify_mode = ssl.CERT_REQUIRED
    srv = _Server((address, port), _Handler)
    srv.lookup, srv.ssl_context = lookup, ctx
    threading.Thread(target=srv.serve_forever, name="kubelet-api", daemon=True).start()
    log.info("kubelet API on https://%s:%d", address, port)
    return srv
