"""Condition types and reasons of a DeepSeekTrainingJob, and the one way to set them.

Every reason the operator writes is a constant here, listed under the condition it belongs to in
`REASONS`; a test checks that each declared reason is written somewhere and that nothing else is.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

from dstj_operator.status import Condition, stamp

# Condition types.
SYNCED = "Synced"
"""The job's children match its spec. False when a pass failed on an API error: the reason is the
API server's (Forbidden, Invalid, Conflict, TooManyRequests, APIError) and the message quotes it."""
RUNNING = "Running"
"""A generation is training (True), or why not (False)."""
DEGRADED = "Degraded"
"""Fewer workers hold a seat than spec.replicas."""
RESTARTING = "Restarting"
"""True while replacements wait out the crash backoff."""
STALLED = "Stalled"
"""Running, but no progress report for faultPolicy.stallSeconds."""
PROGRESSING = "Progressing"
"""True while a training group runs an older spec than the job's (a live edit rolling out); False once the
edit is live (then status.observedGeneration has caught up with metadata.generation)."""
SUSPENDED = "Suspended"
"""spec.suspend is true (Stopping while workers checkpoint and go)."""
SUCCEEDED = "Succeeded"
"""The trainer finished train.steps."""
FAILED = "Failed"
"""The job ended without finishing."""
SCALING = "Scaling"
"""spec.autoscaling: True while the operator resizes the job (waiting for capacity, measuring a size), False
once settled; the reason says why the job has the size it has (status.targetReplicas)."""

# Reasons, each under its condition.
SYNC_OK = "ChildrenSynced"
FORBIDDEN = "Forbidden"
INVALID = "Invalid"
CONFLICT = "Conflict"
TOO_MANY_REQUESTS = "TooManyRequests"
API_ERROR = "APIError"

TRAINING = "Training"
WAITING = "Waiting"
GATHERING = "GatheringWorkers"
FINISHED = "TrainingFinished"

ALL_READY = "AllWorkersReady"
BELOW_TARGET = "WaitingForWorkers"
BELOW_MIN = "BelowMinReplicas"

CRASH_BACKOFF = "CrashBackoff"
NO_BACKOFF = "NoBackoff"

NO_PROGRESS = "NoProgress"
MAKING_PROGRESS = "Progressing"

ROLLING_OUT = "RollingOut"
ROLLOUT_BLOCKED = "RolloutBlocked"
UP_TO_DATE = "UpToDate"

STOPPING = "Stopping"
SUSPENDED_BY_SPEC = "SuspendedBySpec"
NOT_SUSPENDED = "NotSuspended"

CRASH_BUDGET = "CrashBudgetExceeded"
DEADLINE = "DeadlineExceeded"
INVALID_SPEC = "InvalidSpec"
WORKER_CONFIG = "WorkerConfigError"

CAPACITY_LIMITED = "CapacityLimited"
EFFICIENCY_LIMITED = "EfficiencyLimited"
AT_MAXIMUM = "AtMaximum"
WAITING_FOR_CAPACITY = "WaitingForCapacity"
MEASURING = "MeasuringThroughput"
NO_ELIGIBLE_SIZE = "NoEligibleSize"
AUTOSCALING_OFF = "AutoscalingOff"
CONFLICTING_AUTOSCALER = "ConflictingAutoscaler"
"""Scaling: a HorizontalPodAutoscaler targets a job whose operator chooses the size itself."""

REASONS: dict[str, tuple[str, ...]] = {
    SYNCED: (SYNC_OK, FORBIDDEN, INVALID, CONFLICT, TOO_MANY_REQUESTS, API_ERROR),
    RUNNING: (TRAINING, WAITING, GATHERING, FINISHED, CRASH_BUDGET, DEADLINE, INVALID_SPEC, WORKER_CONFIG),
    DEGRADED: (ALL_READY, BELOW_TARGET, BELOW_MIN),
    RESTARTING: (CRASH_BACKOFF, NO_BACKOFF),
    STALLED: (NO_PROGRESS, MAKING_PROGRESS),
    PROGRESSING: (ROLLING_OUT, ROLLOUT_BLOCKED, UP_TO_DATE),
    SUSPENDED: (STOPPING, SUSPENDED_BY_SPEC, NOT_SUSPENDED),
    SUCCEEDED: (FINISHED,),
    FAILED: (CRASH_BUDGET, DEADLINE, INVALID_SPEC, WORKER_CONFIG),
    SCALING: (CAPACITY_LIMITED, EFFICIENCY_LIMITED, AT_MAXIMUM, WAITING_FOR_CAPACITY, MEASURING, NO_ELIGIBLE_SIZE,
              AUTOSCALING_OFF, CONFLICTING_AUTOSCALER),
}
"""Which reasons each condition type may carry (docs/api.md lists them)."""


def now() -> str:
    """RFC 3339 time, as Kubernetes writes it."""
    return stamp(datetime.now(UTC))


def set_condition(conditions: list[Condition], type_: str, status: bool, reason: str, message: str,
                  at: str | None = None) -> bool:
    """Set one condition in place; True when anything changed (the transition time moves only then)."""
    if reason not in REASONS.get(type_, ()):
        raise ValueError(f"reason {reason!r} is not declared for condition {type_!r} in conditions.REASONS")
    value: Literal["True", "False"] = "True" if status else "False"
    for c in conditions:
        if c.type == type_:
            if (c.status, c.reason, c.message) == (value, reason, message):
                return False
            if c.status != value:
                c.last_transition_time = at or now()
            c.status, c.reason, c.message = value, reason, message
            return True
    conditions.append(Condition(type=type_, status=value, reason=reason, message=message,
                                last_transition_time=at or now()))
    return True
