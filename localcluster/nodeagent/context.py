"""What pod workers share within one agent: config, API access, addresses, Service records.

Kept apart from ``agent.py`` so the pod worker depends on this small surface, not on the agent's
watch loops, and so tests can build one by hand.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import Any

from localcluster.nodeagent import hosts
from localcluster.nodeagent.config import AgentConfig
from localcluster.nodeagent.kubeapi import Api, ApiError

Obj = dict[str, Any]


class IpPool:
    """The node's pod addresses; handed out round-robin so a freed one is not reused at once
    (a late packet or a stale hosts entry must not reach the next pod)."""

    def __init__(self, addresses: list[str]) -> None:
        self._free = list(addresses)
        self._used: dict[str, str] = {}
        self._lock = threading.Lock()

    def allocate(self, uid: str) -> str:
        """Return the pod's address (the same one again for the same uid)."""
        with self._lock:
            if uid in self._used:
                return self._used[uid]
            if not self._free:
                raise RuntimeError("no pod address left on this node")
            ip = self._free.pop(0)
            self._used[uid] = ip
            return ip

    def release(self, uid: str) -> None:
        """Give the pod's address back (to the end of the queue)."""
        with self._lock:
            ip = self._used.pop(uid, None)
            if ip is not None:
                self._free.append(ip)


@dataclass
class PodContext:
    """The agent's services, as pod workers use them."""

    cfg: AgentConfig
    api: Api
    records: hosts.ServiceRecords
    ips: IpPool
    log: logging.Logger
    #: Node allocatable, for resourceFieldRef limits that a container leaves unset.
    allocatable: Obj = field(default_factory=dict)

    def get(self, kind: str, ns: str, name: str) -> Obj | None:
        """GET a configmap, secret, PVC (namespaced) or PV (``ns`` empty); None if absent."""
        path = f"/api/v1/namespaces/{ns}/{kind}/{name}" if ns else f"/api/v1/{kind}/{name}"
        try:
            return self.api.get(path)
        except ApiError as e:
            if e.status == 404:
                return None
            raise

    def mint(self, sa: str, ns: str, spec: Obj) -> Obj:
        """Request a service-account token bound to a pod (TokenRequest API); return its status."""
        body = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec}
        res = self.api.post(f"/api/v1/namespaces/{ns}/serviceaccounts/{sa}/token", body)
        return dict(res["status"])
