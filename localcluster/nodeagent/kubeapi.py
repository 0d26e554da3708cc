"""A thin JSON client on the official kubernetes client's transport.

The generated API classes turn every object into typed models and back, which costs time and
memory per pod and hides the wire format a kubelet speaks. The agent only needs "GET/POST/
PATCH/DELETE this path with this JSON" and "list, then watch from that resourceVersion", so it
uses ``kubernetes.client.ApiClient``'s configuration, TLS and connection pool with plain dicts.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from kubernetes import client as k8s_client
from kubernetes import config as k8s_config

log = logging.getLogger(__name__)

Obj = dict[str, Any]


class ApiError(RuntimeError):
    """The API server answered with an error status; ``status`` is the HTTP code."""

    def __init__(self, status: int, method: str, path: str, body: str) -> None:
        self.status = status
        self.body = body
        try:
            message = json.loads(body).get("message", body)
        except ValueError:
            message = body
        super().__init__(f"{method} {path}: HTTP {status}: {' '.join(str(message).split())[:300]}")


METADATA_ONLY = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,application/json"
"""The Accept header of a list whose objects come back as their metadata alone (a tenth of a pod's bytes)."""


class Api:
    """JSON requests to one API server as one identity (a kubeconfig)."""

    def __init__(self, kubeconfig: Path, pool_size: int = 32) -> None:
        cfg = k8s_client.Configuration()
        k8s_config.load_kube_config(config_file=str(kubeconfig), client_configuration=cfg,
                                    persist_config=False)
        cfg.proxy = None  # the API server is local: a registry proxy from the environment must not apply
        cfg.connection_pool_maxsize = pool_size
        self._api = k8s_client.ApiClient(cfg)
        self.host = cfg.host

    def request(self, method: str, path: str, body: Any = None, params: dict[str, Any] | None = None,
                content_type: str = "application/json", timeout: float | tuple[float, float] = 30,
                accept: str = "application/json") -> Obj:
        """Send one request and return the decoded JSON answer; raise ApiError on >= 400."""
        url = self.host + path + (("?" + urllib.parse.urlencode(params)) if params else "")
        headers = {"Accept": accept, "Content-Type": content_type}
        # The transport serialises ``body`` as JSON itself.
        resp = self._api.rest_client.request(method, url, headers=headers, body=body, _request_timeout=timeout)
        raw = resp.read()
        if resp.status >= 400:
            raise ApiError(resp.status, method, path, raw.decode(errors="replace"))
        return json.loads(raw) if raw else {}

    def get(self, path: str, params: dict[str, Any] | None = None, timeout: float = 30,
            accept: str = "application/json") -> Obj:
        """GET a path (`accept` METADATA_ONLY: a list's objects as their metadata alone)."""
        return self.request("GET", path, params=params, timeout=timeout, accept=accept)

    def post(self, path: str, body: Obj) -> Obj:
        """POST (create) an object."""
        return self.request("POST", path, body)

    def put(self, path: str, body: Obj) -> Obj:
        """PUT (replace) an object; its resourceVersion guards against lost updates."""
        return self.request("PUT", path, body)

    def patch(self, path: str, body: Obj, kind: str = "strategic-merge-patch") -> Obj:
        """PATCH an object (strategic merge by default, as kubelets patch pod status)."""
        return self.request("PATCH", path, body, content_type=f"application/{kind}+json")

    def delete(self, path: str, body: Obj | None = None) -> Obj:
        """DELETE an object, with DeleteOptions as the body."""
        return self.request("DELETE", path, body)

    def watch(self, path: str, params: dict[str, Any], on_list: Callable[[list[Obj]], None],
              on_event: Callable[[str, Obj], None], stop: threading.Event, list_timeout: float = 30) -> None:
        """List, then watch from the list's resourceVersion, until ``stop`` is set.

        ``on_list`` gets the full list first and again after every relist (a watch that
        expired: HTTP 410, or a dropped connection), so the caller can reconcile; ``on_event``
        gets each ADDED/MODIFIED/DELETED event. Errors are logged and retried with a delay:
        a node agent must outlive API server restarts.
        """
        delay = 0.2
        while not stop.is_set():
            try:
                listed = self.get(path, params, timeout=list_timeout)
                on_list(listed.get("items") or [])
                rv = listed["metadata"]["resourceVersion"]
                for etype, obj in self._stream(path, {**params, "watch": "1", "resourceVersion": rv,
                                                      "allowWatchBookmarks": "true", "timeoutSeconds": 240},
                                               stop):
                    delay = 0.2
                    if etype == "ERROR":
                        break  # typically 410 Gone: relist
                    if etype != "BOOKMARK":
                        on_event(etype, obj)
            except Exception as e:
                if stop.is_set():
                    return
                log.warning("watch %s failed: %s; retrying in %.1f s", path, e, delay)
                stop.wait(delay)
                delay = min(delay * 2, 5.0)

    def _stream(self, path: str, params: dict[str, Any], stop: threading.Event) -> Iterator[tuple[str, Obj]]:
        """Yield (type, object) from one watch connection until it ends."""
        url = self.host + path + "?" + urllib.parse.urlencode(params)
        resp = self._api.rest_client.request("GET", url, headers={"Accept": "application/json"},
                                             _request_timeout=(10, 300))
        raw = resp.response
        try:
            if resp.status >= 400:
                raise ApiError(resp.status, "WATCH", path, raw.read().decode(errors="replace"))
            buf = b""
            for chunk in raw.stream(None, decode_content=False):
                if stop.is_set():
                    return
                buf += chunk
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    if line.strip():
                        ev = json.loads(line)
                        yield ev["type"], ev["object"]
        finally:
            raw.release_conn()


def now_rfc3339() -> str:
    """The current time as Kubernetes' metav1.Time (second precision, UTC)."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def now_micro() -> str:
    """The current time as metav1.MicroTime (Lease renewTime)."""
    t = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1e6):06d}Z"
