"""What the operator should do about a job's workers and membership: pure decisions, no API calls.

`observe` turns worker pods into `Worker` facts; `classify_end` tells a preemption from a crash (and
both from a misconfiguration the trainer found at run time);
`next_membership` decides whether to publish a new generation. The reconciler applies the result.

Membership rules: the members are the seated workers (lowest indices first, at most `replicas`).
Readiness admits: a worker takes a seat once its pod is Ready (it can join a group). A member keeps
its seat while its pod lives, even if its readiness probe later fails: a probe that times out on a
loaded node must not stop the whole group twice (out, then back in). It loses the seat when its pod
ends or is deleted, or when its node is lost (the node controller sets the pod's Ready to False and
leaves ContainersReady as the kubelet last reported it, True; a probe failure sets both to False).
A new generation is published when the seated set changes, and only if it holds at least
`minReplicas` workers; otherwise the last generation stays published and the job waits (a
condition says why).
The new generation always names the old one in `handoffFrom`, so the old group may commit the
checkpoint it takes while stopping at a step boundary: after a planned resize, and equally after a
preemption with notice (SIGTERM: the leaving worker checkpoints with the others before it goes), no
finished step is lost. A group that lost a member without notice cannot take that checkpoint (its
collectives fail), and an old group can never commit over a newer generation's marker, so the
handoff gives a stale group nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from dstj_api import EXIT_CONFIG, EXIT_STOPPED, Membership


class EndKind(StrEnum):
    """Why a worker pod ended; only crashes count against the budget."""

    PREEMPTED = "Preempted"
    CRASHED = "Crashed"
    SUCCEEDED = "Succeeded"
    MISCONFIGURED = "Misconfigured"
    """Exit EXIT_CONFIG: a setting only run time could check is wrong; the reason is the worker's message."""


MESSAGE_CHARS = 1000
"""How much of a worker's termination message becomes the reason (conditions and events stay readable)."""


@dataclass(slots=True, frozen=True, kw_only=True)
class Worker:
    """What the operator needs to know about one worker pod."""

    name: str
    index: int
    ready: bool
    """Alive and Ready: it may take a seat."""
    terminating: bool
    phase: str
    end: EndKind | None = None
    reason: str = ""
    node_lost: bool = False
    """Its node stopped reporting (Ready False, ContainersReady still True)."""

    @property
    def may_stay(self) -> bool:
        """Whether a member keeps its seat: its pod lives on a reachable node (readiness aside)."""
        return self.end is None and not self.terminating and not self.node_lost


def classify_end(pod: dict[str, Any]) -> tuple[EndKind | None, str]:
    """How a pod ended, or (None, "") while it has not: evictions, disruptions, node loss and the
    trainer's stop code are preemptions; its config code is a misconfiguration, whose reason is the
    container's termination message (what to change); other non-zero exits and OOM kills are crashes."""
    status = pod.get("status") or {}
    phase = status.get("phase", "Pending")
    conditions = {c.get("type"): c for c in status.get("conditions") or []}
    disruption = conditions.get("DisruptionTarget")
    if disruption and disruption.get("status") == "True":
        return EndKind.PREEMPTED, f"disruption: {disruption.get('reason', 'DisruptionTarget')}"
    if status.get("reason") in ("Evicted", "NodeLost", "Preempting", "Terminated"):
        return EndKind.PREEMPTED, str(status.get("reason"))
    if phase == "Succeeded":
        return EndKind.SUCCEEDED, "Completed"
    if phase != "Failed":
        return None, ""
    for cs in status.get("containerStatuses") or []:
        term = (cs.get("state") or {}).get("terminated") or {}
        code, why = term.get("exitCode"), term.get("reason", "")
        if code == EXIT_CONFIG:
            message = " ".join(str(term.get("message") or "").split())  # one line, as conditions show it
            if len(message) > MESSAGE_CHARS:
                message = message[: MESSAGE_CHARS - 3] + "..."
            return EndKind.MISCONFIGURED, message or f"exit code {code} (a setting only run time could check)"
        if code in (EXIT_STOPPED, 143):  # checkpointed and stopped on request / SIGTERM
            return EndKind.PREEMPTED, f"stopped (exit {code})"
        if why == "OOMKilled":
            return EndKind.CRASHED, "OOMKilled"
        if code not in (None, 0):
            return EndKind.CRASHED, f"exit code {code} ({why or 'Error'})"
    return EndKind.CRASHED, status.get("reason") or "Failed"


def observe(pod: dict[str, Any], index_label: str) -> Worker:
    """A worker pod as facts."""
    meta, status = pod["metadata"], pod.get("status") or {}
    conditions = {c.get("type"): c.get("status") for c in status.get("conditions") or []}
    ready = conditions.get("Ready") == "True"
    end, reason = classify_end(pod)
    terminating = bool(meta.get("deletionTimestamp"))
    return Worker(name=meta["name"], index=int(meta["labels"][index_label]), phase=status.get("phase", "Pending"),
                  ready=ready and not terminating and end is None, terminating=terminating, end=end, reason=reason,
                  node_lost=conditions.get("Ready") == "False" and conditions.get("ContainersReady") == "True")


def seated(current: Membership | None, workers: list[Worker]) -> list[Worker]:
    """Workers that may hold a seat: Ready ones, and current members that may stay."""
    members = set(current.members) if current is not None and current.state == "running" else set()
    return [w for w in workers if w.ready or (w.name in members and w.may_stay)]


def next_membership(current: Membership | None, workers: list[Worker], replicas: int, min_replicas: int,
                    endpoint: str) -> Membership | None:
    """The membership to publish now, or None when the current one stands."""
    members = [w.name for w in sorted(seated(current, workers), key=lambda w: w.index)[:replicas]]
    if current is not None and current.members == members:
        return None
    if len(members) < min_replicas:
        return None
    generation = 0 if current is None else current.generation + 1
    return Membership(
        generation=generation, world_size=len(members), members=members, rdzv_endpoint=endpoint,
        handoff_from=current.generation if current is not None else None,
    )


def join_overdue(current: Membership | None, report_generation: int | None, generation_age_s: float,
                 join_timeout_s: float) -> bool:
    """Whether the published generation has had `join_timeout_s` to form and train, and no report of it came.

    A group that never forms (a member hung before joining, a store that lost its keys) sends no
    progress report of its generation; the operator then publishes the same members again, a fresh
    rendezvous under a new key prefix.
    """
    return (current is not None and current.state == "running" and current.world_size > 0
            and report_generation != current.generation and generation_age_s >= join_timeout_s)


def missing_indices(workers: list[Worker], replicas: int) -> list[int]:
    """Indices below `replicas` with no live worker pod (ended or terminating pods do not count)."""
    live = {w.index for w in workers if w.end is None and not w.terminating}
    return [i for i in range(replicas) if i not in live]
