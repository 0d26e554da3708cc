"""One reconcile pass of a DeepSeekTrainingJob: read, ask the policies, build children, compute status.

This module orchestrates; the decisions are the policies' (`dstj_operator.policies`), the objects the
builders' (`children`), the pod facts `decide`'s. Stateless and idempotent: every fact comes from the
cluster, children are applied to match the spec (`Cluster.converge`), and pod names carry a random suffix
while missing indices are the only ones created, so a second pass (or a restarted operator) makes no
duplicates. Returns the new status and the events that describe it;
the handler writes the status and only then sends the events.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from dstj_api import Membership, format_validation_error
from dstj_api.contract import TEMPLATE_ANNOTATION
from dstj_operator import capacity, children, conditions, metrics, naming
from dstj_operator.cluster import Cluster
from dstj_operator.converge import Mode, stamped
from dstj_operator.decide import EndKind, classify_end, observe
from dstj_operator.edits import operator_set_fields
from dstj_operator.perjob import PerGeneration
from dstj_operator.policies import (
    autoscale,
    crash_budget,
    deadline,
    join_timeout,
    roll,
    rollout,
    scale,
    stall,
    start_gang,
    success,
    suspend,
    ttl,
)
from dstj_operator.spec import DeepSeekTrainingJobSpec, parse_spec
from dstj_operator.status import COUNTED_KEEP, JobStatus, stamp

log = logging.getLogger(__name__)
CREATED_NAMED = 8
"""Worker pods a WorkerCreated Event names; it counts the rest (an Event's message stays short)."""
_SPECS: PerGeneration[tuple[DeepSeekTrainingJobSpec, list[str]]] = PerGeneration()
_CONFIGS: PerGeneration[dict[str, Any]] = PerGeneration()
_STATIC: PerGeneration[list[tuple[dict[str, Any], Mode]]] = PerGeneration()
"""The parsed spec, the trainer config and the other static children (hashed), once per spec generation: most
of a pass's CPU otherwise."""


@dataclass(slots=True, frozen=True)
class Event:
    """A Kubernetes Event to record on the job once the status it describes is written."""

    reason: str
    message: str
    type: str = "Normal"


@dataclass(slots=True)
class Outcome:
    """What one pass decided: the status to write, the events to send after it, when to look again."""

    status: JobStatus
    events: list[Event] = field(default_factory=list)
    requeue_after: float | None = None
    """Seconds until another pass is needed (None: on events only)."""
    delete_job: bool = False

    def later(self, seconds: float | None) -> None:
        """Ask for another pass in `seconds` (the earliest request wins; None asks nothing)."""
        if seconds is not None:
            self.requeue_after = seconds if self.requeue_after is None else min(self.requeue_after, seconds)

    def event(self, reason: str, message: str, type_: str = "Normal") -> None:
        """Record an event once the status is written."""
        self.events.append(Event(reason, message, type_))


def _suffix() -> str:
    return naming.new_suffix()


def _selector(job: dict[str, Any], role: str) -> str:
    return f"{children.JOB_LABEL}={job['metadata']['name']},{children.ROLE_LABEL}={role}"


def _finish(cluster: Cluster, job: dict[str, Any], out: Outcome, spec: DeepSeekTrainingJobSpec | None,
            now: datetime) -> Outcome:
    """A finished job: its pods removed (a failed job keeps its ended ones, so `kubectl logs` shows why), and
    the job deleted once its TTL has passed."""
    ns, name = job["metadata"]["namespace"], job["metadata"]["name"]
    keep_ended = out.status.phase == "Failed"
    conditions.set_condition(out.status.conditions, conditions.PROGRESSING, False, conditions.UP_TO_DATE, "",
                             stamp(now))
    for p in cluster.pods(ns, f"{children.JOB_LABEL}={name}"):
        if not p["metadata"].get("deletionTimestamp") and not (keep_ended and classify_end(p)[0] is not None):
            cluster.delete_pod(ns, p["metadata"]["name"])
    book = out.status.bookkeeping
    book.running_seconds, book.running_since = deadline.tick(book, False, now)
    verdict = ttl.evaluate(spec, out.status, now)
    out.delete_job = verdict.delete
    out.later(verdict.recheck_in)
    return out


def _end(cluster: Cluster, job: dict[str, Any], out: Outcome, spec: DeepSeekTrainingJobSpec | None,
         now: datetime, succeeded: bool, reason: str, message: str) -> Outcome:
    status, at = out.status, stamp(now)
    conditions.set_condition(status.conditions, conditions.SUCCEEDED if succeeded else conditions.FAILED,
                             True, reason, message, at)
    conditions.set_condition(status.conditions, conditions.RUNNING, False, reason,
                             "finished" if succeeded else message, at)
    status.phase = "Succeeded" if succeeded else "Failed"
    status.completion_time = status.completion_time or at
    if succeeded:
        out.event("Succeeded", f"{message}; checkpoints kept")
    else:
        out.event("Failed", f"{reason}: {message}", "Warning")
    return _finish(cluster, job, out, spec, now)


def _static_children(job: dict[str, Any], spec: DeepSeekTrainingJobSpec,
                     config: dict[str, Any]) -> list[tuple[dict[str, Any], Mode]]:
    """The children other than pods, stamped with their hashes, and how each follows the spec."""
    applied = [config, children.rendezvous_service(job, spec),
               children.workers_service(job), *children.worker_rbac(job), children.disruption_budget(job, spec),
               children.rendezvous_network_policy(job, spec)]
    pvc = children.checkpoint_pvc(job, spec)
    created_once = [children.progress_config_map(job), *([pvc] if pvc else [])]
    return [*((stamped(o), Mode.APPLY) for o in applied), *((stamped(o), Mode.CREATE_ONLY) for o in created_once)]


def _ensure_children(cluster: Cluster, job: dict[str, Any], spec: DeepSeekTrainingJobSpec, config: dict[str, Any],
                     out: Outcome) -> None:
    """Every child as the spec now asks: applied when it differs, re-created when missing. The rendezvous
    pod is replaced only when it listens on another port than rendezvous.port: replacing it costs the running
    group its store, which another input (an image, a toleration) is not worth; the next store pod created
    (after a loss) has them."""
    for obj, mode in _STATIC.get(job, lambda: _static_children(job, spec, config)):
        if cluster.converge(obj, mode):
            log.debug("applied %s/%s", obj["kind"], obj["metadata"]["name"])
    ns = job["metadata"]["namespace"]
    pods = cluster.pods(ns, _selector(job, "rendezvous"))
    live = [p for p in pods if not p["metadata"].get("deletionTimestamp")
            and (p.get("status") or {}).get("phase") not in ("Failed", "Succeeded")
            and children.rendezvous_port(p) == spec.rendezvous.port]
    for p in pods:
        if p not in live and not p["metadata"].get("deletionTimestamp"):
            cluster.delete_pod(ns, p["metadata"]["name"], 0)
    if not live:
        cluster.create_if_absent(stamped(children.rendezvous_pod(job, spec, _suffix())))
        out.event("RendezvousCreated", "started the rendezvous store pod")


def reconcile(cluster: Cluster, job: dict[str, Any], now: datetime | None = None) -> Outcome:
    """Bring the job's children toward its spec; return the status it should have."""
    now = now or datetime.now(UTC)
    at = stamp(now)
    meta = job["metadata"]
    ns = meta["namespace"]
    status = JobStatus.read(job.get("status"))
    out = Outcome(status)
    conds, book = status.conditions, status.bookkeeping
    stored_observed = status.observed_generation
    status.observed_generation = meta.get("generation")
    status.selector = _selector(job, "worker")
    try:
        spec, ignored = _SPECS.get(job, lambda: parse_spec(job.get("spec") or {}))
    except ValidationError as e:
        if status.phase == "Failed":
            return out
        message = format_validation_error(e, "spec").replace("\n", " ")
        return _end(cluster, job, out, None, now, False, conditions.INVALID_SPEC, message)
    bad_name = naming.job_name_problem(meta["name"])
    if bad_name is not None and status.phase != "Failed":  # admitted by an older CRD: no child name would fit
        return _end(cluster, job, out, spec, now, False, conditions.INVALID_SPEC, f"metadata.name: {bad_name}")
    overridden = operator_set_fields(job.get("spec") or {})
    if (ignored or overridden) and status.ignored_fields != ignored + overridden:
        if ignored:
            out.event("UnknownFields", f"ignored fields this operator does not know: {', '.join(ignored)}; "
                      "upgrade the operator to the CRD's version", "Warning")
        if overridden:
            out.event("OperatorSetFields", f"ignored {', '.join(overridden)}: the operator sets it (the job was "
                      "admitted by an older CRD); remove it from the job", "Warning")
    ignored = ignored + overridden
    status.ignored_fields = ignored or None
    if status.phase in ("Succeeded", "Failed"):
        return _finish(cluster, job, out, spec, now)

    status.start_time = status.start_time or at
    clock = deadline.evaluate(spec, book, now)
    if clock.exceeded:
        return _end(cluster, job, out, spec, now, False, conditions.DEADLINE,
                    f"trained longer than activeDeadlineSeconds ({spec.active_deadline_seconds}s of running time)")
    out.later(clock.recheck_in)
    config = _CONFIGS.get(job, lambda: children.trainer_config_map(job, spec))
    _ensure_children(cluster, job, spec, config, out)
    conditions.set_condition(conds, conditions.SYNCED, True, conditions.SYNC_OK,
                             "config, services, RBAC and the rendezvous store exist", at)
    book.sync_failures = 0

    pods = cluster.pods(ns, _selector(job, "worker"))
    workers = [observe(p, children.INDEX_LABEL, TEMPLATE_ANNOTATION) for p in pods]
    was_running = status.phase == "Running"
    if crash_budget.stable(spec, book, was_running, now):
        book.consecutive_crashes = 0
    misconfigured = None
    for end in crash_budget.new_ends(spec, book, workers):
        book.counted_pods.append(end.worker)
        if end.kind is EndKind.PREEMPTED:
            status.preemptions += 1
            metrics.WORKER_ENDS.labels(reason="preempted").inc()
            out.event("WorkerPreempted", f"{end.worker} ended: {end.reason}; replacing it")
            continue
        status.crashes += 1
        book.consecutive_crashes += 1
        book.last_crash_time = at
        book.last_crash = f"{end.worker}: {end.reason}"
        metrics.WORKER_ENDS.labels(reason="crashed").inc()
        out.event("WorkerCrashed", f"{end.worker} ended: {end.reason}; replacing it", "Warning")
        if end.kind is EndKind.MISCONFIGURED:
            misconfigured = end
    del book.counted_pods[:-COUNTED_KEEP]
    if misconfigured is not None:
        return _end(cluster, job, out, spec, now, False, conditions.WORKER_CONFIG,
                    f"{misconfigured.worker} cannot run this spec: {misconfigured.reason}")
    if crash_budget.exceeded(spec, book):
        policy = spec.fault_policy
        return _end(cluster, job, out, spec, now, False, conditions.CRASH_BUDGET,
                    f"{book.consecutive_crashes} crashes in a row (no run of faultPolicy.stableRunSeconds "
                    f"= {policy.stable_run_seconds}s between them) exceed faultPolicy.crashBudget "
                    f"({policy.crash_budget}); the last: {book.last_crash}")

    progress = cluster.progress(ns, children.names(job)["progress"])
    if progress is not None:
        status.progress = progress
        status.layout = f"{progress.expert_parallel}x{progress.data_parallel}"
        if success.finished(progress):
            return _end(cluster, job, out, spec, now, True, conditions.FINISHED, f"trained {progress.step} steps")

    if status.desired_replicas not in (None, spec.replicas):
        out.event("Scaled", f"replicas {status.desired_replicas} -> {spec.replicas}")
    status.desired_replicas = spec.replicas
    # From here on the size is the autoscaler's choice (spec.replicas itself with autoscaling off).
    target, remove = _size(cluster, job, spec, workers, out, now)
    sized = spec if target == spec.replicas else spec.model_copy(update={"replicas": target})
    live = scale.live(sized, workers)
    plan = roll.RollPlan(candidates=live) if spec.suspend else roll.plan(
        sized, live, status.membership, status.progress, children.pod_template_hash(spec), book.generation_time, now)
    _converge_workers(cluster, job, sized, workers, plan, out, now, remove)
    config_hash = children.trainer_config_hash(config)
    running = _publish(job, sized, workers, config_hash, plan, out, now)
    book.running_seconds, book.running_since = deadline.tick(book, running, now)
    verdict = rollout.evaluate(spec_changed=stored_observed != meta.get("generation"), running=running,
                               membership=status.membership, progress=status.progress, config_hash=config_hash,
                               endpoint=_endpoint(job, spec), stale_pods=plan.stale_members, suspend=spec.suspend)
    if not verdict.up_to_date:
        status.observed_generation = stored_observed
    blocked = not verdict.up_to_date and bool(plan.blocked)
    reason = (conditions.UP_TO_DATE if verdict.up_to_date else conditions.ROLLOUT_BLOCKED if blocked
              else conditions.ROLLING_OUT)
    before = status.condition(conditions.PROGRESSING)
    was_blocked = before is not None and before.reason == conditions.ROLLOUT_BLOCKED
    conditions.set_condition(conds, conditions.PROGRESSING, not verdict.up_to_date, reason,
                             plan.blocked if blocked else verdict.waiting_for, at)
    if blocked and not was_blocked:
        out.event("RolloutBlocked", plan.blocked, "Warning")
    return out


def _endpoint(job: dict[str, Any], spec: DeepSeekTrainingJobSpec) -> str:
    """host:port of the job's rendezvous store, as the spec asks for it."""
    return f"{children.names(job)['rdzv']}:{spec.rendezvous.port}"


def _size(cluster: Cluster, job: dict[str, Any], spec: DeepSeekTrainingJobSpec, workers: list[Any], out: Outcome,
          now: datetime) -> tuple[int, tuple[int, ...]]:
    """The worker count to run (`policies.autoscale`) and the indices to remove because they stayed
    unschedulable; records the verdict, the Scaling condition and a Resized event."""
    status, meta = out.status, job["metadata"]
    ns, key = meta["namespace"], (meta["namespace"], meta["name"])
    if not spec.autoscaling.enabled or spec.suspend:
        capacity.waiting(key, False)
        if spec.suspend and spec.autoscaling.enabled:  # nothing to measure: keep the size for the resume
            return status.target_replicas or spec.replicas, ()
        verdict = autoscale.evaluate(spec, status, [], now)
        autoscale.record(status, verdict)
        if status.condition(conditions.SCALING) is not None:  # turned off: say so once, then stay quiet
            conditions.set_condition(status.conditions, conditions.SCALING, False, verdict.reason, verdict.message,
                                     stamp(now))
        return verdict.target, ()
    _measure(status, now)
    pending = any(w.unschedulable_since for w in workers if w.end is None and not w.terminating)
    triggered = cluster.scale_up_triggered(ns) if pending else set()
    before = status.target_replicas
    verdict = autoscale.evaluate(spec, status, autoscale.placements(workers, triggered), now,
                                 capacity.last_signal(ns))
    autoscale.record(status, verdict)
    capacity.waiting(key, verdict.growth.failures > 0)
    out.later(verdict.recheck_in)
    reason, message = verdict.reason, verdict.message
    hpas = cluster.autoscalers(ns, meta["name"])
    if hpas:
        reason = conditions.CONFLICTING_AUTOSCALER
        message = (f"HorizontalPodAutoscaler {', '.join(hpas)} targets this job while spec.autoscaling.enabled is "
                   "true: the operator chooses the size itself, and the HPA's writes to spec.replicas only move the "
                   f"ceiling; delete the HPA or set spec.autoscaling.enabled: false. {message}")
        held = status.condition(conditions.SCALING)
        if held is None or held.reason != reason:
            out.event("ConflictingAutoscaler", message, "Warning")
    conditions.set_condition(status.conditions, conditions.SCALING, verdict.scaling, reason, message, stamp(now))
    if before is not None and before != verdict.target:
        out.event("Resized", f"{before} -> {verdict.target} workers: {verdict.message}")
    return verdict.target, verdict.remove


def _measure(status: JobStatus, now: datetime) -> None:
    """The trainer's steady tokens/s of the generation now training, kept per world size."""
    report, current = status.progress, status.membership
    if report is None or current is None or report.steady_tokens_per_second is None:
        return
    if report.generation != current.generation or report.state != "running":
        return
    workers = current.world_size  # the report counts ranks; sizes are counted in workers
    known = next((t for t in status.throughput or [] if t.world_size == workers), None)
    # The same value again is not written (a status write per report), unless the stored one predates the job's
    # return to this size: the efficiency rule counts only what was measured since, so it would wait forever.
    if known is not None and known.tokens_per_second == report.steady_tokens_per_second \
            and not autoscale.measured_before(known.measured, status.bookkeeping.target_since, now):
        return
    status.throughput = autoscale.with_measurement(status.throughput or [], workers,
                                                   report.steady_tokens_per_second, now)


def _converge_workers(cluster: Cluster, job: dict[str, Any], spec: DeepSeekTrainingJobSpec,
                      workers: list[Any], plan: roll.RollPlan, out: Outcome, now: datetime,
                      remove: tuple[int, ...] = ()) -> None:
    """Remove ended and unwanted workers, those that stayed unschedulable (`remove`: the autoscaler settles
    without them), and those a rolled edit replaced; create the missing ones and the replacements, unless a
    crash backoff holds them."""
    ns, status = job["metadata"]["namespace"], out.status
    gone = [w for w in workers if w.index in remove and w.end is None and not w.terminating]
    for w in gone:
        status.bookkeeping.counted_pods.append(w.name)  # removed, not preempted: never counted as an end
        cluster.delete_pod(ns, w.name, 0)
        out.event("WorkerUnschedulable", f"removed {w.name} (index {w.index}): unschedulable for "
                  f"spec.autoscaling.unschedulableSeconds ({spec.autoscaling.unschedulable_seconds} s)")
    for w in scale.to_delete(spec, workers):
        if w not in gone:
            cluster.delete_pod(ns, w.name)
    for w in plan.retire:
        status.bookkeeping.counted_pods.append(w.name)  # replaced, not preempted: never counted as an end
        cluster.delete_pod(ns, w.name)
        out.event("WorkerReplaced", f"{w.name} (index {w.index}) replaced by a pod of the edited template")
    wait = crash_budget.backoff_left(spec, status.bookkeeping, now)
    if wait > 0:
        conditions.set_condition(status.conditions, conditions.RESTARTING, True, conditions.CRASH_BACKOFF,
                                 f"{status.bookkeeping.consecutive_crashes} crashes in a row: replacements wait "
                                 "out the backoff (faultPolicy.backoffSeconds, doubling per crash); the last: "
                                 f"{status.bookkeeping.last_crash}", stamp(now))
        out.later(wait)
        return
    conditions.set_condition(status.conditions, conditions.RESTARTING, False, conditions.NO_BACKOFF, "", stamp(now))
    if spec.suspend:
        return
    # Indices just removed come back next pass as fresh pods, which may fit where the old ones did not.
    held = {w.index for w in gone}
    created = []
    for index in sorted((set(scale.missing_indices(workers, spec.replicas)) | set(plan.surge)) - held):
        pod = children.worker_pod(job, spec, index, _suffix())
        cluster.create_if_absent(pod)
        created.append(f"{pod['metadata']['name']} for index {index}")
    if created:  # one Event a pass, not one a pod: a fleet's bring-up posted as many Events as it created pods
        shown = ", ".join(created[:CREATED_NAMED])
        more = f" and {len(created) - CREATED_NAMED} more" if len(created) > CREATED_NAMED else ""
        out.event("WorkerCreated", f"created {shown}{more}")


def _publish(job: dict[str, Any], spec: DeepSeekTrainingJobSpec, workers: list[Any], config_hash: str,
             plan: roll.RollPlan, out: Outcome, now: datetime) -> bool:
    """Publish the membership the policies choose (its members run the trainer config `config_hash` names) and
    set the conditions and phase; True while training."""
    status, at = out.status, stamp(now)
    conds, book = status.conditions, status.bookkeeping
    current = status.membership
    endpoint = _endpoint(job, spec)
    live = scale.live(spec, workers)
    gang = start_gang.evaluate(spec, status, live, now)
    book.gang_since = gang.since
    out.later(gang.recheck_in)
    if spec.suspend:
        new = suspend.membership(current, endpoint)
    elif plan.stop:  # the same stop as a suspension: the group checkpoints at a step boundary and waits
        new = suspend.membership(current, endpoint)
        if new is not None:
            _bump(out, new, "RolloutStop", f"generation {new.generation}: generation {new.handoff_from} stops at a "
                  "step boundary with a checkpoint; its replacements on the edited pod template take over")
            new = None
    elif plan.hold:
        new = None
    else:
        new = scale.next_membership(current, plan.candidates, _seats(spec, current, plan.candidates),
                                    spec.min_replicas, endpoint, config_hash) if gang.may_start else None
    if new is not None:
        handoff = f" (handoff from {new.handoff_from})" if new.handoff_from is not None else ""
        _bump(out, new, "GenerationBumped", f"generation {new.generation}: {new.world_size} workers {new.members}"
              f"{handoff}")
    ready = min(spec.replicas, len(scale.seated(status.membership, live)))
    # A replacement starting beside its pod (a rolled edit) counts once: the scale subresource reports indices.
    status.replicas, status.ready_replicas = len({w.index for w in live}), ready
    if spec.suspend:
        if workers:  # Suspended only once every worker is gone: until then they write their final checkpoint
            conditions.set_condition(conds, conditions.SUSPENDED, True, conditions.STOPPING,
                                     f"spec.suspend is true; {len(workers)} workers checkpointing and stopping", at)
        else:
            status.phase = "Suspended"
            conditions.set_condition(conds, conditions.SUSPENDED, True, conditions.SUSPENDED_BY_SPEC,
                                     "spec.suspend is true; all workers stopped after a checkpoint", at)
        conditions.set_condition(conds, conditions.STALLED, False, conditions.MAKING_PROGRESS, "", at)
        return False
    conditions.set_condition(conds, conditions.SUSPENDED, False, conditions.NOT_SUSPENDED, "", at)
    reason = (conditions.ALL_READY if ready >= spec.replicas
              else conditions.BELOW_MIN if ready < spec.min_replicas else conditions.BELOW_TARGET)
    conditions.set_condition(conds, conditions.DEGRADED, ready < spec.replicas, reason,
                             f"{ready}/{spec.replicas} workers ready (minReplicas {spec.min_replicas})", at)
    membership = status.membership
    running = ready >= spec.min_replicas and not start_gang.gathering(status)
    if running and membership is not None:
        conditions.set_condition(conds, conditions.RUNNING, True, conditions.TRAINING,
                                 f"generation {membership.generation}", at)
    elif not gang.may_start:
        conditions.set_condition(conds, conditions.RUNNING, False, conditions.GATHERING,
                                 f"waiting up to rendezvous.gangTimeoutSeconds ({spec.rendezvous.gang_timeout_seconds}"
                                 f"s) for all {spec.replicas} workers before the first generation", at)
    else:
        conditions.set_condition(conds, conditions.RUNNING, False, conditions.WAITING,
                                 f"waiting for {spec.min_replicas} ready workers (minReplicas)", at)
    status.phase = "Running" if running else "Pending"
    if membership is not None and book.stall_generation != membership.generation:
        book.stall_generation, book.generation_time = membership.generation, at
    _check_stall(spec, out, running, now)
    _check_join(spec, out, running, now)
    return running


def _seats(spec: DeepSeekTrainingJobSpec, current: Membership | None, candidates: list[Any]) -> int:
    """How many members the next generation may have: `spec.replicas` (the target), and with autoscaling on
    the largest eligible size the seated workers fill, so a generation never trains at a size without a layout."""
    if not spec.autoscaling.enabled:
        return spec.replicas
    seated = min(spec.replicas, len(scale.seated(current, candidates)))
    return autoscale.fit(autoscale.eligible(spec), seated) or 0


def _bump(out: Outcome, new: Membership, reason: str, message: str, type_: str = "Normal") -> None:
    """Publish `new` as the job's generation: status, metric and the event that says why."""
    out.status.membership = new
    metrics.GENERATION_BUMPS.inc()
    out.event(reason, message, type_)


def _check_stall(spec: DeepSeekTrainingJobSpec, out: Outcome, running: bool, now: datetime) -> None:
    status = out.status
    verdict = stall.evaluate(spec, status, running, now)
    conditions.set_condition(status.conditions, conditions.STALLED, verdict.stalled,
                             conditions.NO_PROGRESS if verdict.stalled else conditions.MAKING_PROGRESS,
                             # No live number in the message: each change would be a status write.
                             f"no progress report for faultPolicy.stallSeconds ({spec.fault_policy.stall_seconds}s)"
                             if verdict.stalled else "", stamp(now))
    if verdict.newly:
        out.event("Stalled", f"no progress for {int(verdict.quiet_seconds)}s", "Warning")
    if verdict.restart and status.membership is not None:
        again = scale.republished(status.membership)
        _bump(out, again, "GenerationBumped", f"generation {again.generation}: restarted after a stall")
    out.later(verdict.recheck_in)


def _check_join(spec: DeepSeekTrainingJobSpec, out: Outcome, running: bool, now: datetime) -> None:
    status = out.status
    verdict = join_timeout.evaluate(spec, status, running, now)
    if verdict.republish and status.membership is not None:
        again = scale.republished(status.membership)
        _bump(out, again, "JoinTimeout", f"generation {status.membership.generation} sent no progress in "
              f"rendezvous.joinTimeoutSeconds ({spec.rendezvous.join_timeout_seconds}s); generation "
              f"{again.generation}: same members, fresh rendezvous", "Warning")
    out.later(verdict.recheck_in)
