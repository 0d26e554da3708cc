"""Capacity signals for spec.autoscaling: when the cluster last offered room that a job waiting to grow may fit in.

A signal is a Node added or become schedulable (Ready and not cordoned), seen only where the operator
watches the whole cluster (a namespaced operator may not watch Nodes), or a job's pod deleted in a
namespace (its node has room again). Each signal ends the growth backoff of the jobs that wait on it
(`autoscale.growth_backoff_left`) and brings them a pass at once. Without signals growth relies on the
backoff alone.

Held in memory only, like `requeue`: a restarted operator has seen no signal, so its jobs grow again after
their backoff. This module only remembers; it makes no API calls and decides nothing.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from datetime import datetime
from typing import Any

Key = tuple[str, str]

_lock = threading.Lock()
_cluster_signal: datetime | None = None
_namespace_signal: dict[str, datetime] = {}
_waiting: set[Key] = set()
_nodes: dict[str, bool] = {}
"""Node name -> whether it was schedulable when last seen."""


def last_signal(namespace: str) -> datetime | None:
    """When the cluster last signalled capacity a job in `namespace` may use (None: never, since start)."""
    with _lock:
        times = [t for t in (_cluster_signal, _namespace_signal.get(namespace)) if t is not None]
    return max(times, default=None)


def waiting(key: Key, waits: bool) -> None:
    """Record whether job `key` waits for capacity to grow (its growth backoff runs)."""
    with _lock:
        if waits:
            _waiting.add(key)
        else:
            _waiting.discard(key)


def signal(namespace: str | None, now: datetime) -> list[Key]:
    """Record a capacity signal (namespace None: cluster-wide); returns the waiting jobs it concerns."""
    global _cluster_signal
    with _lock:
        if namespace is None:
            _cluster_signal = now
            return sorted(_waiting)
        _namespace_signal[namespace] = now
        return sorted(k for k in _waiting if k[0] == namespace)


def schedulable(node: Mapping[str, Any]) -> bool:
    """Whether the scheduler may place pods on a Node: Ready and not cordoned."""
    if (node.get("spec") or {}).get("unschedulable"):
        return False
    conditions = (node.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def node_seen(event_type: str | None, node: Mapping[str, Any]) -> bool:
    """A Node watch event; True when it signals capacity: a node schedulable now that was not when last seen,
    or never seen since the watch listed the nodes (event type None: kopf's initial listing, no signal)."""
    name = str((node.get("metadata") or {}).get("name", ""))
    with _lock:
        if event_type == "DELETED":
            _nodes.pop(name, None)
            return False
        now_ok, before = schedulable(node), _nodes.get(name)
        _nodes[name] = now_ok
    return now_ok and event_type is not None and before is not True
