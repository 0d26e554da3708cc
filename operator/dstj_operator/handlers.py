"""kopf handlers: thin; every event that concerns a job triggers one reconcile pass of that job.

Events of the job itself, of its pods and of its progress ConfigMap all call `sync(job)`, which
reads the job fresh, reconciles it and writes the status only when it changed. A lock per job
keeps passes from overlapping (they come from different watch streams), so a pass always sees the
pods the previous one created. Events that arrive while a pass of the same job is already waiting
for the lock add nothing: that pass has not read the cluster yet and will see them, so they return
at once instead of queueing one more full pass each (a busy job's progress reports would otherwise
pile up behind its lock, and a stopping operator would work through the pile).

Time-based work (crash backoff, deadline, TTL, stall) asks `requeue` for a later pass instead of
kopf timers: those would put a finalizer on every job, and a job must be deletable (by the garbage
collector, by GitOps) even while the operator is down.

Run with `python -m dstj_operator`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from collections.abc import Mapping
from typing import Any, cast

import kopf
from kubernetes import client
from kubernetes.client.rest import ApiException

from dstj_operator import metrics
from dstj_operator.children import JOB_LABEL
from dstj_operator.cluster import Cluster, shared_api_client
from dstj_operator.crd import GROUP, PLURAL, VERSION
from dstj_operator.passes import PASSES
from dstj_operator.reconcile import reconcile
from dstj_operator.requeue import Requeue

log = logging.getLogger(__name__)
_locks: defaultdict[tuple[str, str], threading.Lock] = defaultdict(threading.Lock)
_waiting: set[tuple[str, str]] = set()
"""Jobs with a pass queued for the lock that has not read the cluster yet."""
_waiting_lock = threading.Lock()


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    """Quiet event posting; no peering (leader election is ours, see `leader`)."""
    settings.posting.level = logging.WARNING
    settings.watching.server_timeout = 60
    # The CRD is installed before the operator (Helm's crds/), so no CRD or namespace scanning: the
    # least-privilege RBAC grants neither, and kopf would retry the denied lists with errors.
    settings.scanning.disabled = True


def sync(namespace: str, name: str) -> None:
    """One reconcile pass of a job, serialised per job; writes the status only when it changed.

    Returns at once when a pass of the job is already queued and has not started reading.
    """
    key = (namespace, name)
    with _waiting_lock:
        if key in _waiting:
            metrics.COALESCED_EVENTS.inc()
            return
        _waiting.add(key)
    with PASSES.pending(), _locks[key]:  # PASSES: /healthz fails when pending passes stop finishing
        with _waiting_lock:
            _waiting.discard(key)  # from here on this pass reads the cluster: later events need another
        _sync_locked(namespace, name)


def _sync_locked(namespace: str, name: str) -> None:
    """The pass itself; the caller holds the job's lock."""
    api = client.CustomObjectsApi(shared_api_client())
    try:
        job = cast(dict[str, Any], api.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name))
    except ApiException as e:
        if e.status == 404:
            metrics.job_phase(namespace, name, None)
            return  # deleted: the garbage collector removes its children
        raise
    if job["metadata"].get("deletionTimestamp"):
        return
    started = time.perf_counter()
    try:
        out = reconcile(Cluster.connect(), job)
    except Exception:
        metrics.RECONCILE_ERRORS.inc()
        raise
    finally:
        metrics.RECONCILE_SECONDS.observe(time.perf_counter() - started)
    if out.status != (job.get("status") or {}):
        api.patch_namespaced_custom_object_status(GROUP, VERSION, namespace, PLURAL, name,
                                                  {"status": out.status})
    metrics.job_phase(namespace, name, out.status.get("phase"))
    if out.delete_job:
        log.info("deleting %s/%s: ttlSecondsAfterFinished has passed", namespace, name)
        api.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name,
                                            propagation_policy="Background")
    elif out.requeue_after is not None:
        _requeue().after((namespace, name), out.requeue_after)


_requeue_instance: Requeue | None = None


def _requeue() -> Requeue:
    global _requeue_instance
    if _requeue_instance is None:
        _requeue_instance = Requeue(sync)
    return _requeue_instance


@kopf.on.event(GROUP, VERSION, PLURAL)
def job_event(*, type: str, name: str, namespace: str | None, **_: Any) -> None:
    """The job was created or changed (spec, scale, its own status)."""
    if not namespace:
        return
    if type == "DELETED":
        metrics.job_phase(namespace, name, None)
    else:
        sync(namespace, name)


@kopf.on.event("", "v1", "pods", labels={JOB_LABEL: kopf.PRESENT})
@kopf.on.event("", "v1", "configmaps", labels={JOB_LABEL: kopf.PRESENT})
def child_event(*, labels: Mapping[str, str], namespace: str | None, **_: Any) -> None:
    """A worker or store pod, or the progress report, changed: reconcile its job."""
    if namespace:
        sync(namespace, labels[JOB_LABEL])
