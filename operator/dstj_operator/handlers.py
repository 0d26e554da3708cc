"""Event handling: thin; every event that concerns a job triggers one reconcile pass of that job.

Events of the job itself and of its children (pods, the progress report, and every other child kind,
watched by the job label, so a child edited or deleted by hand heals at once) all come to `watch_event`,
handed over by the watch streams' hook (`watches`) once the store (`cache`) has them, and queue one
`sync(job)` in `DISPATCH` (`dispatch`: at most one queued per job, none of kopf's per-object machinery).
A pass reads the job and its children from the store, reconciles the job and writes the status only when
it changed. Passes of one job never overlap, and what a pass writes is in the store at once, so a pass
always sees the pods the previous one created. An event that arrives while a pass of its job runs owes
that job one more pass, run by the same thread right after, and returns at once: no thread waits on a
busy job, and further events before that pass starts add nothing (it has not read the store yet and
will see them), so a busy job's progress reports never pile up. kopf opens and keeps the watch streams
(its registrations below say which) and handles the Nodes' events itself.

Time-based work (crash backoff, deadline, TTL, stall) asks `requeue` for a later pass instead of
kopf timers: those would put a finalizer on every job, and a job must be deletable (by the garbage
collector, by GitOps) even while the operator is down.

Run with `python -m dstj_operator`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import kopf
from kubernetes import client
from kubernetes.client.rest import ApiException

from dstj_operator import apierrors, cache, capacity, conditions, lag, metrics
from dstj_operator.children import JOB_LABEL
from dstj_operator.cluster import Cluster, shared_api_client
from dstj_operator.crd import GROUP, PLURAL, VERSION
from dstj_operator.dispatch import Dispatcher
from dstj_operator.pacing import ProgressPacer
from dstj_operator.passes import PASSES
from dstj_operator.patch import merge_patch
from dstj_operator.reconcile import reconcile
from dstj_operator.requeue import Requeue
from dstj_operator.status import JobStatus

log = logging.getLogger(__name__)
_running: set[tuple[str, str]] = set()
"""Jobs with a pass running now (one at a time per job)."""
_waiting: set[tuple[str, str]] = set()
"""Jobs owed one more pass once the running one ends: it has not read the cluster yet, so it sees every event
that came meanwhile."""
_waiting_lock = threading.Lock()
_transient_failures: dict[tuple[str, str], int] = {}
"""Job -> passes in a row that failed transiently (throttled, 5xx, no connection); dropped on success."""
HANDLER_THREADS = 32
"""Threads passes run in (`DISPATCH`). A pass spends most of its time waiting on its writes (the status, a pod
create), so a fleet's passes need threads, not cores: with six (kopf's default for its handlers on two cores), on
an API server that took about a second a write, 100 jobs' events waited 26 s (median) for a thread before their
handler ran; with 32, 0.06 s (benchmarks/README.md, "Where deletion -> generation went")."""
PACER = ProgressPacer()
"""When each job's status was last written: routine progress is mirrored at most every `PACER.every` seconds
(`DSTJ_STATUS_PROGRESS_SECONDS`, set at start by `__main__`)."""
RECORD_TRANSIENT_AFTER = 5
"""Transient failures in a row after which the job's Synced condition says so (one throttled pass is noise,
and writing it would add a request to a throttled API server)."""


class NoDiffBase(kopf.DiffBaseStorage):
    """No "last handled" essence: this operator has only event handlers, which never diff.

    kopf builds the essence of every object on every event (a deep copy of the whole body, `managedFields`
    included) for its change handlers' diff, whether there are change handlers or not: for a pod event, more CPU
    than the handler's pass."""

    def build(self, *, body: kopf.Body, extra_fields: Any = None) -> kopf.BodyEssence:
        return kopf.BodyEssence()

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        return None

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        return None


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    """Quiet event posting; no peering (leader election is ours, see `leader`); no diff base (`NoDiffBase`)."""
    settings.posting.level = logging.WARNING
    settings.persistence.diffbase_storage = NoDiffBase()
    settings.watching.server_timeout = 60
    # The CRD is installed before the operator (Helm's crds/), so no CRD or namespace scanning: the
    # least-privilege RBAC grants neither, and kopf would retry the denied lists with errors.
    settings.scanning.disabled = True
    # Children are watched by the job label on the API server, not only in this process: kopf's `labels=`
    # handler filters run here, after the server has sent every pod and ConfigMap of the cluster; its
    # `watching.label_selectors` go into the list and watch requests themselves (kopf 1.45,
    # `_cogs/clients/watching.py` and `fetching.py`), so other workloads' churn never reaches the operator.
    for group, version, plural in CHILD_KINDS:
        settings.watching.label_selectors[group, version, plural] = JOB_LABEL


def sync(namespace: str, name: str) -> None:
    """Reconcile a job: one pass now, or, while a pass of it runs, one more right after that pass (in its
    thread: this call returns at once, so no thread waits on a busy job); writes the status only when it
    changed."""
    key = (namespace, name)
    with _waiting_lock:
        if key in _running:
            if key in _waiting:
                metrics.COALESCED_EVENTS.inc()
            _waiting.add(key)
            return
        _running.add(key)
    try:
        while True:
            with PASSES.pending():  # /healthz fails when pending passes stop finishing
                try:
                    _sync_locked(namespace, name)
                except Exception as e:
                    if not (apierrors.is_transient(e) or apierrors.is_refusal(e)):
                        raise
                    _retry_later(key, e)
                else:
                    _transient_failures.pop(key, None)
            with _waiting_lock:
                if key not in _waiting:
                    _running.discard(key)
                    return
                _waiting.discard(key)  # from here on the next pass reads the cluster: later events need another
    except BaseException:
        with _waiting_lock:
            _running.discard(key)
            owed = key in _waiting
            _waiting.discard(key)
        if owed:  # an event came during the failed pass: it still gets its pass
            _requeue().after(key, 0)
        raise


def _retry_later(key: tuple[str, str], error: BaseException) -> None:
    """A pass that failed transiently (throttled, a 5xx, no connection) or was refused asks for its own retry.

    No event may come to trigger one: the failed pass may have been the last its job's events asked for.
    The delay grows with the failures in a row and is never shorter than the server's Retry-After."""
    failures = _transient_failures.get(key, 0) + 1
    _transient_failures[key] = failures
    delay = apierrors.retry_delay(error, failures)
    metrics.PASS_RETRIES.labels(cause=apierrors.cause(error)).inc()
    if apierrors.is_transient(error):
        log.info("pass of %s/%s failed transiently (%d in a row), retrying in %.1f s: %s", *key, failures, delay,
                 str(error).splitlines()[0][:300] if str(error) else type(error).__name__)
    else:
        log.warning("pass of %s/%s was refused (%d in a row), retrying in %.1f s: %s (a 403 names the permission "
                    "the operator's account lacks: check the chart's RBAC)", *key, failures, delay,
                    apierrors.describe(error)[1][:300])
    _requeue().after(key, delay)


def _sync_locked(namespace: str, name: str) -> None:
    """The pass itself; the caller has made it the job's only one running."""
    since = lag.LAG.reading((namespace, name))  # before the read: what arrives from now on is the next pass's
    api = client.CustomObjectsApi(shared_api_client())
    cluster = Cluster.connect()
    job = cluster.job(namespace, name)  # from the watch streams' store (`cache`) once they have listed
    if job is None:
        PACER.forget((namespace, name))
        metrics.job_phase(namespace, name, None)
        metrics.job_workers(namespace, name, None)
        capacity.waiting((namespace, name), False)
        return  # deleted: the garbage collector removes its children
    if job["metadata"].get("deletionTimestamp"):
        return
    started = time.perf_counter()
    try:
        out = reconcile(cluster, job)
    except Exception as e:
        metrics.RECONCILE_ERRORS.inc()
        persists = _transient_failures.get((namespace, name), 0) + 1 >= RECORD_TRANSIENT_AFTER
        if not apierrors.is_api_error(e) or (apierrors.is_transient(e) and not persists):
            raise  # `sync` retries a transient failure; one that persists is recorded on the job below
        _record_api_error(api, cluster, job, e)
        return
    finally:
        metrics.RECONCILE_SECONDS.observe(time.perf_counter() - started)
    key = (namespace, name)
    try:
        patch = merge_patch(job.get("status") or {}, out.status.dump())
        held = None if out.events else PACER.hold(key, patch, time.monotonic())
        if held is not None:  # only the report's step and loss moved: a later pass mirrors them (`pacing`)
            metrics.STATUS_WRITES_HELD.inc()
            _requeue().after(key, held)
        elif patch:
            _patch_status(api, job, patch)
            PACER.wrote(key, time.monotonic())
            lag.LAG.written(since)
    except ApiException as e:
        if e.status != 409:
            raise
        # The job changed since this pass read it: its event brings a pass over the new version.
        log.debug("status of %s/%s changed meanwhile; the next pass writes it", namespace, name)
        _requeue().after((namespace, name), 0.5)
        return
    for event in out.events:  # only now: each describes the status just written
        cluster.event(job, event.reason, event.message, event.type)
    metrics.job_phase(namespace, name, out.status.phase)
    metrics.job_workers(namespace, name, out.status)
    if out.delete_job:
        log.info("deleting %s/%s: ttlSecondsAfterFinished has passed", namespace, name)
        api.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name,
                                            propagation_policy="Background")
    elif out.requeue_after is not None:
        _requeue().after((namespace, name), out.requeue_after)


def _write_status(api: Any, job: dict[str, Any], status: dict[str, Any]) -> None:
    """Patch the status to `status` when it differs."""
    patch = merge_patch(job.get("status") or {}, status)
    if patch:
        _patch_status(api, job, patch)


def _patch_status(api: Any, job: dict[str, Any], patch: dict[str, Any]) -> None:
    """Apply a status merge patch, conditional on the version the pass read; the answer goes into the store at
    once, so the next pass reads what this one wrote."""
    meta = job["metadata"]
    cache.STORE.wrote(api.patch_namespaced_custom_object_status(
        GROUP, VERSION, meta["namespace"], PLURAL, meta["name"],
        {"metadata": {"resourceVersion": meta["resourceVersion"]}, "status": patch}))


def _record_api_error(api: Any, cluster: Cluster, job: dict[str, Any], error: BaseException) -> None:
    """A pass that failed on an API error: the Synced condition quotes the API server, and a retry follows."""
    meta = job["metadata"]
    reason, message = apierrors.describe(error)
    log.warning("pass of %s/%s failed: %s", meta["namespace"], meta["name"], message)
    status = JobStatus.read(job.get("status"))
    status.phase = status.phase or "Pending"
    status.bookkeeping.sync_failures += 1
    conditions.set_condition(status.conditions, conditions.SYNCED, False, reason, message)
    try:
        _write_status(api, job, status.dump())
    except ApiException as e:
        log.warning("could not record the failure on %s/%s: %s", meta["namespace"], meta["name"], e.reason)
    else:
        cluster.event(job, "SyncFailed", f"{reason}: {message}", "Warning")
    _requeue().after((meta["namespace"], meta["name"]), max(apierrors.retry_after(status.bookkeeping.sync_failures),
                                                          apierrors.server_retry_after(error) or 0.0))


_requeue_instance: Requeue | None = None


def _requeue() -> Requeue:
    global _requeue_instance
    if _requeue_instance is None:
        _requeue_instance = Requeue(sync)
    return _requeue_instance


CHILD_KINDS = [("", "v1", "pods"), ("", "v1", "configmaps"), ("", "v1", "services"), ("", "v1", "serviceaccounts"),
               ("", "v1", "persistentvolumeclaims"), ("rbac.authorization.k8s.io", "v1", "roles"),
               ("rbac.authorization.k8s.io", "v1", "rolebindings"), ("policy", "v1", "poddisruptionbudgets"),
               ("networking.k8s.io", "v1", "networkpolicies")]
"""Every kind of child, watched by the job label: a pod or a report changed, or a child was edited or deleted."""


DISPATCHED = frozenset({PLURAL, *(plural for _, _, plural in CHILD_KINDS)})
"""The kinds whose events `watch_event` takes: the job's and its children's."""


def watch_event(plural: str, raw: Mapping[str, Any]) -> bool:
    """One raw event of a watch stream (type None: from its listing), in the store already: queue a pass of the job
    it concerns. False for a kind kopf's own handlers take (Nodes)."""
    if plural not in DISPATCHED:
        return False
    obj = raw.get("object") or {}
    key = lag.job_of(plural, obj)
    if key is None:
        return True
    if raw.get("type") == "DELETED":
        if plural == PLURAL:
            lag.LAG.forget(key)  # its pass finds it gone and drops its metrics
        elif plural == "pods" and (obj.get("spec") or {}).get("nodeName"):
            # A deleted pod that was bound to a node leaves room there: jobs waiting to grow look again (a pod that
            # never got a node frees nothing, and the autoscaler's own removal of one must not retry growth at once).
            for other in capacity.signal(key[0], datetime.now(UTC)):
                if other != key:
                    _requeue().after(other, 0)
    DISPATCH.submit(key)
    return True


def _dispatched(key: tuple[str, str]) -> None:
    lag.LAG.handled(key)
    sync(*key)


DISPATCH = Dispatcher(_dispatched, HANDLER_THREADS)
"""Where passes that events ask for run: at most one queued per job."""


def _kopf_event(*, event: Mapping[str, Any], resource: Any, **_: Any) -> None:
    """kopf's handler for the dispatched kinds: its registration opens their streams, and the events reach it only
    where the watch hook is not installed (`watches.WatchTracker` hands them to `watch_event` itself)."""
    watch_event(resource.plural, event)


def node_event(*, type: str | None, body: Mapping[str, Any], **_: Any) -> None:
    """A Node was added or changed: one that became schedulable signals capacity to every job waiting to grow.

    Registered only where the operator watches the whole cluster (`register_node_watch`): a namespaced
    operator may not watch Nodes, and its jobs grow again after their growth backoff alone."""
    if capacity.node_seen(type, body):
        waiting = capacity.signal(None, datetime.now(UTC))
        log.info("node %s is schedulable: %d job(s) waiting to grow look again", body["metadata"]["name"],
                 len(waiting))
        for key in waiting:
            _requeue().after(key, 0)


def register_node_watch() -> None:
    """Watch Nodes for capacity signals (spec.autoscaling); call before kopf starts, cluster-wide only."""
    kopf.on.event("", "v1", "nodes")(node_event)


kopf.on.event(GROUP, VERSION, PLURAL)(_kopf_event)
for _group, _version, _plural in CHILD_KINDS:
    kopf.on.event(_group, _version, _plural, labels={JOB_LABEL: kopf.PRESENT})(_kopf_event)
