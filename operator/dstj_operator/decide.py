"""Facts about worker pods: `observe` turns a pod into a `Worker`; `classify_end` tells a preemption
from a crash. Pure, no API calls; the policies (`dstj_operator.policies`) decide from these facts.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from dstj_api import EXIT_CONFIG, EXIT_STOPPED


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
    created: str = ""
    """metadata.creationTimestamp (RFC 3339: sorts in time order)."""
    template: str | None = None
    """The pod template digest it was built from (None: built by an operator older than the annotation)."""
    stuck: str = ""
    """Why it cannot start, when a kubelet or the scheduler says so (a failed pull, unschedulable)."""
    scheduled: bool = False
    """Bound to a node (spec.nodeName set)."""
    unschedulable_since: str | None = None
    """When the scheduler last found no node for it (PodScheduled False, reason Unschedulable), if it has not
    been bound since."""
    nominated: bool = False
    """status.nominatedNodeName is set: the scheduler reserved a node for it (preemption or a node coming up)."""

    @property
    def may_stay(self) -> bool:
        """Whether a member keeps its seat: its pod lives on a reachable node (readiness aside)."""
        return self.end is None and not self.terminating and not self.node_lost


def _one_line(text: Any, *, keep_end: bool) -> str:
    """A termination message as conditions and events show it: one line, at most MESSAGE_CHARS characters,
    its start (a config error says what to change first) or its end (a log tail's error is last)."""
    message = " ".join(str(text or "").split())
    if len(message) <= MESSAGE_CHARS:
        return message
    return "..." + message[3 - MESSAGE_CHARS:] if keep_end else message[: MESSAGE_CHARS - 3] + "..."


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
            message = _one_line(term.get("message"), keep_end=False)
            return EndKind.MISCONFIGURED, message or f"exit code {code} (a setting only run time could check)"
        if code in (EXIT_STOPPED, 143):  # checkpointed and stopped on request / SIGTERM
            return EndKind.PREEMPTED, f"stopped (exit {code})"
        # The termination message is the trainer's own (or, FallbackToLogsOnError, its log's tail): the error.
        message = _one_line(term.get("message"), keep_end=True)
        tail = f": {message}" if message else ""
        if why == "OOMKilled":
            return EndKind.CRASHED, f"OOMKilled{tail}"
        if code not in (None, 0):
            return EndKind.CRASHED, f"exit code {code} ({why or 'Error'}){tail}"
    return EndKind.CRASHED, status.get("reason") or "Failed"


STUCK_REASONS = ("ErrImagePull", "ImagePullBackOff", "InvalidImageName", "CreateContainerError",
                 "CreateContainerConfigError")
"""Container waiting reasons that say the pod cannot start without a change (a restart would not help)."""


def _stuck(status: dict[str, Any]) -> str:
    # An init container runs the job's image too (the checkpoint owner): a bad image stops the pod there first.
    for cs in [*(status.get("initContainerStatuses") or []), *(status.get("containerStatuses") or [])]:
        waiting = (cs.get("state") or {}).get("waiting") or {}
        if waiting.get("reason") in STUCK_REASONS:
            return _one_line(f"{waiting['reason']}: {waiting.get('message', '')}".rstrip(": "), keep_end=False)
    for c in status.get("conditions") or []:
        if c.get("type") == "PodScheduled" and c.get("status") == "False" and c.get("reason") == "Unschedulable":
            return _one_line(f"Unschedulable: {c.get('message', '')}".rstrip(": "), keep_end=False)
    return ""


def observe(pod: dict[str, Any], index_label: str, template_annotation: str = "") -> Worker:
    """A worker pod as facts (`template_annotation`: the annotation that names its pod template)."""
    meta, status = pod["metadata"], pod.get("status") or {}
    conditions = {c.get("type"): c.get("status") for c in status.get("conditions") or []}
    ready = conditions.get("Ready") == "True"
    end, reason = classify_end(pod)
    terminating = bool(meta.get("deletionTimestamp"))
    return Worker(name=meta["name"], index=int(meta["labels"][index_label]), phase=status.get("phase", "Pending"),
                  ready=ready and not terminating and end is None, terminating=terminating, end=end, reason=reason,
                  node_lost=conditions.get("Ready") == "False" and conditions.get("ContainersReady") == "True",
                  created=meta.get("creationTimestamp", ""),
                  template=(meta.get("annotations") or {}).get(template_annotation) if template_annotation else None,
                  stuck=_stuck(status), scheduled=bool((pod.get("spec") or {}).get("nodeName")),
                  unschedulable_since=_unschedulable_since(status), nominated=bool(status.get("nominatedNodeName")))


def _unschedulable_since(status: dict[str, Any]) -> str | None:
    for c in status.get("conditions") or []:
        if c.get("type") == "PodScheduled" and c.get("status") == "False" and c.get("reason") == "Unschedulable":
            return str(c.get("lastTransitionTime") or "") or None
    return None
