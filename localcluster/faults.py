"""Node faults that need the API: a spot-style reclaim, and removing a node outright.

``kill`` (in ``nodes.py``) tells the API nothing, on purpose. A reclaim is the polite kind of
loss a spot instance gets: the node is cordoned and tainted ``localcluster.dev/reclaim:NoSchedule``
so nothing new lands there, each pod gets a ``DisruptionTarget`` condition (reason
``TerminationByKubelet``, as a kubelet's graceful node shutdown sets) and is deleted with its own
grace period, so its processes see SIGTERM first; once they are gone the agent stops and the
Node (and its Lease) is deleted.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from localcluster import nodes
from localcluster.nodeagent.kubeapi import Api, ApiError, now_rfc3339
from localcluster.state import StateDir
from localcluster.waiting import wait_until

Progress = Callable[[str], None]
RECLAIM_TAINT = "localcluster.dev/reclaim"


def _admin(sd: StateDir) -> Api:
    return Api(sd.admin_kubeconfig, pool_size=4)


def _pods_on(api: Api, name: str) -> list[dict[str, Any]]:
    items = api.get("/api/v1/pods", {"fieldSelector": f"spec.nodeName={name}"}).get("items") or []
    return list(items)


def reclaim(sd: StateDir, name: str, progress: Progress, extra_wait: float = 30.0) -> None:
    """Cordon and taint the node, delete its pods gracefully, wait, then remove the node."""
    api = _admin(sd)
    node = api.get(f"/api/v1/nodes/{name}")
    taints = [t for t in node["spec"].get("taints") or [] if t.get("key") != RECLAIM_TAINT]
    taints.append({"key": RECLAIM_TAINT, "value": "true", "effect": "NoSchedule", "timeAdded": now_rfc3339()})
    api.patch(f"/api/v1/nodes/{name}", {"spec": {"unschedulable": True, "taints": taints}}, kind="merge-patch")
    pods = [p for p in _pods_on(api, name) if p["status"].get("phase") not in ("Succeeded", "Failed")]
    longest = 0.0
    for p in pods:
        meta = p["metadata"]
        path = f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}"
        cond = {"type": "DisruptionTarget", "status": "True", "reason": "TerminationByKubelet",
                "message": f"node {name} is being reclaimed", "lastTransitionTime": now_rfc3339()}
        try:
            api.patch(path + "/status", {"status": {"conditions": [cond]}})
            api.delete(path, {"preconditions": {"uid": meta["uid"]}})
        except ApiError as e:
            if e.status not in (404, 409):
                raise
        longest = max(longest, float(p["spec"].get("terminationGracePeriodSeconds", 30)))
    progress(f"reclaiming {name}: {len(pods)} pods deleted gracefully (grace up to {longest:.0f} s)")
    wait_until(lambda: not _pods_on(api, name), timeout=longest + extra_wait,
               what=f"the pods of node {name} to terminate", interval=0.1, max_interval=0.5)
    remove(sd, name, api)
    progress(f"node {name} reclaimed")


def remove(sd: StateDir, name: str, api: Api | None = None) -> None:
    """Remove a node at once: stop its agent, kill its pods, delete the Node and its Lease."""
    api = api or _admin(sd)
    nodes.stop_agent(sd, name)
    nodes.cleanup(sd, name)
    for path in (f"/api/v1/nodes/{name}", f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{name}"):
        try:
            api.delete(path)
        except ApiError as e:
            if e.status != 404:
                raise
    nodes.forget(sd, name)
