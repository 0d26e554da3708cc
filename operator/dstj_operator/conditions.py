"""Condition types and reasons of a DeepSeekTrainingJob, and the one way to set them."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

# Condition types.
CREATED = "Created"
RUNNING = "Running"
DEGRADED = "Degraded"
"""Fewer Ready workers than spec.replicas (reasons: WaitingForWorkers, BelowMinReplicas)."""
RESTARTING = "Restarting"
"""True while replacements wait out the crash backoff (reason CrashBackoff)."""
STALLED = "Stalled"
"""Running, but no progress report for faultPolicy.stallSeconds (reason NoProgress)."""
SUSPENDED = "Suspended"
SUCCEEDED = "Succeeded"
FAILED = "Failed"
"""Reasons: CrashBudgetExceeded, DeadlineExceeded, InvalidSpec."""


def now() -> str:
    """RFC 3339 time, as Kubernetes writes it."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def set_condition(conditions: list[dict[str, Any]], type_: str, status: bool, reason: str, message: str) -> bool:
    """Set one condition in place; True when anything changed (the transition time moves only then)."""
    value = "True" if status else "False"
    for c in conditions:
        if c["type"] == type_:
            if (c["status"], c.get("reason"), c.get("message")) == (value, reason, message):
                return False
            if c["status"] != value:
                c["lastTransitionTime"] = now()
            c.update(status=value, reason=reason, message=message)
            return True
    conditions.append({"type": type_, "status": value, "reason": reason, "message": message,
                       "lastTransitionTime": now()})
    return True
