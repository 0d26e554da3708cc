"""The operator's Prometheus metrics (`dstj_operator_*`), served on DSTJ_METRICS_PORT at /metrics."""

from __future__ import annotations

import contextlib
import threading

from prometheus_client import Counter, Gauge, Histogram

from dstj_operator.status import PHASES, JobStatus

RECONCILE_SECONDS = Histogram(
    "dstj_operator_reconcile_seconds", "Duration of one reconcile pass of a job.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
RECONCILE_ERRORS = Counter("dstj_operator_reconcile_errors_total", "Reconcile passes that raised.")
PASS_RETRIES = Counter("dstj_operator_pass_retries_total",
                       "Passes that failed transiently and requeued themselves, by cause: the HTTP status (429 "
                       "throttled, 5xx) or connection (refused, dropped, timed out).", ["cause"])
COALESCED_EVENTS = Counter("dstj_operator_coalesced_events_total",
                           "Events that needed no pass of their own: one of the same job was already queued.")
STATUS_WRITES_HELD = Counter("dstj_operator_status_writes_held_total",
                             "Status writes held back because only the progress report's step and loss moved "
                             "(DSTJ_STATUS_PROGRESS_SECONDS); a later pass writes them.")
JOBS = Gauge("dstj_operator_jobs", "Jobs this operator reconciles, by phase.", ["phase"])
WORKER_ENDS = Counter("dstj_operator_worker_restarts_total",
                      "Worker pods replaced, by why they ended (preempted or crashed).", ["reason"])
GENERATION_BUMPS = Counter("dstj_operator_generation_bumps_total", "Membership generations published.")
WATCH_EVENTS = Counter("dstj_operator_watch_events_total",
                       "Objects received on kopf's watch streams (initial listings included), by resource, before "
                       "any handler's filter: what the API server sends this process.", ["resource"])
EVENT_WAIT = Histogram(
    "dstj_operator_event_wait_seconds",
    "How long the oldest event of a job waited in the operator: until a thread took it up for a pass (until=handler), "
    "until a pass read it (until=pass), until that pass wrote the job's status (until=status; passes that wrote "
    "none are not counted).", ["until"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0),
)
EVENTS_DROPPED = Counter("dstj_operator_events_dropped_total",
                         "Kubernetes Events not posted: too many were waiting for a slow API server.")
LEADER = Gauge("dstj_operator_leader", "1 while this replica holds the leader lease (or runs without election).")

WORKERS = Gauge("dstj_operator_job_workers", "Workers of a job: desired (status.targetReplicas with autoscaling, "
                "else spec.replicas), schedulable (bound to a node; with autoscaling off, live worker pods) and "
                "training (members of the generation that trains).", ["namespace", "job", "kind"])
WORKER_KINDS = ("desired", "schedulable", "training")

for _phase in PHASES:  # every phase is exported, at 0 until a job has it
    JOBS.labels(phase=_phase)
_phases: dict[tuple[str, str], str] = {}
_phases_lock = threading.Lock()


def job_workers(namespace: str, name: str, status: JobStatus | None) -> None:
    """Record a job's desired, schedulable and training workers (None: the job is gone, drop its series)."""
    if status is None:
        for kind in WORKER_KINDS:
            with contextlib.suppress(KeyError):  # never recorded
                WORKERS.remove(namespace, name, kind)
        return
    current = status.membership
    training = current.world_size if current is not None and current.state == "running" \
        and status.phase == "Running" else 0
    desired = status.target_replicas if status.target_replicas is not None else status.desired_replicas or 0
    schedulable = status.schedulable_replicas if status.schedulable_replicas is not None else status.replicas
    for kind, value in zip(WORKER_KINDS, (desired, schedulable, training), strict=True):
        WORKERS.labels(namespace=namespace, job=name, kind=kind).set(value)


def job_phase(namespace: str, name: str, phase: str | None) -> None:
    """Record a job's phase (None: the job is gone) in the jobs-by-phase gauge: it moves only when the phase
    changes (a pass runs per event of a job; recounting every job each time cost O(jobs) a pass)."""
    with _phases_lock:
        old = _phases.pop((namespace, name), None) if phase is None else _phases.get((namespace, name))
        if old == phase:
            return
        if phase is not None:
            _phases[(namespace, name)] = phase
        if old is not None:
            JOBS.labels(phase=old).dec()
        if phase is not None:
            JOBS.labels(phase=phase).inc()
