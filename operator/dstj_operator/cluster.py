"""The operator's only door to the API server: a few typed calls over the official client.

Reads come from the watch streams' store (`cache`): the job, its pods, its progress report, and which
child was applied with which hash and resourceVersion (so a busy job's passes do not re-apply each child
on every progress report); the API server is asked only where the store does not know (a stream not
yet listed). What a pass writes goes into the store at once. Static children converge by server-side
apply (create, update, or take back a field edited by hand); running a pass twice changes nothing. A
watch event that shows a child changed or gone drops its hint, so a child edited or deleted by hand heals
in the pass that event triggers; for kinds a restricted operator cannot watch the hint also expires
after `RECHECK_SECONDS`.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

from kubernetes import client, utils
from kubernetes.client.rest import ApiException
from pydantic import ValidationError

from dstj_api import ProgressReport, read_lenient
from dstj_api.contract import GROUP, JOB_LABEL, KIND, PLURAL, PROGRESS_KEY, VERSION
from dstj_operator import cache, events
from dstj_operator.cache import UNKNOWN
from dstj_operator.converge import Mode, hash_of, matches, replacement, stamped

log = logging.getLogger(__name__)

RECHECK_SECONDS = cache.RECHECK_SECONDS
FIELD_MANAGER = "dstj-operator"
"""The server-side apply field manager: the fields it sets are the operator's, and a hand edit of one is
taken back."""


HPA_RECHECK_SECONDS = 30.0
"""How long a namespace's list of HorizontalPodAutoscalers is reused: a pass runs on every progress report, and
an HPA created by hand may wait this long to be noticed."""
_hpas: dict[str, tuple[float, list[tuple[str, dict[str, Any]]]]] = {}
_hpa_lock = threading.Lock()
_APPLY_CALLS = {
    "ConfigMap": ("CoreV1Api", "patch_namespaced_config_map"),
    "Service": ("CoreV1Api", "patch_namespaced_service"),
    "ServiceAccount": ("CoreV1Api", "patch_namespaced_service_account"),
    "Role": ("RbacAuthorizationV1Api", "patch_namespaced_role"),
    "RoleBinding": ("RbacAuthorizationV1Api", "patch_namespaced_role_binding"),
    "PodDisruptionBudget": ("PolicyV1Api", "patch_namespaced_pod_disruption_budget"),
    "NetworkPolicy": ("NetworkingV1Api", "patch_namespaced_network_policy"),
}


POOL_CONNECTIONS = 48
"""HTTPS connections the shared client keeps open: at least the threads that call at once (kopf's handler threads,
`handlers.HANDLER_THREADS`, the requeue's and the Event posters'). The client's default is 5 per CPU: beyond it
urllib3 opens a connection per call and drops it after, a TLS handshake each time."""

_api_client: Any = None
_api_client_lock = threading.Lock()


def shared_api_client() -> Any:
    """One ApiClient for every pass: its connection pool keeps HTTPS connections open (a new client
    per pass paid a TLS handshake per call, the largest part of a pass's CPU under load)."""
    global _api_client
    with _api_client_lock:
        if _api_client is None:
            configuration = client.Configuration.get_default_copy()
            configuration.connection_pool_maxsize = POOL_CONNECTIONS
            _api_client = client.ApiClient(configuration)
        return _api_client


API_CLASSES = ("CoreV1Api", "CustomObjectsApi", "AutoscalingV2Api",
               *sorted({cls for cls, _ in _APPLY_CALLS.values()} - {"CoreV1Api"}))
"""The client's API classes the passes call."""


def preload_clients() -> None:
    """Import the client's API modules the passes use, now, before the first pass.

    The client imports an API's module, and with it the model module of every type that API names (about 300 for
    these: 28 MiB and a second of CPU on an idle core), on first use: in the first pass after a start or a
    takeover, which is then that much slower. Imported here, the cost is paid while the operator starts."""
    api = shared_api_client()
    for name in API_CLASSES:
        getattr(client, name)(api)


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

    def job(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The job (None when it does not exist)."""
        held = cache.STORE.job(namespace, name)
        if held is not UNKNOWN:
            return held
        api = client.CustomObjectsApi(self.apis)
        try:
            return cast(dict[str, Any], _json(api.get_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, name, _preload_content=False)))
        except ApiException as e:
            if e.status == 404:
                return None
            raise

    def create_if_absent(self, obj: dict[str, Any]) -> bool:
        """Create `obj` unless it exists; True when it was created. A created pod is in the store at once."""
        if obj.get("kind") == "Pod":
            namespace = obj["metadata"]["namespace"]
            try:
                cache.STORE.wrote(_json(self.core.create_namespaced_pod(namespace, obj, _preload_content=False)))
                return True
            except ApiException as e:
                if e.status == 409:
                    return False
                raise
            except Exception:  # no answer: it may have been created all the same
                cache.STORE.unanswered(namespace, obj["metadata"]["labels"][JOB_LABEL])
                raise
        try:
            utils.create_from_dict(self.apis, obj, namespace=obj["metadata"].get("namespace"))
            return True
        except utils.FailToCreateError as e:
            if all(getattr(x, "status", None) == 409 for x in e.api_exceptions):
                return False
            raise

    def converge(self, obj: dict[str, Any], mode: Mode = Mode.APPLY) -> bool:
        """Make the child match `obj`; True when an API call was made. `obj` as built, or as `stamped` returned it
        (its hash is then taken as it is: the reconciler stamps a job's static children once per spec generation).

        Skipped while the hint says the child stands as last applied with the same hash.
        """
        obj = obj if hash_of(obj) else stamped(obj)
        key, digest = cache.hint_key(obj), hash_of(obj) or ""
        if cache.STORE.hint(key, digest):
            return False
        at = time.monotonic()
        if mode is Mode.CREATE_ONLY:
            self.create_if_absent(obj)
            version = ""
        else:
            version = self._apply(obj)
        cache.STORE.remember(key, cache.Hint(digest, version, mode, at))
        return True

    def _apply(self, obj: dict[str, Any]) -> str:
        """Make the child match `obj`; returns its new resourceVersion.

        Server-side apply first (one call: creates a missing child, updates the operator's fields, takes
        back a field edited by hand). What apply cannot undo, because another manager now owns it (a list
        item added by hand, a list key changed), is replaced: read, then PUT the operator's content whole.
        """
        api_class, method = _APPLY_CALLS[obj["kind"]]
        api = getattr(client, api_class)(self.apis)
        name, ns = obj["metadata"]["name"], obj["metadata"]["namespace"]
        live: dict[str, Any] | None = None
        try:
            live = _json(getattr(api, method)(name, ns, obj, field_manager=FIELD_MANAGER, force=True,
                                              _content_type="application/apply-patch+yaml", _preload_content=False))
        except ApiException as e:
            if e.status not in (409, 422):  # an apply that would leave the object invalid: replace it instead
                raise
        if live is None or not matches(live, obj):
            current = live or _json(getattr(api, method.replace("patch_", "read_"))(name, ns, _preload_content=False))
            live = _json(getattr(api, method.replace("patch_", "replace_"))(
                name, ns, replacement(current, obj), field_manager=FIELD_MANAGER, _preload_content=False))
        return str((live.get("metadata") or {}).get("resourceVersion", ""))

    def pods(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        """Pods matching an equality label selector (`k=v,k=v`), as plain dicts; from the store when the
        selector names the job (`cache.slim_pod`'s fields only). Where the store does not know the job's pods,
        all of them are read from the API server and handed to the store (`Store.read`)."""
        terms = dict(t.split("=", 1) for t in selector.split(",") if "=" in t)
        if JOB_LABEL in terms and len(terms) == selector.count("=") and "!" not in selector:
            job = terms[JOB_LABEL]
            held = cache.STORE.pods(namespace, job)
            if held is UNKNOWN:
                held = cast(list[dict[str, Any]], _json(self.core.list_namespaced_pod(
                    namespace, label_selector=f"{JOB_LABEL}={job}", _preload_content=False)).get("items") or [])
                for p in held:
                    p.setdefault("kind", "Pod")  # a list's items carry no kind
                cache.STORE.read(namespace, job, held)
            return [p for p in held if all((p["metadata"].get("labels") or {}).get(k) == v for k, v in terms.items())]
        body = _json(self.core.list_namespaced_pod(namespace, label_selector=selector, _preload_content=False))
        return cast(list[dict[str, Any]], body.get("items") or [])

    def delete_pod(self, namespace: str, name: str, grace_seconds: int | None = None) -> None:
        """Delete a pod (already gone is fine); the store holds it as terminating, or drops it, at once."""
        try:
            body = _json(self.core.delete_namespaced_pod(name, namespace, grace_period_seconds=grace_seconds,
                                                         _preload_content=False))
        except ApiException as e:
            if e.status != 404:
                raise
            cache.STORE.gone(namespace, name)
            return
        if body.get("kind") == "Pod" and (body.get("metadata") or {}).get("deletionTimestamp"):
            cache.STORE.deleting(body)
        else:  # deleted at once (no grace): the answer is the last state or a Status
            cache.STORE.gone(namespace, name)

    def progress(self, namespace: str, name: str) -> ProgressReport | None:
        """The trainer's last progress report, if any.

        Read leniently (a newer trainer may report a field this operator does not know); a malformed
        report is logged and taken as none: it must never fail the pass.
        """
        held = cache.STORE.progress(namespace, name)
        if held is UNKNOWN:
            try:
                cm = _json(self.core.read_namespaced_config_map(name, namespace, _preload_content=False))
            except ApiException as e:
                if e.status == 404:
                    return None
                raise
            held = (cm.get("data") or {}).get(PROGRESS_KEY)
        return parse_progress(held, f"{namespace}/{name}")

    def scale_up_triggered(self, namespace: str) -> set[str]:
        """Names of the pods in `namespace` a cluster autoscaler is adding a node for (a TriggeredScaleUp event).

        Asked only while a worker is unschedulable. An operator that may not list events finds none: the
        worker then waits unschedulableSeconds like any other."""
        try:
            body = _json(self.core.list_namespaced_event(
                namespace, field_selector="reason=TriggeredScaleUp,involvedObject.kind=Pod", _preload_content=False))
        except ApiException as e:
            if e.status in (401, 403):
                return set()
            raise
        return {str((e.get("involvedObject") or {}).get("name", "")) for e in body.get("items") or []}

    def autoscalers(self, namespace: str, job: str) -> list[str]:
        """HorizontalPodAutoscalers in `namespace` whose scaleTargetRef names the job (none when the operator
        may not list them). Listed at most once per `HPA_RECHECK_SECONDS` per namespace."""
        now = time.monotonic()
        with _hpa_lock:
            cached = _hpas.get(namespace)
        if cached is None or now - cached[0] >= HPA_RECHECK_SECONDS:
            api = client.AutoscalingV2Api(self.apis)
            try:
                items = _json(api.list_namespaced_horizontal_pod_autoscaler(namespace, _preload_content=False))
                targets = [(str(h["metadata"]["name"]), h.get("spec", {}).get("scaleTargetRef") or {})
                           for h in items.get("items") or []]
            except ApiException as e:
                if e.status not in (401, 403, 404):
                    raise
                targets = []  # not allowed (or no autoscaling/v2 here): nothing to detect
            cached = (now, targets)
            with _hpa_lock:
                _hpas[namespace] = cached
        return sorted(name for name, ref in cached[1] if ref.get("kind") == KIND and ref.get("name") == job
                      and str(ref.get("apiVersion", "")).split("/")[0] == GROUP)

    def event(self, job: dict[str, Any], reason: str, message: str, kind: str = "Normal") -> None:
        """Record a Kubernetes Event on the job: stamped now, posted by `events.POSTER`'s threads (the pass goes on)."""
        meta = job["metadata"]
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        body = {
            "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
            "involvedObject": {"apiVersion": f"{GROUP}/{VERSION}", "kind": KIND,
                               "name": meta["name"], "namespace": meta["namespace"], "uid": meta["uid"]},
            "reason": reason, "message": message, "type": kind, "source": {"component": "dstj-operator"},
            "firstTimestamp": now, "lastTimestamp": now, "count": 1,
        }
        core = self.core

        def post() -> None:
            try:
                core.create_namespaced_event(meta["namespace"], body, _preload_content=False)  # the answer is unread
            except ApiException as e:
                log.warning("could not record event %s: %s", reason, e.reason)

        events.POSTER.submit(post)
