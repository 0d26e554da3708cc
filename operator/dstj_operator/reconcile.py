"""One reconcile pass of a DeepSeekTrainingJob: read, decide, create or delete, compute status.

Stateless and idempotent: every fact comes from the cluster, children are created only when
absent, and pod names carry a random suffix, so a second pass (or a restarted operator) makes
no duplicates. Returns the new status; the handler writes it only when it changed.
"""

from __future__ import annotations

import copy
import logging
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from dstj_api import Membership, format_validation_error
from dstj_operator import children, conditions, metrics
from dstj_operator.cluster import Cluster
from dstj_operator.decide import EndKind, join_overdue, missing_indices, next_membership, observe, seated
from dstj_operator.spec import DeepSeekTrainingJobSpec, parse_spec

log = logging.getLogger(__name__)
COUNTED_KEEP = 200
"""How many ended pod names the status remembers, so each end is counted once."""


@dataclass(slots=True)
class Outcome:
    """What one pass decided: the status to write, and when to look at the job again (None: on events only)."""

    status: dict[str, Any]
    requeue_after: float | None = None
    delete_job: bool = False

    def later(self, seconds: float) -> None:
        """Ask for another pass in `seconds` (the earliest request wins)."""
        self.requeue_after = seconds if self.requeue_after is None else min(self.requeue_after, seconds)


def _suffix() -> str:
    return secrets.token_hex(3)


def _age(stamp: str | None) -> float:
    """Seconds since an RFC 3339 time written by `conditions.now` (0 when unset)."""
    if not stamp:
        return 0.0
    then = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    return (datetime.now(UTC) - then).total_seconds()


def _finish(cluster: Cluster, job: dict[str, Any], out: Outcome, spec: DeepSeekTrainingJobSpec | None) -> Outcome:
    """A finished job: workers removed, and deleted itself once its TTL has passed."""
    ns, name = job["metadata"]["namespace"], job["metadata"]["name"]
    for p in cluster.pods(ns, f"{children.JOB_LABEL}={name}"):
        if not p["metadata"].get("deletionTimestamp"):
            cluster.delete_pod(ns, p["metadata"]["name"])
    ttl = spec.ttl_seconds_after_finished if spec else None
    if ttl is not None:
        left = ttl - _age(out.status.get("completionTime"))
        if left <= 0:
            out.delete_job = True
        else:
            out.later(left)
    return out


def _fail(cluster: Cluster, job: dict[str, Any], out: Outcome, spec: DeepSeekTrainingJobSpec | None,
          reason: str, message: str) -> Outcome:
    status = out.status
    conditions.set_condition(status["conditions"], conditions.FAILED, True, reason, message)
    conditions.set_condition(status["conditions"], conditions.RUNNING, False, reason, message)
    status["phase"] = "Failed"
    status.setdefault("completionTime", conditions.now())
    cluster.event(job, "Failed", f"{reason}: {message}", "Warning")
    return _finish(cluster, job, out, spec)


def _ensure_children(cluster: Cluster, job: dict[str, Any], spec: DeepSeekTrainingJobSpec) -> None:
    objs = [children.trainer_config_map(job, spec), children.rendezvous_service(job, spec),
            children.workers_service(job), *children.worker_rbac(job), children.progress_config_map(job),
            children.disruption_budget(job, spec), children.rendezvous_network_policy(job, spec)]
    pvc = children.checkpoint_pvc(job, spec)
    for obj in [*objs, *([pvc] if pvc else [])]:
        if cluster.ensure(obj):
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


def reconcile(cluster: Cluster, job: dict[str, Any]) -> Outcome:
    """Bring the job's children toward its spec; return the status it should have."""
    meta = job["metadata"]
    ns = meta["namespace"]
    status: dict[str, Any] = copy.deepcopy(job.get("status") or {})
    out = Outcome(status)
    conds: list[dict[str, Any]] = status.setdefault("conditions", [])
    status["observedGeneration"] = meta.get("generation")
    status["selector"] = _selector(job, "worker")
    try:
        spec, ignored = parse_spec(job.get("spec") or {})
    except ValidationError as e:
        if status.get("phase") == "Failed":
            return out
        return _fail(cluster, job, out, None, "InvalidSpec", format_validation_error(e, "spec").replace("\n", " "))
    if ignored and status.get("ignoredFields") != ignored:
        cluster.event(job, "UnknownFields", f"ignored fields this operator does not know: {', '.join(ignored)}; "
                      "upgrade the operator to the CRD's version", "Warning")
    if ignored:
        status["ignoredFields"] = ignored
    else:
        status.pop("ignoredFields", None)  # absent, not null: a null would differ from the stored status forever
    if status.get("phase") in ("Succeeded", "Failed"):
        return _finish(cluster, job, out, spec)

    status.setdefault("startTime", conditions.now())
    if spec.active_deadline_seconds is not None:
        left = spec.active_deadline_seconds - _age(status["startTime"])
        if left <= 0:
            return _fail(cluster, job, out, spec, "DeadlineExceeded",
                         f"running longer than activeDeadlineSeconds ({spec.active_deadline_seconds})")
        out.later(left)
    conditions.set_condition(conds, conditions.CREATED, True, "ChildrenCreated", "config, services and RBAC exist")
    _ensure_children(cluster, job, spec)
    _ensure_rendezvous(cluster, job, spec)

    pods = cluster.pods(ns, _selector(job, "worker"))
    workers = [observe(p, children.INDEX_LABEL) for p in pods]
    counted: list[str] = status.setdefault("countedPods", [])
    for w in workers:
        end, reason = w.end, w.reason
        if end is None and w.terminating and w.index < spec.replicas and not spec.suspend:
            # Deleted by someone else (a user, a drain, a spot controller) while wanted: a preemption.
            end, reason = EndKind.PREEMPTED, "deleted"
        # MISCONFIGURED counts as a crash (its message in the event) until the job fails on it directly.
        if end in (EndKind.PREEMPTED, EndKind.CRASHED, EndKind.MISCONFIGURED) and w.name not in counted:
            key = "preemptions" if end is EndKind.PREEMPTED else "crashes"
            status[key] = status.get(key, 0) + 1
            counted.append(w.name)
            metrics.WORKER_ENDS.labels(reason="preempted" if key == "preemptions" else "crashed").inc()
            if key == "crashes":
                status["lastCrashTime"] = conditions.now()
            cluster.event(job, "WorkerPreempted" if end is EndKind.PREEMPTED else "WorkerCrashed",
                          f"{w.name} ended: {reason}; replacing it", "Normal" if key == "preemptions" else "Warning")
    del counted[:-COUNTED_KEEP]

    if status.get("crashes", 0) > spec.fault_policy.crash_budget:
        return _fail(cluster, job, out, spec, "CrashBudgetExceeded",
                     f"{status['crashes']} crashes exceed faultPolicy.crashBudget ({spec.fault_policy.crash_budget})")

    report = cluster.progress(ns, children.names(job)["progress"])
    progress = report.model_dump(by_alias=True, mode="json") if report else None
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
            return _finish(cluster, job, out, spec)

    # Workers: replace ended ones under new names at once; never wait for a Terminating pod.
    for w in workers:
        if (w.end is not None or w.index >= spec.replicas or spec.suspend) and not w.terminating:
            cluster.delete_pod(ns, w.name)
    backoff = spec.fault_policy.backoff_seconds - _age(status.get("lastCrashTime"))
    if status.get("lastCrashTime") and backoff > 0:
        # After a crash, wait before starting replacements: a crash loop must not spin.
        conditions.set_condition(conds, conditions.RESTARTING, True, "CrashBackoff",
                                 f"waiting {spec.fault_policy.backoff_seconds}s after a crash before replacing workers")
        out.later(backoff)
    elif not spec.suspend:
        conditions.set_condition(conds, conditions.RESTARTING, False, "NoBackoff", "")
        for index in missing_indices(workers, spec.replicas):
            pod = children.worker_pod(job, spec, index, _suffix())
            cluster.create_if_absent(pod)
            cluster.event(job, "WorkerCreated", f"created {pod['metadata']['name']} for index {index}")

    current = Membership.model_validate(status["membership"]) if status.get("membership") else None
    endpoint = f"{children.names(job)['rdzv']}:{spec.rendezvous.port}"
    live = [w for w in workers if w.end is None and not w.terminating and w.index < spec.replicas]
    if spec.suspend:
        # The running group may commit the checkpoint it takes while stopping (a handoff): nothing lost.
        new = (Membership(generation=(current.generation + 1 if current else 0), world_size=0,
                          state="suspended", rdzv_endpoint=endpoint,
                          handoff_from=current.generation if current else None)
               if current is None or current.state != "suspended" else None)
    else:
        new = next_membership(current, live, spec.replicas, spec.min_replicas, endpoint)
    if new is not None:
        status["membership"] = new.model_dump(by_alias=True, mode="json")
        metrics.GENERATION_BUMPS.inc()
        handoff = f" (handoff from {new.handoff_from})" if new.handoff_from is not None else ""
        cluster.event(job, "GenerationBumped",
                      f"generation {new.generation}: {new.world_size} workers {new.members}{handoff}")

    if status.get("desiredReplicas") not in (None, spec.replicas):
        cluster.event(job, "Scaled", f"replicas {status['desiredReplicas']} -> {spec.replicas}")
    status["desiredReplicas"] = spec.replicas
    # Ready, or a member still training whose probe failed (a loaded node): see decide.seated.
    ready = len(seated(current if new is None else new, live))
    status["replicas"] = len(live)
    status["readyReplicas"] = ready
    if spec.suspend and workers:
        # Suspended only once every worker is gone: until then they are writing their final checkpoint.
        conditions.set_condition(conds, conditions.SUSPENDED, True, "Stopping",
                                 f"spec.suspend is true; {len(workers)} workers checkpointing and stopping")
    elif spec.suspend:
        status["phase"] = "Suspended"
        conditions.set_condition(conds, conditions.SUSPENDED, True, "SuspendedBySpec",
                                 "spec.suspend is true; all workers stopped after a checkpoint")
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
        _check_stall(cluster, job, spec, out, running)
        _check_join(cluster, job, spec, out, running)
    return out


def _republish(status: dict[str, Any]) -> Membership:
    """Publish the current members again as the next generation: fresh rendezvous keys, no handoff."""
    current = Membership.model_validate(status["membership"])
    again = current.model_copy(update={"generation": current.generation + 1, "handoff_from": None})
    status["membership"] = again.model_dump(by_alias=True, mode="json")
    metrics.GENERATION_BUMPS.inc()
    return again


def _check_stall(cluster: Cluster, job: dict[str, Any], spec: DeepSeekTrainingJobSpec, out: Outcome,
                 running: bool) -> None:
    """Stalled: running, but no progress report for faultPolicy.stallSeconds (since the later of the last
    report and the current generation's start)."""
    status, policy = out.status, spec.fault_policy
    membership = status.get("membership") or {}
    if membership and status.get("stallGeneration") != membership.get("generation"):
        status["stallGeneration"], status["generationTime"] = membership.get("generation"), conditions.now()
    progress = status.get("progress") or {}
    quiet = min(_age(progress.get("updated")) if progress.get("updated") else float("inf"),
                _age(status.get("generationTime")))
    stalled = running and quiet >= policy.stall_seconds
    was = any(c["type"] == conditions.STALLED and c["status"] == "True" for c in status["conditions"])
    conditions.set_condition(status["conditions"], conditions.STALLED, stalled,
                             "NoProgress" if stalled else "Progressing",
                             # No live number in the message: each change would be a status write.
                             f"no progress report for faultPolicy.stallSeconds ({policy.stall_seconds}s)"
                             if stalled else "")
    if stalled and not was:
        cluster.event(job, "Stalled", f"no progress for {int(quiet)}s", "Warning")
        if policy.restart_on_stall and membership:
            bumped = _republish(status)
            cluster.event(job, "GenerationBumped", f"generation {bumped.generation}: restarted after a stall")
    if running:
        out.later(max(1.0, policy.stall_seconds - quiet))


def _check_join(cluster: Cluster, job: dict[str, Any], spec: DeepSeekTrainingJobSpec, out: Outcome,
                running: bool) -> None:
    """A generation that sent no report within rendezvous.joinTimeoutSeconds is published again (fresh keys)."""
    status, timeout = out.status, spec.rendezvous.join_timeout_seconds
    if not running or not status.get("membership"):
        return
    current = Membership.model_validate(status["membership"])
    if status.get("stallGeneration") != current.generation:
        return  # published in this very pass (a stall restart): its clock starts with the next pass
    age = _age(status.get("generationTime"))
    report = (status.get("progress") or {}).get("generation")
    if join_overdue(current, report, age, timeout):
        again = _republish(status)
        cluster.event(job, "JoinTimeout", f"generation {current.generation} sent no progress in "
                      f"rendezvous.joinTimeoutSeconds ({timeout}s); generation {again.generation}: same members, "
                      "fresh rendezvous", "Warning")
    elif report != current.generation:
        out.later(max(1.0, timeout - age))
