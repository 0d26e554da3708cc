"""kopf handlers: thin; every event that concerns a job triggers one reconcile pass of that job.

Events of the job itself, of its pods and of its progress ConfigMap all call `sync(job)`, which
reads the job fresh, reconciles it and writes the status only when it changed. A lock per job
keeps passes from overlapping (they come from different watch streams), so a pass always sees the
pods the previous one created. No timers: kopf would put a finalizer on every job for them, and a
job must be deletable (by the garbage collector, by GitOps) even while the operator is down.

Run with `python -m dstj_operator`.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import defaultdict
from collections.abc import Mapping
from typing import Any, cast

import kopf
from kubernetes import client
from kubernetes.client.rest import ApiException

from dstj_operator.children import JOB_LABEL
from dstj_operator.cluster import Cluster
from dstj_operator.crd import GROUP, PLURAL, VERSION
from dstj_operator.reconcile import reconcile

log = logging.getLogger(__name__)
_locks: defaultdict[tuple[str, str], threading.Lock] = defaultdict(threading.Lock)


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    """Quiet logs; the official client (children, pods) uses the identity kopf logged in with."""
    settings.posting.level = logging.WARNING
    settings.watching.server_timeout = 60
    from kubernetes import config

    try:
        config.load_incluster_config()
    except config.ConfigException:
        # The client reads KUBECONFIG once, at import; read it now so a later setting counts.
        config.load_kube_config(config_file=os.environ.get("KUBECONFIG"))


def sync(namespace: str, name: str) -> None:
    """One reconcile pass of a job, serialised per job; writes the status only when it changed."""
    with _locks[(namespace, name)]:
        api = client.CustomObjectsApi()
        try:
            job = cast(dict[str, Any], api.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name))
        except ApiException as e:
            if e.status == 404:
                return  # deleted: the garbage collector removes its children
            raise
        if job["metadata"].get("deletionTimestamp"):
            return
        status = reconcile(Cluster.connect(), job)
        if status != (job.get("status") or {}):
            api.patch_namespaced_custom_object_status(GROUP, VERSION, namespace, PLURAL, name, {"status": status})


@kopf.on.event(GROUP, VERSION, PLURAL)
def job_event(*, type: str, name: str, namespace: str | None, **_: Any) -> None:
    """The job was created or changed (spec, scale, its own status)."""
    if type != "DELETED" and namespace:
        sync(namespace, name)


@kopf.on.event("", "v1", "pods", labels={JOB_LABEL: kopf.PRESENT})
@kopf.on.event("", "v1", "configmaps", labels={JOB_LABEL: kopf.PRESENT})
def child_event(*, labels: Mapping[str, str], namespace: str | None, **_: Any) -> None:
    """A worker or store pod, or the progress report, changed: reconcile its job."""
    if namespace:
        sync(namespace, labels[JOB_LABEL])
