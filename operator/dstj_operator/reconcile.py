"""One reconcile pass of a DeepSeekTrainingJob: read, decide, create or delete, compute status.

Stateless and idempotent: every fact comes from the cluster, children are created only when
absent, and pod names carry a random suffix, so a second pass (or a restarted operator) makes
no duplicates. Returns the new status; the handler writes it only when it changed.
"""

from __future__ import annotations

import copy
import logging
import secrets
from typing import Any

from pydantic import ValidationError

from dstj_api import Membership, format_validation_error
from dstj_operator import children, conditions
from dstj_operator.cluster import Cluster
from dstj_operator.decide import EndKind, missing_indices, next_membership, observe
from dstj_operator.spec import DeepSeekTrainingJobSpec

log = logging.getLogger(__name__)
COUNTED_KEEP = 200
"""How many ended pod names the status remembers, so each end is counted once."""


def _suffix() -> str:
    return secrets.token_hex(3)


def _ensure_children(cluster: Cluster, job: dict[str, Any], spec: DeepSeekTrainingJobSpec) -> None:
    objs = [children.trainer_config_map(job, spec), children.rendezvous_service(job, spec),
            children.workers_service(job), *children.worker_rbac(job), children.progress_config_map(job),
            children.disruption_budget(job, spec), children.rendezvous_network_policy(job, spec)]
    pvc = children.checkpoint_pvc(job, spec)
    for obj in [*objs, *([pvc] if pvc else [])]:
        if cluster.create_if_absent(obj):
            log.info("created %s/%s", obj["kind"], obj["metadata"]["name"])


def _selector(job: dict[str, Any], role: str) -> str:
    return f"{children.JOB_LABEL}={job['metadata']['name']},{children.ROLE_LABEL}={role}"


def _ensure_rendezvous(cluster: Cluster, job: dict[str, Any], spec: DeepSeekTrainingJobSpec) -> None:
    ns = job["metadata"]["namespace"]
    pods = cluster.pods(ns, _selector(job, "rendezvous"))
    live = [p for p in pods if not p["metadata"].get("deletionTimestamp")
            and (p.get("status") or {}).get("phase") not in ("Failed", "Succeeded")]
    for p in pods:
        if p not in live and not p["metadata"].get("deletionTimestamp"):
            cluster.delete_pod(ns, p["metadata"]["name"], 0)
    if not live:
        cluster.create_if_absent(children.rendezvous_pod(job, spec, _suffix()))
        cluster.event(job, "RendezvousCreated", "started the rendezvous store pod")


def reconcile(cluster: Cluster, job: dict[str, Any]) -> dict[str, Any]:
    """Bring the job's children toward its spec; return the status it should have."""
    meta = job["metadata"]
    ns = meta["namespace"]
    status: dict[str, Any] = copy.deepcopy(job.get("status") or {})
    conds: list[dict[str, Any]] = status.setdefault("conditions", [])
    status["observedGeneration"] = meta.get("generation")
    status["selector"] = _selector(job, "worker")
    try:
        spec = DeepSeekTrainingJobSpec.model_validate(job.get("spec") or {})
    except ValidationError as e:
        conditions.set_condition(conds, conditions.FAILED, True, "InvalidSpec",
                                 format_validation_error(e, "spec").replace("\n", " "))
        status["phase"] = "Failed"
        return status
    if status.get("phase") in ("Succeeded", "Failed"):
        for p in cluster.pods(ns, f"{children.JOB_LABEL}={meta['name']}"):
            cluster.delete_pod(ns, p["metadata"]["name"])
        return status

    status.setdefault("startTime", conditions.now())
    conditions.set_condition(conds, conditions.CREATED, True, "ChildrenCreated", "config, services and RBAC exist")
    _ensure_children(cluster, job, spec)
    _ensure_rendezvous(cluster, job, spec)

    pods = cluster.pods(ns, _selector(job, "worker"))
    workers = [observe(p, children.INDEX_LABEL) for p in pods]
    counted: list[str] = status.setdefault("countedPods", [])
    for w in workers:
        if w.end in (EndKind.PREEMPTED, EndKind.CRASHED) and w.name not in counted:
            key = "preemptions" if w.end is EndKind.PREEMPTED else "crashes"
            status[key] = status.get(key, 0) + 1
            counted.append(w.name)
            cluster.event(job, "WorkerPreempted" if w.end is EndKind.PREEMPTED else "WorkerCrashed",
                          f"{w.name} ended: {w.reason}; replacing it", "Normal" if key == "preemptions" else "Warning")
    del counted[:-COUNTED_KEEP]

    if status.get("crashes", 0) > spec.fault_policy.crash_budget:
        conditions.set_condition(conds, conditions.FAILED, True, "CrashBudgetExceeded",
                                 f"{status['crashes']} crashes exceed faultPolicy.crashBudget "
                                 f"({spec.fault_policy.crash_budget})")
        status["phase"] = "Failed"
        status["completionTime"] = conditions.now()
        cluster.event(job, "Failed", "crash budget exceeded", "Warning")
        return status

    progress = cluster.progress(ns, children.names(job)["progress"])
    if progress:
        status["progress"] = progress
        status["layout"] = f"{progress.get('expertParallel')}x{progress.get('dataParallel')}"
        if progress.get("state") == "finished" and progress.get("step") == progress.get("totalSteps"):
            conditions.set_condition(conds, conditions.SUCCEEDED, True, "TrainingFinished",
                                     f"trained {progress['step']} steps")
            conditions.set_condition(conds, conditions.RUNNING, False, "TrainingFinished", "finished")
            status["phase"] = "Succeeded"
            status["completionTime"] = conditions.now()
            cluster.event(job, "Succeeded", f"trained {progress['step']} steps; checkpoints kept")
            return status

    # Workers: replace ended ones under new names at once; never wait for a Terminating pod.
    for w in workers:
        if (w.end is not None or w.index >= spec.replicas or spec.suspend) and not w.terminating:
            cluster.delete_pod(ns, w.name)
    if not spec.suspend:
        for index in missing_indices(workers, spec.replicas):
            pod = children.worker_pod(job, spec, index, _suffix())
            cluster.create_if_absent(pod)
            cluster.event(job, "WorkerCreated", f"created {pod['metadata']['name']} for index {index}")

    current = Membership.model_validate(status["membership"]) if status.get("membership") else None
    endpoint = f"{children.names(job)['rdzv']}:{spec.rendezvous.port}"
    live = [w for w in workers if w.end is None and not w.terminating and w.index < spec.replicas]
    if spec.suspend:
        new = (Membership(generation=(current.generation + 1 if current else 0), world_size=0,
                          state="suspended", rdzv_endpoint=endpoint)
               if current is None or current.state != "suspended" else None)
    else:
        new = next_membership(current, live, spec.replicas, spec.min_replicas, endpoint)
    if new is not None:
        status["membership"] = new.model_dump(by_alias=True, mode="json")
        handoff = f" (handoff from {new.handoff_from})" if new.handoff_from is not None else ""
        cluster.event(job, "GenerationBumped",
                      f"generation {new.generation}: {new.world_size} workers {new.members}{handoff}")

    ready = sum(1 for w in live if w.ready)
    status["replicas"] = len(live)
    status["readyReplicas"] = ready
    if spec.suspend:
        status["phase"] = "Suspended"
        conditions.set_condition(conds, conditions.SUSPENDED, True, "SuspendedBySpec", "spec.suspend is true")
    else:
        conditions.set_condition(conds, conditions.SUSPENDED, False, "NotSuspended", "")
        degraded = ready < spec.replicas
        conditions.set_condition(conds, conditions.DEGRADED, degraded,
                                 "WaitingForWorkers" if degraded else "AllWorkersReady",
                                 f"{ready}/{spec.replicas} workers ready (minReplicas {spec.min_replicas})")
        running = ready >= spec.min_replicas and status.get("membership") is not None
        conditions.set_condition(conds, conditions.RUNNING, running, "Training" if running else "Waiting",
                                 f"generation {status.get('membership', {}).get('generation')}" if running
                                 else f"waiting for {spec.min_replicas} ready workers")
        status["phase"] = "Running" if running else "Pending"
    return status
