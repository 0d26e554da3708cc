"""Process nodes from the outside: start their agents, and fail them like real machines fail.

``ensure`` (called by ``up``) keeps N nodes running; ``add`` starts one more; ``kill`` is a
machine dying (the agent and every pod process SIGKILLed, nothing said to the API: the node
lifecycle controller must notice); ``reclaim`` is a spot reclaim (the node is cordoned and
tainted, its pods are deleted gracefully so they get SIGTERM and their grace period, then the
node goes away); ``remove`` deletes a node at once; ``teardown`` (called by ``down``) removes
every namespace, cgroup, bridge and mount point the agents made.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from localcluster import health, kubeconfig, network, pki, procs
from localcluster.nodeagent import cgroups, netns
from localcluster.nodeagent.config import NodePaths, NodeSpec
from localcluster.state import StateDir
from localcluster.waiting import wait_until

Progress = Callable[[str], None]
AGENT = "node-agent-"
PROVISIONER = "provisioner"
READY_TIMEOUT = 60.0


@dataclass(frozen=True, kw_only=True)
class NodeSize:
    """What each new node offers the scheduler."""

    cpu: str = "4"
    memory: str = "8Gi"
    pods: int = 110


def prerequisites() -> str | None:
    """Why process nodes cannot run here, or None (root, ``ip``, ``unshare``)."""
    if os.geteuid() != 0:
        return "process nodes need root (network namespaces, veth pairs, bind mounts)"
    for tool in ("ip", "unshare"):
        if shutil.which(tool) is None:
            return f"process nodes need the {tool!r} command (packages iproute2, util-linux)"
    return None


def records(sd: StateDir) -> list[NodeSpec]:
    """Every node record of the cluster, by index."""
    found = [NodeSpec.load(p) for p in sd.nodes.glob("*/node.json")] if sd.nodes.is_dir() else []
    return sorted(found, key=lambda n: n.index)


def agent_alive(sd: StateDir, name: str) -> bool:
    """Whether the node's agent process runs."""
    rec = procs.load(sd.procs, AGENT + name)
    return rec is not None and procs.is_alive(rec)


def _server(sd: StateDir) -> str:
    ports = sd.load_ports()
    if ports is None:
        raise RuntimeError(f"no cluster in {sd.root}: run python -m localcluster up first")
    return f"https://127.0.0.1:{ports.apiserver}"


def _start_agent(sd: StateDir, spec: NodeSpec) -> None:
    """Write the node's credentials and start its agent process."""
    net = network.ensure(sd)
    paths = NodePaths(sd, spec.name)
    spec.save(paths.spec)
    ca = sd.pki / "ca.crt"
    kubeconfig.write(paths.kubeconfig, _server(sd), ca, pki.node_client(sd.pki, spec.name), f"system:node:{spec.name}")
    kubeconfig.write(paths.proxy_kubeconfig, _server(sd), ca, pki.kube_proxy(sd.pki), "system:kube-proxy")
    pki.node_serving(sd.pki, spec.name, (net.node_ip(spec.index),))
    argv = [sys.executable, "-m", "localcluster.nodeagent", "--state", str(sd.root), "--node", spec.name]
    procs.spawn(sd.procs, AGENT + spec.name, argv, sd.logs / f"{AGENT}{spec.name}.log")


def node_ready(sd: StateDir, name: str) -> bool:
    """Whether the API shows the Node with Ready=True."""
    ctx = health.client_context(sd.pki / "ca.crt", pki.admin(sd.pki))
    code, body = health.get(f"{_server(sd)}/api/v1/nodes/{name}", ctx)
    if code != 200:
        return False
    conds = json.loads(body).get("status", {}).get("conditions") or []
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conds)


def wait_ready(sd: StateDir, names: list[str], timeout: float = READY_TIMEOUT) -> None:
    """Wait until the nodes are Ready, failing at once (with its log) if an agent dies."""
    def ready() -> bool:
        for n in names:
            if not agent_alive(sd, n):
                log = sd.logs / f"{AGENT}{n}.log"
                tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:]) if log.exists() else ""
                raise RuntimeError(f"node agent {n} exited; last lines of {log}:\n{tail}")
        return all(node_ready(sd, n) for n in names)

    wait_until(ready, timeout=timeout, what=f"nodes {', '.join(names)} to be Ready", interval=0.05,
               max_interval=0.25)


def _next_name_and_index(sd: StateDir) -> tuple[str, int]:
    """The first free ``node-K`` name and the first free address index."""
    recs = records(sd)
    names, indexes = {r.name for r in recs}, {r.index for r in recs}
    k = 1
    while f"node-{k}" in names:
        k += 1
    i = next(i for i in range(1, 255) if i not in indexes)
    return f"node-{k}", i


def add(sd: StateDir, name: str | None = None, size: NodeSize = NodeSize(), taints: tuple[str, ...] = (),
        labels: dict[str, str] | None = None, wait: bool = True) -> str:
    """Start a new node (or restart a killed one of that name); return its name."""
    why = prerequisites()
    if why:
        raise RuntimeError(why)
    auto_name, index = _next_name_and_index(sd)
    old = next((r for r in records(sd) if r.name == name), None)
    if old is not None and agent_alive(sd, old.name):
        raise RuntimeError(f"node {name} already runs")
    spec = NodeSpec(name=name or auto_name, index=old.index if old else index, cpu=size.cpu, memory=size.memory,
                    pods=size.pods, taints=list(taints), labels=dict(labels or {}))
    _start_agent(sd, spec)
    if wait:
        wait_ready(sd, [spec.name])
    return spec.name


def ensure(sd: StateDir, count: int, size: NodeSize, progress: Progress) -> list[str]:
    """Keep ``count`` nodes running: restart crashed agents, add nodes while fewer are active.

    Killed and reclaimed nodes stay down (that was the point); new names replace them.
    """
    if count <= 0:
        return []
    why = prerequisites()
    if why:
        raise RuntimeError(f"{why}; use --nodes 0 for a control plane without nodes")
    netns.ensure_bridge(network.ensure(sd))
    _ensure_provisioner(sd)
    active = [r for r in records(sd) if r.state == "active" and r.kind == "process"]
    started = []
    for r in active:
        if not agent_alive(sd, r.name):
            _start_agent(sd, r)
            started.append(r.name)
    while len(active) < count:
        name = add(sd, size=size, wait=False)
        active.append(NodeSpec.load(NodePaths(sd, name).spec))
        started.append(name)
    if started:
        progress(f"starting node agents {', '.join(started)}")
        wait_ready(sd, started)
    return [r.name for r in active]


def _ensure_provisioner(sd: StateDir) -> None:
    """Start the hostPath volume provisioner (and its default StorageClass) unless it runs."""
    rec = procs.load(sd.procs, PROVISIONER)
    if rec is None or not procs.is_alive(rec):
        argv = [sys.executable, "-m", "localcluster.provisioner", "--state", str(sd.root)]
        procs.spawn(sd.procs, PROVISIONER, argv, sd.logs / f"{PROVISIONER}.log")


def _kill_pods(sd: StateDir, name: str) -> None:
    """SIGKILL every process of the node's pods (by cgroup, and by network namespace)."""
    cgroups.signal_all(cgroups.node_dir(sd.tag, name), signal.SIGKILL)
    for record in (NodePaths(sd, name).pods).glob("*/sandbox.json"):
        try:
            ns = json.loads(record.read_text())["netns"]
        except (OSError, ValueError, KeyError):
            continue
        _kill_netns_processes(ns)


def _kill_netns_processes(ns: str) -> None:
    """SIGKILL every process in a network namespace (``ip netns pids``)."""
    res = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True, check=False)
    for pid in res.stdout.split():
        try:
            os.kill(int(pid), signal.SIGKILL)
        except (ProcessLookupError, ValueError):
            continue


def kill(sd: StateDir, name: str) -> None:
    """The node dies: its agent and all its pods' processes are SIGKILLed; the API is not told."""
    paths = NodePaths(sd, name)
    if not paths.spec.exists():
        raise RuntimeError(f"no node {name} in {sd.root}")
    rec = procs.load(sd.procs, AGENT + name)
    if rec is not None:
        procs.kill_now(rec)
    spec = NodeSpec.load(paths.spec)
    if spec.kind == "real":
        from localcluster import realnodes  # imports this module

        realnodes.kill_tree(sd, name)
        spec.state = "killed"
        spec.save(paths.spec)
        return
    _kill_pods(sd, name)
    cg = cgroups.node_dir(sd.tag, name)
    wait_until(lambda: not cgroups.pids(cg), timeout=10, what=f"the processes of node {name} to die",
               interval=0.01, max_interval=0.1)
    spec = NodeSpec.load(paths.spec)
    spec.state = "killed"
    spec.save(paths.spec)


def cleanup(sd: StateDir, name: str) -> None:
    """Remove what a dead node left on this machine (cgroups, namespaces, address, files)."""
    paths = NodePaths(sd, name)
    if paths.spec.exists() and NodeSpec.load(paths.spec).kind == "real":
        from localcluster import realnodes  # imports this module

        realnodes.cleanup(sd, name)
        return
    _kill_pods(sd, name)
    cgroups.kill_and_remove(cgroups.node_dir(sd.tag, name))
    for record in paths.pods.glob("*/sandbox.json"):
        try:
            sb = json.loads(record.read_text())
            netns.delete(netns.Sandbox(netns=sb["netns"], ip="", veth=sb["veth"]))
        except (OSError, ValueError, KeyError):
            continue
    shutil.rmtree(paths.pods, ignore_errors=True)
    net = sd.load_network()
    if net is not None and paths.spec.exists():
        netns.remove_node_address(net, net.node_ip(NodeSpec.load(paths.spec).index))


def stop_agent(sd: StateDir, name: str, grace: float = 5.0) -> None:
    """Stop a node's agent (SIGTERM; its pods are not touched) and forget its record."""
    rec = procs.load(sd.procs, AGENT + name)
    if rec is not None:
        procs.stop(rec, grace=grace)
        procs.forget(sd.procs, rec.name)


def forget(sd: StateDir, name: str) -> None:
    """Delete the node's record and files: it is gone for good (``up`` will not restart it,
    and its name and address index are free again)."""
    shutil.rmtree(NodePaths(sd, name).root, ignore_errors=True)


def teardown(sd: StateDir, progress: Progress) -> None:
    """Remove everything the node agents made (after their processes were stopped)."""
    from localcluster import realnodes  # imports this module

    net = sd.load_network()
    realnodes.teardown(sd, progress)  # before the bridge goes: kube-proxy's cleanup and the host record
    cgroups.kill_and_remove(cgroups.cluster_dir(sd.tag))
    for ns in netns.namespaces_with_prefix(f"lc-{sd.tag}-"):
        _kill_netns_processes(ns)
    gone = netns.delete_all(sd.tag)
    if net is not None:
        netns.delete_bridge(net)
    remove_mountpoints(sd.root / "mountpoints.txt")
    if gone:
        progress(f"removed {gone} pod network namespaces")


def remove_mountpoints(record: Path) -> None:
    """Delete the empty mount points pods created on the host, deepest first."""
    try:
        paths = {Path(p) for p in record.read_text().splitlines() if p.strip()}
    except OSError:
        return
    for p in sorted(paths, key=lambda p: len(p.parts), reverse=True):
        try:
            if p.is_dir() and not p.is_symlink():
                p.rmdir()
            elif p.is_file() and p.stat().st_size == 0:
                p.unlink()
        except OSError:
            continue
