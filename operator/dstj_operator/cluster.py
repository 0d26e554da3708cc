"""The operator's only door to the API server: a few typed calls over the official client.

Everything the reconciler needs is read back from the cluster on every pass (the operator keeps
no state of its own); writes are create-if-absent, so running a pass twice changes nothing. The
one thing remembered is a hint: which static children were seen to exist in the last
`RECHECK_SECONDS`, so a busy job's passes do not re-POST each of them (one 409 apiece) on every
progress report. A child deleted behind the operator's back is re-created within that time.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, cast

from kubernetes import client, utils
from kubernetes.client.rest import ApiException
from pydantic import ValidationError

from dstj_api import ProgressReport, read_lenient
from dstj_api.contract import GROUP, KIND, PROGRESS_KEY, VERSION

log = logging.getLogger(__name__)

RECHECK_SECONDS = 30.0
"""How long a child seen to exist is taken to still exist by `ensure`."""
_seen: dict[tuple[str, str, str, str], float] = {}
"""(owner uid, kind, namespace, name) -> when the child was last created or found existing."""


_api_client: Any = None
_api_client_lock = threading.Lock()


def shared_api_client() -> Any:
    """One ApiClient for every pass: its connection pool keeps HTTPS connections open (a new client
    per pass paid a TLS handshake per call, the largest part of a pass's CPU under load)."""
    global _api_client
    with _api_client_lock:
        if _api_client is None:
            _api_client = client.ApiClient()
        return _api_client


def _json(response: Any) -> Any:
    """The body of a call made with `_preload_content=False`: plain JSON, without the client's model
    objects (building and re-serialising those cost more CPU than the request)."""
    return json.loads(response.data)


def parse_progress(raw: str | None, where: str) -> ProgressReport | None:
    """The report in a progress ConfigMap's data, or None when it is empty (`null`) or malformed (with a warning)."""
    if not raw:
        return None
    try:
        data = json.loads(raw)
        return None if data is None else read_lenient(ProgressReport, data, f"progress report {where}")
    except (ValueError, ValidationError) as e:  # JSONDecodeError is a ValueError
        log.warning("ignoring a malformed progress report in %s: %s", where, str(e).replace("\n", " ")[:500])
        return None


@dataclass(slots=True)
class Cluster:
    """Typed API calls used by the reconciler."""

    core: Any
    apis: Any

    @classmethod
    def connect(cls) -> Cluster:
        """Clients over the configuration kopf's login already loaded (in-cluster or kubeconfig)."""
        api = shared_api_client()
        return cls(core=client.CoreV1Api(api), apis=api)

    def create_if_absent(self, obj: dict[str, Any]) -> bool:
        """Create `obj` unless it exists; True when it was created."""
        try:
            utils.create_from_dict(self.apis, obj, namespace=obj["metadata"].get("namespace"))
            return True
        except utils.FailToCreateError as e:
            if all(getattr(x, "status", None) == 409 for x in e.api_exceptions):
                return False
            raise

    def ensure(self, obj: dict[str, Any]) -> bool:
        """`create_if_absent`, skipped when the same owner's child was seen in the last `RECHECK_SECONDS`."""
        meta = obj["metadata"]
        owner = next((r["uid"] for r in meta.get("ownerReferences") or []), "")
        key = (owner, obj["kind"], meta.get("namespace", ""), meta["name"])
        now = time.monotonic()
        if now - _seen.get(key, -RECHECK_SECONDS) < RECHECK_SECONDS:
            return False
        created = self.create_if_absent(obj)
        _seen[key] = now
        if len(_seen) > 10_000:  # jobs come and go: drop hints that have expired
            # list() copies under the GIL: other passes' threads may add hints meanwhile.
            for k, t in list(_seen.items()):
                if now - t >= RECHECK_SECONDS:
                    _seen.pop(k, None)
        return created

    def pods(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        """Pods matching a label selector, as plain dicts."""
        body = _json(self.core.list_namespaced_pod(namespace, label_selector=selector, _preload_content=False))
        return cast(list[dict[str, Any]], body.get("items") or [])

    def delete_pod(self, namespace: str, name: str, grace_seconds: int | None = None) -> None:
        """Delete a pod (already gone is fine)."""
        try:
            self.core.delete_namespaced_pod(name, namespace, grace_period_seconds=grace_seconds)
        except ApiException as e:
            if e.status != 404:
                raise

    def progress(self, namespace: str, name: str) -> ProgressReport | None:
        """The trainer's last progress report, if any.

        Read leniently (a newer trainer may report a field this operator does not know); a malformed
        report is logged and taken as none: it must never fail the pass.
        """
        try:
            cm = _json(self.core.read_namespaced_config_map(name, namespace, _preload_content=False))
        except ApiException as e:
            if e.status == 404:
                return None
            raise
        return parse_progress((cm.get("data") or {}).get(PROGRESS_KEY), f"{namespace}/{name}")

    def event(self, job: dict[str, Any], reason: str, message: str, kind: str = "Normal") -> None:
        """Record a Kubernetes Event on the job."""
        meta = job["metadata"]
        body = {
            "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
            "involvedObject": {"apiVersion": f"{GROUP}/{VERSION}", "kind": KIND,
                               "name": meta["name"], "namespace": meta["namespace"], "uid": meta["uid"]},
            "reason": reason, "message": message, "type": kind, "source": {"component": "dstj-operator"},
        }
        try:
            self.core.create_namespaced_event(meta["namespace"], body)
        except ApiException as e:
            log.warning("could not record event %s: %s", reason, e.reason)

