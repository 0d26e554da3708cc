"""Real nodes: an upstream kubelet and containerd (runc, CNI bridge) per node, beside process nodes.

Each real node is one launcher process (``node-agent-NAME`` in ``procs/``, like a process node's
agent, so ``node kill|reclaim|remove`` and ``up`` treat both kinds alike) running
``launch.sh`` in a private mount namespace (``unshare -m``, propagation slave: nothing mounted
inside reaches the host). The script overlays ``/run`` and ``/var/lib`` with directories of the
node (containerd's shim sockets and the CNI cache land there, not on the host), binds the
node's own ``var-log`` over ``/var/log`` (a kubelet deletes log directories of pods it does not
know, so nodes must not share them), binds files over the kernel settings a kubelet writes
(``KERNEL_TUNABLES``: the host keeps its values), starts containerd, imports the pause image
and execs the kubelet. All of its processes, the containers' included, are in the cgroups
``localcluster-<tag>/<node>`` (v2, for tracking) and the kubelet's ``cgroupRoot`` of the same
name in every v1 hierarchy (limits), so a kill is a few writes and nothing escapes it.

The cluster-wide pieces (Service routing by kube-proxy, cluster DNS by ``clusterdns``) are in
``realnet.py``; what this changes on the host and how ``down`` undoes it is in ``hostguard.py``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from localcluster import build, hostguard, kubeconfig, network, nodes, ociimage, pki, procs, realnet
from localcluster.nodeagent import cgroups, netns
from localcluster.nodeagent.config import KUBELET_PORT, NodePaths, NodeSpec
from localcluster.state import Network, StateDir
from localcluster.waiting import WaitTimeout, wait_until

Progress = Callable[[str], None]
#: Kernel settings a kubelet sets at start (``setupKernelTunables``); each is hidden behind a
#: file of the node's own inside its mount namespace, so the host keeps its values.
KERNEL_TUNABLES = ("vm/overcommit_memory", "vm/panic_on_oom", "kernel/panic", "kernel/panic_on_oops",
                   "kernel/keys/root_maxkeys", "kernel/keys/root_maxbytes")
#: The sandbox ("pause") image every pod's namespaces hang on, built here from gomod/pause.
PAUSE_IMAGE = "localcluster.dev/pause:1"
#: Where Debian's packages put the CNI plugins and runc.
CNI_BIN_DIR = Path("/usr/lib/cni")
CNI_PLUGINS = ("bridge", "host-local", "loopback", "portmap")
RUNC = "runc"
#: Lease renewal every 2 s (a quarter of the lease), as process nodes, within the controller
#: manager's 8 s grace period.
NODE_LEASE_SECONDS = 8
READY_TIMEOUT = 90.0
INSTANCE_TYPE = "localcluster-real"
#: Bytes in a unix socket path, with its terminating NUL (sockaddr_un.sun_path).
SOCKET_PATH_MAX = 108


def prerequisites() -> str | None:
    """Why real nodes cannot run here, or None (root, runc, iptables, the CNI plugins, unshare)."""
    if os.geteuid() != 0:
        return "real nodes need root (mount namespaces, cgroups, iptables)"
    for tool, package in ((RUNC, "runc"), ("iptables", "iptables"), ("unshare", "util-linux"),
                          ("ip", "iproute2")):
        if shutil.which(tool) is None:
            return f"real nodes need the {tool!r} command (Debian package {package}; `make node-deps`)"
    missing = [p for p in CNI_PLUGINS if not (CNI_BIN_DIR / p).is_file()]
    if missing:
        return (f"real nodes need the CNI plugins {', '.join(missing)} in {CNI_BIN_DIR} "
                "(Debian package containernetworking-plugins; `make node-deps`)")
    if cgroups.root() is None:
        return "real nodes need a writable cgroup2 hierarchy (to track every process of a node)"
    return None


@dataclass(frozen=True)
class RealNodePaths:
    """Files of one real node, under the process node layout's ``<state>/nodes/<name>``."""

    base: NodePaths

    @property
    def root(self) -> Path:
        """``<state>/nodes/<name>``."""
        return self.base.root

    @property
    def kubeconfig(self) -> Path:
        """The node's identity (system:node:NAME)."""
        return self.base.kubeconfig

    @property
    def containerd(self) -> Path:
        """containerd's root, state and sockets."""
        return self.root / "containerd"

    @property
    def socket(self) -> Path:
        """containerd's gRPC socket (the kubelet's CRI endpoint)."""
        return self.containerd / "containerd.sock"

    def check_socket_paths(self) -> None:
        """Refuse a state directory so deep that a unix socket path under it would not fit."""
        longest = max(len(f"{self.socket}.ttrpc"), len(str(self.kubelet / "pod-resources" / "0123456789")))
        if longest >= SOCKET_PATH_MAX:
            raise RuntimeError(f"the state directory {self.base.sd.root} is too deep for real nodes: unix socket "
                               f"paths under it reach {longest} bytes (at most {SOCKET_PATH_MAX - 1}); use a "
                               "shorter --state (or LOCALCLUSTER_STATE)")

    @property
    def kubelet(self) -> Path:
        """The kubelet's root directory (pods' volumes, checkpoints, plugins)."""
        return self.root / "kubelet"


def cgroup_root(sd: StateDir, name: str) -> str:
    """The kubelet's ``cgroupRoot``: pods go below it in every v1 hierarchy."""
    return f"/localcluster-{sd.tag}/{name}"


def v1_hierarchies() -> list[Path]:
    """Mount points of the cgroup v1 hierarchies (cgroup v1 or hybrid hosts; [] on pure v2)."""
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        if right.split()[:1] == ["cgroup"]:
            found.append(Path(left.split()[4]))
    return found


#: cpu.shares of a node's cgroup root: the weight of everything the node's pods run, against each
#: process of the host (1024 each). A default 1024 made a whole node weigh one host process, and on
#: a loaded machine (load 20 here) its containers got a twentieth of their due: process nodes' pods,
#: plain host processes, never were behind like that. Eight processes' worth.
NODE_CPU_SHARES = 8 * 1024


def _make_v1_root(path: str) -> None:
    """Create the kubelet's cgroup root in every v1 hierarchy (it refuses a missing one).

    A new cpuset cgroup starts with no CPUs and no memory nodes; each level copies its parent's.
    Each level gets ``NODE_CPU_SHARES`` where the hierarchy has cpu.shares.
    """
    for h in v1_hierarchies():
        d = h
        for part in path.strip("/").split("/"):
            parent, d = d, d / part
            d.mkdir(exist_ok=True)
            for f in ("cpuset.cpus", "cpuset.mems"):
                if (d / f).exists() and not (d / f).read_text().strip():
                    (d / f).write_text((parent / f).read_text())
            if (d / "cpu.shares").exists():
                (d / "cpu.shares").write_text(f"{NODE_CPU_SHARES}\n")


def _v1_pids(path: str) -> list[int]:
    """Pids anywhere below ``path`` in any v1 hierarchy."""
    found: set[int] = set()
    for h in v1_hierarchies():
        d = h / path.strip("/")
        if d.is_dir():
            for procs_file in d.rglob("cgroup.procs"):
                try:
                    found.update(int(x) for x in procs_file.read_text().split())
                except (OSError, ValueError):
                    continue
    return sorted(found)


def _remove_v1_tree(path: str) -> None:
    """Remove ``path`` and its children from every v1 hierarchy, deepest first."""
    for h in v1_hierarchies():
        d = h / path.strip("/")
        if d.is_dir():
            cgroups.remove(d)


def kill_tree(sd: StateDir, name: str) -> None:
    """SIGKILL every process of a real node (daemons, shims, containers) and wait until none is left."""
    v2 = cgroups.node_dir(sd.tag, name)
    v1 = cgroup_root(sd, name)

    def left() -> list[int]:
        return sorted(set(cgroups.pids(v2)) | set(_v1_pids(v1)))

    for _ in range(50):  # a dying shim may still fork a runc: repeat until the trees stay empty
        cgroups.signal_all(v2, signal.SIGKILL)
        for pid in _v1_pids(v1):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                continue
        try:
            wait_until(lambda: not left(), timeout=2.0, what=f"the processes of real node {name} to die",
                       interval=0.01, max_interval=0.1)
            return
        except WaitTimeout:
            continue
    raise RuntimeError(f"processes of real node {name} survive SIGKILL: {left()}")


def _containerd_toml(sd: StateDir, name: str, index: int, net: Network) -> str:
    """containerd's config: its own root, state, sockets, runc root and CNI config; no host paths."""
    p = RealNodePaths(NodePaths(sd, name))
    c = p.containerd
    return f"""version = 3
root = "{c / 'root'}"
state = "{c / 'state'}"

[grpc]
  address = "{p.socket}"
[ttrpc]
  address = "{p.socket}.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = "{c / 'opt'}"
[plugins."io.containerd.nri.v1.nri"]
  disable = true

[plugins."io.containerd.cri.v1.runtime"]
  enable_selinux = false
  disable_apparmor = true
  # Root here lacks CAP_SYS_RESOURCE: runc cannot lower oom_score_adj below its own, and every
  # sandbox (which asks for -998) would fail to start.
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  [plugins."io.containerd.cri.v1.runtime".cni]
    bin_dirs = ["{CNI_BIN_DIR}"]
    conf_dir = "{p.root / 'cni'}"
    max_conf_num = 1
  [plugins."io.containerd.cri.v1.runtime".containerd]
    default_runtime_name = "runc"
    [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc.options]
        BinaryName = "{shutil.which(RUNC) or RUNC}"
        Root = "{c / 'runc'}"
        SystemdCgroup = false

[plugins."io.containerd.cri.v1.images"]
  snapshotter = "overlayfs"
  [plugins."io.containerd.cri.v1.images".pinned_images]
    sandbox = "{PAUSE_IMAGE}"

[plugins."io.containerd.grpc.v1.cri"]
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
"""


def _cni_conflist(sd: StateDir, name: str, index: int, net: Network) -> dict[str, object]:
    """The node's CNI network: veths on the cluster's bridge, addresses from the node's /24.

    The bridge and its gateway address (the API server's) exist already (``netns.ensure_bridge``),
    so the plugin is not the gateway: it neither re-addresses the bridge nor turns on forwarding.
    """
    base = net.pod_ips(index)
    return {
        "cniVersion": "1.0.0",
        "name": f"lc-{sd.tag}",
        "plugins": [
            {"type": "bridge", "bridge": net.bridge, "isGateway": False, "ipMasq": False, "hairpinMode": True,
             "ipam": {"type": "host-local",
                      "ranges": [[{"subnet": net.cidr, "rangeStart": base[0], "rangeEnd": base[-1],
                                   "gateway": net.bridge_ip}]],
                      "routes": [{"dst": "0.0.0.0/0", "gw": net.bridge_ip}],
                      "dataDir": str(NodePaths(sd, name).root / "cni-ipam")}},
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }


def _kubelet_config(sd: StateDir, spec: NodeSpec, net: Network) -> dict[str, object]:
    """The KubeletConfiguration: own ports and roots, no eviction or image GC, cgroup v1 allowed."""
    p = RealNodePaths(NodePaths(sd, spec.name))
    node_ip = net.node_ip(spec.index)
    serving = pki.node_serving(sd.pki, spec.name, (node_ip,))
    zero = "0%"
    taints = []
    for t in spec.taints:
        kv, _, effect = t.partition(":")
        key, _, value = kv.partition("=")
        taints.append({"key": key, "value": value, "effect": effect})
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "address": node_ip, "port": KUBELET_PORT, "readOnlyPort": 0,
        "healthzBindAddress": node_ip, "healthzPort": 10248,
        "authentication": {"anonymous": {"enabled": False}, "webhook": {"enabled": True},
                           "x509": {"clientCAFile": str(sd.pki / "ca.crt")}},
        "authorization": {"mode": "Webhook"},
        "tlsCertFile": str(serving.cert), "tlsPrivateKeyFile": str(serving.key),
        # Our hosts are cgroup v1 (hybrid); Kubernetes refuses v1 unless told otherwise.
        "failCgroupV1": False, "cgroupDriver": "cgroupfs", "cgroupRoot": cgroup_root(sd, spec.name),
        "failSwapOn": False,
        "containerRuntimeEndpoint": f"unix://{p.socket}",
        "clusterDNS": [net.bridge_ip], "clusterDomain": "cluster.local",
        "resolvConf": str(p.root / "resolv.conf"),
        # Tests fill the disk and memory of a shared machine: eviction would kill pods for load
        # the cluster did not make, and image GC would delete the images built here.
        "evictionHard": {"memory.available": zero, "nodefs.available": zero, "nodefs.inodesFree": zero,
                         "imagefs.available": zero, "imagefs.inodesFree": zero},
        "imageGCHighThresholdPercent": 100, "imageGCLowThresholdPercent": 99,
        "volumePluginDir": str(p.root / "volume-plugins"),
        "nodeLeaseDurationSeconds": NODE_LEASE_SECONDS, "nodeStatusUpdateFrequency": "4s",
        "serializeImagePulls": False, "maxPods": spec.pods,
        "registerWithTaints": taints,
    }


def _launch_script(sd: StateDir, spec: NodeSpec, bins: Path, net: Network) -> str:
    """The shell script the launcher runs inside its private mount namespace."""
    p = RealNodePaths(NodePaths(sd, spec.name))
    r = p.root
    v2 = cgroups.node_dir(sd.tag, spec.name)
    assert v2 is not None  # prerequisites() checked
    labels = ",".join([f"node.kubernetes.io/instance-type={INSTANCE_TYPE}",
                       *(f"{k}={v}" for k, v in spec.labels.items())])
    lines = [
        "#!/bin/sh",
        "# Generated by localcluster/realnodes.py; runs under unshare -m --propagation slave.",
        "set -eu",
        f"echo $$ > {v2 / 'cgroup.procs'}",
        # Overlays: the daemons' writes under /run and /var/lib land in the node's directory.
        *(f"mount -t overlay lc-{d.strip('/').replace('/', '-')} -o lowerdir={d},upperdir={r / 'ovl' / d.strip('/')}"
          f"/upper,workdir={r / 'ovl' / d.strip('/')}/work {d}" for d in ("/run", "/var/lib")),
        f"mount --bind {r / 'var-log'} /var/log",
    ]
    for t in KERNEL_TUNABLES:
        src = Path("/proc/sys") / t
        if src.exists():
            f = r / "sysctl" / t.replace("/", ".")
            lines += [f"cat {src} > {f}", f"mount --bind {f} {src}"]
    kubelet_args = [
        str(bins / "kubelet"), f"--config={r / 'kubelet.yaml'}", f"--kubeconfig={p.kubeconfig}",
        f"--root-dir={p.kubelet}", f"--cert-dir={r / 'kubelet-pki'}", f"--hostname-override={spec.name}",
        f"--node-ip={net.node_ip(spec.index)}", f"--node-labels={labels}", "--v=1",
    ]
    ctr = f"{bins / 'ctr'} --address {p.socket} --namespace k8s.io"
    lines += [
        f"{bins / 'containerd'} --config {r / 'containerd.toml'} >>{sd.logs / f'containerd-{spec.name}.log'} 2>&1 &",
        "i=0",
        f"until {ctr} version >/dev/null 2>&1; do i=$((i+1)); [ $i -lt 400 ] || "
        f"{{ echo 'containerd did not answer in 20 s; its log:'; tail -20 {sd.logs / f'containerd-{spec.name}.log'}; "
        "exit 3; }; sleep 0.05; done",
        f"{ctr} images import {r / 'pause.tar'} >/dev/null",
        "exec " + " ".join(kubelet_args),
    ]
    return "\n".join(lines) + "\n"


def _prepare(sd: StateDir, spec: NodeSpec, bins: Path) -> list[str]:
    """Write the node's credentials, configs and directories; return the launcher's argv."""
    net = network.ensure(sd)
    p = RealNodePaths(NodePaths(sd, spec.name))
    p.check_socket_paths()
    r = p.root
    spec.save(p.base.spec)
    for d in (r / "var-log", r / "cni", r / "cni-ipam", r / "sysctl", p.kubelet, p.containerd,
              *(r / "ovl" / x / y for x in ("run", "var/lib") for y in ("upper", "work"))):
        d.mkdir(parents=True, exist_ok=True)
    server = f"https://127.0.0.1:{sd.load_ports().apiserver}"  # type: ignore[union-attr]
    kubeconfig.write(p.kubeconfig, server, sd.pki / "ca.crt", pki.node_client(sd.pki, spec.name),
                     f"system:node:{spec.name}")
    (r / "kubelet.yaml").write_text(json.dumps(_kubelet_config(sd, spec, net), indent=2) + "\n")
    (r / "containerd.toml").write_text(_containerd_toml(sd, spec.name, spec.index, net))
    (r / "cni" / "10-localcluster.conflist").write_text(json.dumps(_cni_conflist(sd, spec.name, spec.index, net)))
    (r / "resolv.conf").write_text(f"nameserver {net.bridge_ip}\noptions timeout:1 attempts:2\n")
    ociimage.single_binary_archive(bins / "pause", PAUSE_IMAGE, r / "pause.tar")
    script = r / "launch.sh"
    script.write_text(_launch_script(sd, spec, bins, net))
    v2 = cgroups.node_dir(sd.tag, spec.name)
    assert v2 is not None  # prerequisites() checked
    v2.mkdir(parents=True, exist_ok=True)
    _make_v1_root(cgroup_root(sd, spec.name))
    netns.ensure_node_address(net, net.node_ip(spec.index))
    return ["unshare", "--mount", "--propagation", "slave", "--", "sh", str(script)]


def _start(sd: StateDir, spec: NodeSpec, bins: Path) -> None:
    """Start one real node's launcher."""
    argv = _prepare(sd, spec, bins)
    procs.spawn(sd.procs, nodes.AGENT + spec.name, argv, sd.logs / f"{nodes.AGENT}{spec.name}.log")


def _next_name_and_index(sd: StateDir) -> tuple[str, int]:
    """The first free ``real-K`` name and the first free address index."""
    recs = nodes.records(sd)
    names, indexes = {r.name for r in recs}, {r.index for r in recs}
    k = 1
    while f"real-{k}" in names:
        k += 1
    return f"real-{k}", next(i for i in range(1, 255) if i not in indexes)


def add(sd: StateDir, name: str | None = None, taints: tuple[str, ...] = (),
        labels: dict[str, str] | None = None, wait: bool = True, progress: Progress | None = None) -> str:
    """Start a new real node (or restart a killed one of that name); return its name."""
    why = prerequisites()
    if why:
        raise RuntimeError(why)
    bins = build.node_bin_dir()
    ensure_cluster_services(sd, progress or (lambda _m: None))
    auto_name, index = _next_name_and_index(sd)
    old = next((r for r in nodes.records(sd) if r.name == name), None)
    if old is not None and nodes.agent_alive(sd, old.name):
        raise RuntimeError(f"node {name} already runs")
    if old is not None:
        kill_tree(sd, old.name)
    spec = NodeSpec(name=name or auto_name, index=old.index if old else index, kind="real",
                    taints=list(taints), labels=dict(labels or {}))
    _start(sd, spec, bins)
    if wait:
        nodes.wait_ready(sd, [spec.name], READY_TIMEOUT)
    return spec.name


def ensure_cluster_services(sd: StateDir, progress: Progress) -> None:
    """The host-wide pieces real nodes need: the bridge, the host record, Service routing, DNS."""
    net = network.ensure(sd)
    hostguard.record(sd)
    netns.ensure_bridge(net)
    hostguard.enable_forwarding()
    realnet.ensure(sd, build.node_bin_dir(), net, progress)


def ensure(sd: StateDir, count: int, progress: Progress) -> list[str]:
    """Keep ``count`` real nodes running (restart crashed launchers, add ``real-K`` nodes)."""
    if count <= 0:
        return []
    why = prerequisites()
    if why:
        raise RuntimeError(f"{why}; use --real-nodes 0 for process nodes only")
    bins = build.node_bin_dir()
    ensure_cluster_services(sd, progress)
    active = [r for r in nodes.records(sd) if r.kind == "real" and r.state == "active"]
    started = []
    for r in active:
        if not nodes.agent_alive(sd, r.name):
            kill_tree(sd, r.name)
            _start(sd, r, bins)
            started.append(r.name)
    while len(active) < count:
        name = add(sd, wait=False)
        active.append(NodeSpec.load(NodePaths(sd, name).spec))
        started.append(name)
    if started:
        progress(f"starting real nodes (kubelet + containerd) {', '.join(started)}")
        nodes.wait_ready(sd, started, READY_TIMEOUT)
    return [r.name for r in active]


def import_image(sd: StateDir, name: str, image: Path) -> None:
    """Import an image into one real node's containerd (the CRI's namespace): an OCI or docker
    archive, or an OCI layout directory (streamed as a tar, never written as one).

    The layer blobs are discarded once unpacked (``--discard-unpacked-layers``): the node runs
    containers from its snapshots and never pushes, and a 6 GB image would otherwise be kept
    twice per node.
    """
    p = RealNodePaths(NodePaths(sd, name))
    ctr = [str(build.node_bin_dir() / "ctr"), "--address", str(p.socket), "--namespace", "k8s.io", "images"]
    argv = [*ctr, "import", "--local", "--discard-unpacked-layers"]
    if image.is_dir():
        # The node has this very image already (a kept cluster): importing it again reads and
        # writes the whole compressed layer for nothing.
        index = json.loads((image / "index.json").read_text())["manifests"][0]
        ref, digest = index.get("annotations", {}).get("org.opencontainers.image.ref.name"), index["digest"]
        listed = subprocess.run([*ctr, "ls"], capture_output=True, text=True, check=False, timeout=60).stdout
        if any(line.split()[:3:2] == [ref, digest] for line in listed.splitlines() if line.strip()):
            return
        with subprocess.Popen(["tar", "-C", str(image), "-cf", "-", "oci-layout", "index.json", "blobs"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) as tar:
            res = subprocess.run([*argv, "-"], stdin=tar.stdout, capture_output=True, text=True, check=False,
                                 timeout=900)
            assert tar.stdout is not None and tar.stderr is not None
            tar.stdout.close()
            tar_err = tar.stderr.read().decode(errors="replace")
        if tar.returncode != 0:
            raise RuntimeError(f"reading {image} to import it into node {name} failed: {tar_err.strip()}")
    else:
        res = subprocess.run([*argv, str(image)], capture_output=True, text=True, check=False, timeout=900)
    if res.returncode != 0:
        raise RuntimeError(f"importing {image} into node {name} failed: {res.stderr.strip()}")


def cleanup(sd: StateDir, name: str) -> None:
    """Remove what a stopped or dead real node left (processes, cgroups, its bridge address)."""
    kill_tree(sd, name)
    cgroups.remove(cgroups.node_dir(sd.tag, name))
    _remove_v1_tree(cgroup_root(sd, name))
    net = sd.load_network()
    spec_path = NodePaths(sd, name).spec
    if net is not None and spec_path.exists():
        netns.remove_node_address(net, net.node_ip(NodeSpec.load(spec_path).index))


def teardown(sd: StateDir, progress: Progress) -> None:
    """Undo everything real nodes changed on the host (after their launchers were stopped)."""
    for r in nodes.records(sd):
        if r.kind == "real":
            kill_tree(sd, r.name)
    _remove_v1_tree(f"/localcluster-{sd.tag}")
    hostguard.release(sd, progress, lambda: realnet.cleanup(sd, progress))
