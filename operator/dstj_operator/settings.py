"""How the operator process is configured: environment variables (the Helm chart sets them).

A bad value stops the operator at start with the variable named, never half-way through a run.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from dstj_operator.pacing import DEFAULT_SECONDS as DEFAULT_PROGRESS_SECONDS

LOG_LEVELS = ("debug", "info", "warning", "error")


class SettingsError(ValueError):
    """An environment variable has a value the operator cannot use."""


def _int(env: Mapping[str, str], key: str, default: int, low: int, high: int) -> int:
    raw = env.get(key, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{key}={raw!r} is not an integer; set it to a number in [{low}, {high}]") from None
    if not low <= value <= high:
        raise SettingsError(f"{key}={value} is out of range; set it to a number in [{low}, {high}]")
    return value


def _bool(env: Mapping[str, str], key: str) -> bool:
    raw = env.get(key, "").strip().lower()
    if raw in ("", "0", "false", "no"):
        return False
    if raw in ("1", "true", "yes"):
        return True
    raise SettingsError(f"{key}={raw!r} is not a boolean; set it to true or false")


@dataclass(frozen=True, slots=True, kw_only=True)
class OperatorSettings:
    """The operator's settings, read once at start."""

    watch_namespaces: tuple[str, ...] = ()
    """Namespaces to watch; empty means every namespace."""
    leader_election: bool = False
    lease_name: str = "deepseek-operator"
    lease_namespace: str = "default"
    lease_seconds: int = 15
    identity: str = "dstj-operator"
    metrics_port: int = 8080
    health_port: int = 8081
    log_level: str = "info"
    stuck_seconds: int = 300
    """Seconds with reconcile passes pending and none finished before /healthz fails (the pod restarts).
    A pass takes well under a second; 5 minutes covers a slow API server without hiding a deadlock long."""
    progress_status_seconds: int = DEFAULT_PROGRESS_SECONDS
    """A job's status mirrors a report that only moved its step and loss at most this often (0: every report);
    a new generation, checkpoint, stop or finish is mirrored at once (`pacing`)."""

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> OperatorSettings:
        """Settings from DSTJ_* variables (and POD_NAME/POD_NAMESPACE from the downward API)."""
        env = os.environ if env is None else env
        namespaces = tuple(n.strip() for n in env.get("DSTJ_WATCH_NAMESPACES", "").split(",") if n.strip())
        level = env.get("DSTJ_LOG_LEVEL", "info").strip().lower() or "info"
        if level not in LOG_LEVELS:
            raise SettingsError(f"DSTJ_LOG_LEVEL={level!r} is not one of {', '.join(LOG_LEVELS)}")
        return cls(
            watch_namespaces=namespaces,
            leader_election=_bool(env, "DSTJ_LEADER_ELECTION"),
            lease_name=env.get("DSTJ_LEADER_LEASE", "").strip() or "deepseek-operator",
            lease_namespace=env.get("POD_NAMESPACE", "").strip() or "default",
            lease_seconds=_int(env, "DSTJ_LEADER_LEASE_SECONDS", 15, 2, 300),
            identity=env.get("POD_NAME", "").strip() or f"{os.uname().nodename}-{os.getpid()}",
            metrics_port=_int(env, "DSTJ_METRICS_PORT", 8080, 0, 65535),
            health_port=_int(env, "DSTJ_HEALTH_PORT", 8081, 0, 65535),
            log_level=level,
            stuck_seconds=_int(env, "DSTJ_STUCK_SECONDS", 300, 10, 86400),
            progress_status_seconds=_int(env, "DSTJ_STATUS_PROGRESS_SECONDS", DEFAULT_PROGRESS_SECONDS, 0, 3600),
        )
