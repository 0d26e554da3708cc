"""Register the Node, keep it Ready, and renew its Lease, as a kubelet does.

The node lifecycle controller judges a node by its Lease in ``kube-node-lease`` (and its
status): with the local controller manager's 8 s grace period, the Lease is renewed every 2 s,
and the full status (Ready, capacity, addresses, the kubelet endpoint for ``kubectl logs``) is
posted every 10 s, which also brings a node back to Ready after a stall made it Unknown.
Everything here runs as ``system:node:NAME``, so the Node authorizer and NodeRestriction decide
what it may touch.
"""

from __future__ import annotations

import logging
import platform
import threading
import uuid
from typing import Any

from localcluster.nodeagent.config import KUBELET_PORT, KUBELET_VERSION, AgentConfig
from localcluster.nodeagent.kubeapi import Api, ApiError, now_micro, now_rfc3339

Obj = dict[str, Any]
LEASE_PERIOD = 2.0
STATUS_PERIOD = 10.0
LEASE_DURATION = 40
LEASE_NS = "kube-node-lease"


def _taint(text: str) -> Obj:
    """``key=value:Effect`` or ``key:Effect`` -> a taint object."""
    kv, _, effect = text.rpartition(":")
    key, _, value = kv.partition("=")
    out = {"key": key, "effect": effect}
    if value:
        out["value"] = value
    return out


def _arch() -> str:
    """The architecture in Kubernetes' words."""
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())


def node_object(cfg: AgentConfig) -> Obj:
    """The Node as first registered: labels, taints (``--register-with-taints``)."""
    name = cfg.spec.name
    labels = {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux",
              "kubernetes.io/arch": _arch(),
              "node.kubernetes.io/instance-type": "localcluster-process", **cfg.spec.labels}
    spec: Obj = {}
    if cfg.spec.taints:
        spec["taints"] = [_taint(t) for t in cfg.spec.taints]
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": labels}, "spec": spec}


def node_status(cfg: AgentConfig, boot_id: str) -> Obj:
    """The Node's status: size, Ready and pressure conditions, addresses, kubelet endpoint."""
    now = now_rfc3339()
    size = {"cpu": cfg.spec.cpu, "memory": cfg.spec.memory, "pods": str(cfg.spec.pods),
            "ephemeral-storage": "100Gi"}

    def cond(ctype: str, ok: bool, reason: str, message: str) -> Obj:
        return {"type": ctype, "status": "True" if ok else "False", "reason": reason, "message": message,
                "lastHeartbeatTime": now, "lastTransitionTime": now}

    return {
        "capacity": size, "allocatable": size,
        "conditions": [cond("MemoryPressure", False, "KubeletHasSufficientMemory", "kubelet has sufficient memory"),
                       cond("DiskPressure", False, "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
                       cond("PIDPressure", False, "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
                       cond("Ready", True, "KubeletReady", "localcluster node agent is posting ready status")],
        "addresses": [{"type": "InternalIP", "address": cfg.node_ip}, {"type": "Hostname", "address": cfg.spec.name}],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": KUBELET_PORT}},
        "nodeInfo": {"machineID": boot_id, "systemUUID": boot_id, "bootID": boot_id,
                     "kernelVersion": platform.release(), "osImage": "localcluster process node",
                     "containerRuntimeVersion": "localcluster://0.1", "kubeletVersion": KUBELET_VERSION,
                     "operatingSystem": "linux", "architecture": _arch()},
    }


class Heartbeat:
    """Registers the node and keeps its Lease and status fresh from a background thread."""

    def __init__(self, cfg: AgentConfig, api: Api, log: logging.Logger) -> None:
        self.cfg, self.api, self.log = cfg, api, log
        self.boot_id = str(uuid.uuid4())
        self.stop = threading.Event()
        self._lease: Obj | None = None  # the last Lease written: renewals PUT it without a GET
        self.thread = threading.Thread(target=self._loop, name="heartbeat", daemon=True)

    def register(self) -> None:
        """Create the Node (or take over an existing one of that name) and post its status."""
        try:
            self.api.post("/api/v1/nodes", node_object(self.cfg))
        except ApiError as e:
            if e.status != 409:
                raise
        self.post_status()
        self.renew_lease()

    def post_status(self) -> None:
        """Patch the full node status (conditions merge by type)."""
        self.api.patch(f"/api/v1/nodes/{self.cfg.spec.name}/status", {"status": node_status(self.cfg, self.boot_id)})

    def renew_lease(self) -> None:
        """Renew (or create) the node's Lease."""
        name, path = self.cfg.spec.name, f"/apis/coordination.k8s.io/v1/namespaces/{LEASE_NS}/leases"
        lease = self._lease
        if lease is None:
            try:
                lease = self.api.get(f"{path}/{name}")
            except ApiError as e:
                if e.status != 404:
                    raise
                self._lease = self.api.post(path, {
                    "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                    "metadata": {"name": name, "namespace": LEASE_NS},
                    "spec": {"holderIdentity": name, "leaseDurationSeconds": LEASE_DURATION,
                             "renewTime": now_micro()}})
                return
        lease["spec"].update(holderIdentity=name, leaseDurationSeconds=LEASE_DURATION, renewTime=now_micro())
        try:
            self._lease = self.api.put(f"{path}/{name}", lease)
        except ApiError:
            self._lease = None  # conflict or gone: read it again next time
            raise

    def _loop(self) -> None:
        """Renew every 2 s, post status every 10 s; errors are logged and retried next round."""
        last_status = 0.0
        while not self.stop.wait(LEASE_PERIOD):
            try:
                self.renew_lease()
                last_status += LEASE_PERIOD
                if last_status >= STATUS_PERIOD:
                    self.post_status()
                    last_status = 0.0
            except Exception as e:  # a heartbeat must survive API hiccups
                self.log.warning("heartbeat failed: %s", e)
