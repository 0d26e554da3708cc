"""Start, check and stop the control plane: etcd, kube-apiserver, controller manager, scheduler.

Each component runs as a detached process recorded in the state directory (``procs.py``), so
``up`` returns while they keep running and ``down`` finds them again from any shell. Flags
follow kubeadm's static pods where they matter (RBAC, admission, service-account tokens,
client-certificate identities), and shorten failure timings so tests take seconds: the node
lifecycle controller marks a node NotReady 8 s after its last heartbeat.
"""

from __future__ import annotations

import fcntl
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from localcluster import build, health, kubeconfig, mounts, network, nodes, pki, procs, realnodes
from localcluster.nodes import NodeSize
from localcluster.state import SERVICE_CIDR, Network, Ports, StateDir, choose_ports
from localcluster.waiting import wait_until

#: Start order; ``down`` stops the other way round.
COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler")
#: How often the node controller checks heartbeats; how long it waits for one is the cluster's
#: ``Heartbeats.node_monitor_grace_s`` (the node agent renews its Lease every 2 s: 4 tries in the default 8 s).
NODE_MONITOR_PERIOD = "1s"
START_TIMEOUT = 120.0

Progress = Callable[[str], None]


def stderr_progress(msg: str) -> None:
    """Default progress sink: one line on stderr, so stdout carries only the kubeconfig path."""
    print(f"localcluster: {msg}", file=sys.stderr, flush=True)


def _component_argv(name: str, bins: Path, sd: StateDir, ports: Ports, net: Network) -> list[str]:
    """Return the command line of one component (certificates and kubeconfigs must exist)."""
    p = sd.pki
    if name == "etcd":
        peer = f"http://127.0.0.1:{ports.etcd_peer}"
        client = f"http://127.0.0.1:{ports.etcd_client}"
        return [str(bins / "etcd"), "--name=localcluster", f"--data-dir={sd.etcd_data}",
                f"--listen-client-urls={client}", f"--advertise-client-urls={client}",
                f"--listen-peer-urls={peer}", f"--initial-advertise-peer-urls={peer}",
                f"--initial-cluster=localcluster={peer}", "--log-level=warn"]
    if name == "kube-apiserver":
        return [str(bins / "kube-apiserver"),
                f"--etcd-servers=http://127.0.0.1:{ports.etcd_client}",
                "--bind-address=0.0.0.0", f"--secure-port={ports.apiserver}",
                f"--advertise-address={net.bridge_ip}",
                "--authorization-mode=Node,RBAC",
                "--enable-admission-plugins=NodeRestriction",  # added to the default set
                f"--client-ca-file={p / 'ca.crt'}",
                f"--tls-cert-file={p / 'apiserver.crt'}", f"--tls-private-key-file={p / 'apiserver.key'}",
                f"--kubelet-client-certificate={p / 'apiserver-kubelet-client.crt'}",
                f"--kubelet-client-key={p / 'apiserver-kubelet-client.key'}",
                "--kubelet-preferred-address-types=InternalIP,Hostname",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-account-key-file={p / 'sa.pub'}",
                f"--service-account-signing-key-file={p / 'sa.key'}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--allow-privileged=true"]
    kc = sd.kubeconfigs / f"{name.removeprefix('kube-')}.kubeconfig"
    common = [f"--kubeconfig={kc}", f"--authentication-kubeconfig={kc}", f"--authorization-kubeconfig={kc}",
              "--bind-address=127.0.0.1", "--leader-elect=false"]
    if name == "kube-controller-manager":
        return [str(bins / name), *common, f"--secure-port={ports.controller_manager}",
                "--controllers=*", "--use-service-account-credentials=true",
                f"--service-account-private-key-file={p / 'sa.key'}", f"--root-ca-file={p / 'ca.crt'}",
                f"--cluster-signing-cert-file={p / 'ca.crt'}", f"--cluster-signing-key-file={p / 'ca.key'}",
                f"--node-monitor-grace-period={sd.load_heartbeats().node_monitor_grace_s}s",
                f"--node-monitor-period={NODE_MONITOR_PERIOD}",
                "--allocate-node-cidrs=false", f"--service-cluster-ip-range={SERVICE_CIDR}"]
    if name == "kube-scheduler":
        return [str(bins / name), *common, f"--secure-port={ports.scheduler}"]
    raise ValueError(f"unknown component {name!r}")


@dataclass(frozen=True)
class Cluster:
    """A cluster's state directory and ports, with its probes."""

    sd: StateDir
    ports: Ports

    @property
    def server(self) -> str:
        """The API server URL for clients on this machine."""
        return f"https://127.0.0.1:{self.ports.apiserver}"

    def _admin_get(self, path: str) -> int:
        ctx = health.client_context(self.sd.pki / "ca.crt", pki.admin(self.sd.pki))
        return health.get(self.server + path, ctx)[0]

    def apiserver_ready(self) -> bool:
        """Tell whether /readyz answers 200 (etcd reachable, every post-start hook done)."""
        return self._admin_get("/readyz") == 200

    def default_service_account_exists(self) -> bool:
        """Tell whether the default namespace and its ``default`` ServiceAccount exist, which
        proves the controller manager runs: pods can be created from here on."""
        return self._admin_get("/api/v1/namespaces/default/serviceaccounts/default") == 200

    def component_healthy(self, name: str) -> bool:
        """Probe one component's own health endpoint."""
        if name == "etcd":
            return health.ok(f"http://127.0.0.1:{self.ports.etcd_client}/health")
        if name == "kube-apiserver":
            return self.apiserver_ready()
        port = self.ports.controller_manager if name == "kube-controller-manager" else self.ports.scheduler
        return health.ok(f"https://127.0.0.1:{port}/healthz", health.unverified_context())


def _write_kubeconfigs(c: Cluster) -> None:
    """(Re)write the admin and component kubeconfigs (cheap, and keeps ports current)."""
    ca = c.sd.pki / "ca.crt"
    kubeconfig.write(c.sd.admin_kubeconfig, c.server, ca, pki.admin(c.sd.pki), "kubernetes-admin")
    local = f"https://127.0.0.1:{c.ports.apiserver}"
    kubeconfig.write(c.sd.kubeconfigs / "controller-manager.kubeconfig", local, ca,
                     pki.controller_manager(c.sd.pki), "system:kube-controller-manager")
    kubeconfig.write(c.sd.kubeconfigs / "scheduler.kubeconfig", local, ca, pki.scheduler(c.sd.pki),
                     "system:kube-scheduler")


def _running(sd: StateDir) -> dict[str, procs.ProcRecord]:
    """Return the records of control-plane components whose process is alive."""
    out = {}
    for name in COMPONENTS:
        rec = procs.load(sd.procs, name)
        if rec is not None and procs.is_alive(rec):
            out[name] = rec
    return out


def _log_tail(path: str, lines: int = 15) -> str:
    """Return the end of a log file, to put the real cause into our error message."""
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _wait(c: Cluster, started: dict[str, procs.ProcRecord], check: Callable[[], bool], what: str) -> None:
    """Wait for ``check``, failing at once (with its log) if a component we started dies."""

    def step() -> bool:
        for rec in started.values():
            if not procs.is_alive(rec):
                raise RuntimeError(f"{rec.name} exited during start-up; last lines of {rec.log}:\n"
                                   f"{_log_tail(rec.log)}")
        return check()

    wait_until(step, timeout=START_TIMEOUT, what=what, interval=0.05, max_interval=0.25)


def up(sd: StateDir, progress: Progress = stderr_progress, nodes_count: int = 0,
       node_size: NodeSize | None = None, real_nodes_count: int = 0) -> Path:
    """Bring the control plane up (or leave a running one alone) and return the admin kubeconfig.

    With ``nodes_count`` > 0, also keep that many process nodes running (``nodes.ensure``); with
    ``real_nodes_count`` > 0 that many kubelet + containerd nodes (``realnodes.ensure``).
    Idempotent: components already running are kept, dead ones are restarted, and when all
    are running and ready this returns within a fraction of a second.
    """
    t0 = time.monotonic()
    node_size = node_size or NodeSize()
    ports = sd.load_ports()
    if ports is not None and len(_running(sd)) == len(COMPONENTS):
        c = Cluster(sd, ports)
        if c.apiserver_ready() and sd.admin_kubeconfig.is_file():
            with open(sd.root / ".up.lock", "w") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                nodes.ensure(sd, nodes_count, node_size, progress)
                realnodes.ensure(sd, real_nodes_count, progress)
            progress("already running")
            return sd.admin_kubeconfig
    bins = build.bin_dir()
    if real_nodes_count > 0:
        build.node_bin_dir()  # before anything starts: a first build takes minutes
    sd.ensure()
    with open(sd.root / ".up.lock", "w") as lock:
        # Two concurrent ``up`` runs (two test sessions) must not both start an etcd.
        fcntl.flock(lock, fcntl.LOCK_EX)
        kc = _start(sd, bins, ports, progress, t0)
        if nodes_count > 0:
            nodes.ensure(sd, nodes_count, node_size, progress)
            progress(f"{nodes_count} nodes ready (t={time.monotonic() - t0:.1f} s)")
        if real_nodes_count > 0:
            realnodes.ensure(sd, real_nodes_count, progress)
            progress(f"{real_nodes_count} real nodes ready (t={time.monotonic() - t0:.1f} s)")
        return kc


def _start(sd: StateDir, bins: Path, ports: Ports | None, progress: Progress, t0: float) -> Path:
    """Start whatever is not running, stage by stage (called under the state dir's lock)."""
    ports = sd.load_ports() or ports
    if ports is None:
        ports = choose_ports()
        sd.save_ports(ports)
    c = Cluster(sd, ports)
    net = network.ensure(sd)
    progress(f"state {sd.root}; API server port {ports.apiserver}; pod network {net.cidr}")
    pki.ensure_control_plane(sd.pki, (net.bridge_ip,))
    _write_kubeconfigs(c)
    running = _running(sd)
    started: dict[str, procs.ProcRecord] = {}
    # Each stage waits for the one before: the API server gives up on an absent etcd, and the
    # controller manager and scheduler exit if RBAC's bootstrap policy is not in place yet.
    stages = ((("etcd",), lambda: c.component_healthy("etcd"), "etcd /health"),
              (("kube-apiserver",), c.apiserver_ready, "kube-apiserver /readyz"),
              (("kube-controller-manager", "kube-scheduler"), c.default_service_account_exists,
               "the default ServiceAccount"))
    for names, ready, what in stages:
        for name in names:
            if name not in running:
                progress(f"starting {name} (t={time.monotonic() - t0:.1f} s)")
                started[name] = procs.spawn(sd.procs, name, _component_argv(name, bins, sd, ports, net),
                                            sd.logs / f"{name}.log")
        _wait(c, started, ready, what)
        progress(f"{what} ok (t={time.monotonic() - t0:.1f} s)")
    progress(f"control plane up in {time.monotonic() - t0:.1f} s; kubeconfig {sd.admin_kubeconfig}")
    return sd.admin_kubeconfig


def status(sd: StateDir) -> list[tuple[str, int | None, bool, bool]]:
    """Return (name, pid, alive, healthy) for each component (pid None: never started)."""
    ports = sd.load_ports()
    c = Cluster(sd, ports) if ports else None
    rows = []
    for name in COMPONENTS:
        rec = procs.load(sd.procs, name)
        alive = rec is not None and procs.is_alive(rec)
        healthy = alive and c is not None and c.component_healthy(name)
        rows.append((name, rec.pid if rec else None, alive, healthy))
    return rows


def foreign_interpreter(sd: StateDir) -> str | None:
    """The Python of another checkout that runs this cluster's node agents or provisioner, if any.

    Node agents run pod commands with the interpreter (and so the code) of the checkout that
    started them: a cluster kept running from another clone would run that clone's trainer.
    """
    for rec in procs.load_all(sd.procs):
        runs_python = bool(rec.argv) and Path(rec.argv[0]).name.startswith("python")
        if runs_python and rec.argv[0] != sys.executable and procs.is_alive(rec):
            return rec.argv[0]
    return None


def _looks_like_state_dir(root: Path) -> bool:
    """Refuse to delete a directory we did not create (``LOCALCLUSTER_STATE`` is user input)."""
    ours = {"cluster.json", "procs", "pki", "logs", "etcd", "kubeconfigs", "admin.kubeconfig", "nodes"}
    return root.is_dir() and any((root / n).exists() for n in ours)


def down(sd: StateDir, progress: Progress = stderr_progress, grace: float = 10.0) -> int:
    """Stop every process recorded in the state directory, then delete the directory.

    Processes other parts registered (the node agent) stop first, newest first, then the
    control plane in reverse start order. Returns how many processes were running.
    """
    if not sd.root.exists():
        progress(f"nothing to do: {sd.root} does not exist")
        return 0
    if not _looks_like_state_dir(sd.root):
        raise RuntimeError(f"{sd.root} does not look like a localcluster state directory; not deleting it")
    recs = procs.load_all(sd.procs)
    order = [r for r in recs if r.name not in COMPONENTS]
    order += [r for name in reversed(COMPONENTS) for r in recs if r.name == name]
    stopped = 0
    for rec in order:
        if procs.stop(rec, grace=grace):
            stopped += 1
            progress(f"stopped {rec.name} (pid {rec.pid})")
        procs.forget(sd.procs, rec.name)
    nodes.teardown(sd, progress)  # pod processes, namespaces, cgroups, bridge, mount points
    mounts.unmount_all_under(sd.root)  # rmtree through a bind mount would delete its source
    shutil.rmtree(sd.root)
    progress(f"removed {sd.root}")
    return stopped
