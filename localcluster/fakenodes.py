"""Simulated nodes: kwok plays N fake Nodes and the lifecycles of the pods bound to them.

Process nodes run real processes and cost real CPU; a fleet of thousands of pods cannot run that
way on two cores. kwok (built from its pinned module by ``build.sh kwok``) runs as one more detached
process of the cluster (recorded in ``procs/``, so ``down`` stops it), manages only the Nodes that
carry ``FAKE_ANNOTATION``, renews their Leases, and takes their pods through the Stages in
``kwok_stages.yaml``: Pending, Running, Ready, and a graceful deletion. Nothing runs in those pods.

Fake nodes are tainted ``FAKE_TAINT`` by default, so only pods that tolerate it land there and a
shared cluster's real pods stay on process nodes; a cluster of fake nodes alone (the fleet
benchmark) creates them untainted.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from localcluster import build, kubeconfig, pki, procs
from localcluster.state import StateDir
from localcluster.waiting import wait_until

if TYPE_CHECKING:
    from localcluster.nodeagent.kubeapi import Api

Progress = Callable[[str], None]
PROC = "kwok"
STAGES = Path(__file__).with_name("kwok_stages.yaml")
FAKE_ANNOTATION = ("kwok.x-k8s.io/node", "fake")
"""The annotation kwok is told to manage nodes by (kwok's own convention)."""
FAKE_LABEL = ("type", "kwok")
"""A label on every fake node, for nodeSelectors and for listing them."""
FAKE_TAINT = {"key": "kwok.x-k8s.io/node", "value": "fake", "effect": "NoSchedule"}
"""Keeps pods that do not tolerate it off fake nodes."""
FAKE_TOLERATION = {"key": FAKE_TAINT["key"], "operator": "Equal", "value": FAKE_TAINT["value"],
                   "effect": "NoSchedule"}
"""What a pod adds to be schedulable on a tainted fake node."""
PREFIX = "fake-node-"
POD_CIDR = "100.64.0.0/10"
"""Pod IPs of fake pods: room for a million, clear of the process nodes' and the services' ranges."""
READY_TIMEOUT = 60.0


def _api(sd: StateDir) -> Api:
    from localcluster.nodeagent.kubeapi import Api  # the kubernetes client: imported only where needed

    return Api(sd.admin_kubeconfig)


def _status(e: Exception) -> int | None:
    """The HTTP status of an API error (None for any other exception)."""
    from localcluster.nodeagent.kubeapi import ApiError

    return e.status if isinstance(e, ApiError) else None


def node(name: str, taint: bool) -> dict[str, Any]:
    """The Node object of one fake node (kwok fills its status: capacity, conditions, addresses)."""
    key, value = FAKE_ANNOTATION
    return {"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "annotations": {key: value},
                         "labels": {FAKE_LABEL[0]: FAKE_LABEL[1], "kubernetes.io/hostname": name,
                                    "kubernetes.io/os": "linux"}},
            "spec": {"taints": [FAKE_TAINT] if taint else []}}


def running(sd: StateDir) -> bool:
    """Whether this cluster's kwok process runs."""
    rec = procs.load(sd.procs, PROC)
    return rec is not None and procs.is_alive(rec)


def start(sd: StateDir, progress: Progress) -> None:
    """Start kwok unless it runs (building it first, with progress, when it is not cached)."""
    if running(sd):
        return
    bins = build.kwok_bin_dir()
    ports = sd.load_ports()
    if ports is None:
        raise RuntimeError(f"no cluster in {sd.root}: run python -m localcluster up first")
    # Its own identity (in system:masters: it writes node and pod status, Leases, and deletes pods), so
    # the API server's audit and flow-control metrics tell its requests from everyone else's.
    kc = sd.kubeconfigs / "kwok.kubeconfig"
    kubeconfig.write(kc, f"https://127.0.0.1:{ports.apiserver}", sd.pki / "ca.crt",
                     pki.issue(sd.pki, "kwok", "localcluster:kwok", ("system:masters",)), "localcluster:kwok")
    key, value = FAKE_ANNOTATION
    argv = [str(bins / "kwok"), f"--kubeconfig={kc}", f"--config={STAGES}",
            f"--manage-nodes-with-annotation-selector={key}={value}",
            f"--node-lease-duration-seconds={sd.load_heartbeats().fake_node_lease_s}", f"--cidr={POD_CIDR}",
            "--v=WARN"]  # at INFO it logs a line per pod status write: a fleet's worth of disk and CPU
    progress("starting kwok (simulated nodes)")
    procs.spawn(sd.procs, PROC, argv, sd.logs / "kwok.log")


def names(sd: StateDir) -> list[str]:
    """The fake nodes the API server has, by name."""
    items = _api(sd).get("/api/v1/nodes", {"labelSelector": "=".join(FAKE_LABEL)}).get("items") or []
    return sorted(n["metadata"]["name"] for n in items)


def ready(sd: StateDir, name: str) -> bool:
    """Whether the API shows the node Ready (kwok has taken it)."""
    try:
        conds = _api(sd).get(f"/api/v1/nodes/{name}").get("status", {}).get("conditions") or []
    except Exception as e:
        if _status(e) is None:
            raise
        return False
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conds)


def add(sd: StateDir, name: str, taint: bool = True) -> None:
    """Register one more fake node (kwok must run to make it Ready)."""
    try:
        _api(sd).post("/api/v1/nodes", node(name, taint))
    except Exception as e:
        if _status(e) != 409:
            raise


def remove(sd: StateDir, name: str) -> None:
    """Delete a fake node: its pods are left to the pod garbage collector, as for a machine gone for good."""
    try:
        _api(sd).delete(f"/api/v1/nodes/{name}")
    except Exception as e:
        if _status(e) != 404:
            raise


def ensure(sd: StateDir, count: int, progress: Progress, taint: bool = True) -> list[str]:
    """Keep at least ``count`` fake nodes, all Ready, with kwok running; returns their names."""
    if count <= 0:
        return []
    start(sd, progress)
    have = names(sd)
    k = 1
    while len(have) < count:
        name = f"{PREFIX}{k}"
        if name not in have:
            add(sd, name, taint)
            have.append(name)
        k += 1

    def all_ready() -> bool:
        if not running(sd):
            log = sd.logs / "kwok.log"
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:]) if log.exists() else ""
            raise RuntimeError(f"kwok exited; last lines of {log}:\n{tail}")
        return all(ready(sd, n) for n in have)

    wait_until(all_ready, timeout=READY_TIMEOUT, what=f"{len(have)} fake nodes to be Ready", interval=0.1,
               max_interval=0.5)
    progress(f"{len(have)} fake nodes ready")
    return sorted(have)
