"""kopf handlers: thin; they call `reconcile` and write the status only when it changed.

One timer per job is the only writer: kopf runs it as one task per object, so two passes over
the same job never overlap (change handlers beside it would run concurrently and duplicate pods).

Run with `python -m dstj_operator` (or `kopf run -m dstj_operator.handlers`).
"""

from __future__ import annotations

import logging
from typing import Any

import kopf

from dstj_operator.cluster import Cluster
from dstj_operator.crd import GROUP, PLURAL, VERSION
from dstj_operator.reconcile import reconcile

RECONCILE_INTERVAL_S = 1.0
"""How often each job is reconciled; pod changes are seen within this (and on job events at once)."""


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    """Quiet structured logs; status in .status, not kopf's own annotations."""
    settings.posting.level = logging.WARNING
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="dstj.training.deepseek.dev")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix="dstj.training.deepseek.dev")
    settings.watching.server_timeout = 60
    from kubernetes import config

    try:  # the official client (children, pods) uses the same identity kopf logged in with
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()


def _apply(body: kopf.Body, patch: kopf.Patch) -> None:
    job = {"metadata": dict(body["metadata"]), "spec": dict(body.get("spec") or {}),
           "status": dict(body.get("status") or {})}
    status = reconcile(Cluster.connect(), job)
    if status != job["status"]:
        patch["status"] = status


@kopf.timer(GROUP, VERSION, PLURAL, interval=RECONCILE_INTERVAL_S, idle=0)
def periodic(body: kopf.Body, patch: kopf.Patch, **_: Any) -> None:
    """Reconcile every job on a short timer: pods, membership, progress."""
    _apply(body, patch)
