"""Where the local cluster keeps its state, and the ports it listens on.

Everything a cluster creates lives under one directory (default
``${DSTJ_CACHE:-~/.cache/dstj}/localcluster/state``, overridden by ``LOCALCLUSTER_STATE``), so
``down`` can remove all of it and two clusters in two state directories never collide.
Ports are chosen once per state directory and remembered in ``cluster.json``, so certificates
and kubeconfigs stay valid across restarts.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import ipaddress
import json
import os
import socket
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

#: The service IP range and the first service IP (the ``kubernetes`` Service).
SERVICE_CIDR = "10.96.0.0/16"
SERVICE_IP = "10.96.0.1"
#: The host side of the default pod bridge the node agent creates. The API server advertises it
#: (the ``kubernetes`` endpoints), its serving certificate names it, and it listens on 0.0.0.0,
#: so pods in their own network namespaces reach it at this address once the bridge exists.
#: A second cluster beside the first gets the next free /16 (see ``Network``).
BRIDGE_IP = "10.244.0.1"
POD_CIDR = "10.244.0.0/16"


def cache_root() -> Path:
    """Return the project's cache root, shared with ``scripts/setup.sh`` (``DSTJ_CACHE``)."""
    return Path(os.environ.get("DSTJ_CACHE") or Path.home() / ".cache" / "dstj")


def default_state_dir() -> Path:
    """Return the state directory: ``LOCALCLUSTER_STATE`` or one under the cache root."""
    override = os.environ.get("LOCALCLUSTER_STATE")
    if override:
        return Path(override).expanduser().absolute()
    return cache_root() / "localcluster" / "state"


@dataclass(frozen=True)
class Ports:
    """TCP ports of one cluster (all on loopback except the API server on 0.0.0.0)."""

    apiserver: int
    etcd_client: int
    etcd_peer: int
    controller_manager: int
    scheduler: int


@dataclass(frozen=True)
class Heartbeats:
    """How a cluster's nodes prove they are alive, and how long the node controller waits for them.

    The defaults find a dead process node within seconds, as the elastic tests need. A fleet of
    simulated nodes on two cores stretches both: there the control plane itself answers late, and a
    short grace turns the simulator's own lateness into NotReady nodes and evictions.
    """

    node_monitor_grace_s: int = 8
    """Without a heartbeat this long, the node controller marks a node NotReady (then evicts its pods)."""
    fake_node_lease_s: int = 8
    """The fake nodes' Lease duration; kwok renews each Lease every quarter of it."""


#: The ports a developer expects; used when free, else replaced by free ephemeral ones.
DEFAULT_PORTS = Ports(apiserver=6443, etcd_client=2379, etcd_peer=2380, controller_manager=10257,
                      scheduler=10259)


def port_is_free(port: int) -> bool:
    """Tell whether ``port`` can be bound on all interfaces right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    """Return a port the kernel considers free (racy by nature, good enough on one machine)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("0.0.0.0", 0))
        return int(s.getsockname()[1])


def choose_ports() -> Ports:
    """Pick the default ports where free, so a second cluster still starts beside the first."""
    chosen: dict[str, int] = {}
    for name, port in asdict(DEFAULT_PORTS).items():
        while port in chosen.values() or not port_is_free(port):
            port = free_port()
        chosen[name] = port
    return Ports(**chosen)


def cluster_tag(root: Path) -> str:
    """A short stable id of one state directory, in names that must not collide between two
    clusters on one machine (bridge, network namespaces, cgroups)."""
    return hashlib.sha256(str(root.absolute()).encode()).hexdigest()[:6]


@dataclass(frozen=True)
class Network:
    """The pod network of one cluster: a /16 on a bridge; node k owns ``10.X.k.0/24``.

    The bridge holds ``10.X.0.1`` (the API server's advertised address) and each node's
    address ``10.X.k.1``; node k's pods get ``10.X.k.2`` .. ``10.X.k.254``. All of them sit on
    one L2 bridge with a /16 mask, so every pod reaches every other pod and the API server.
    """

    cidr: str
    bridge: str

    @property
    def _net(self) -> ipaddress.IPv4Network:
        return ipaddress.IPv4Network(self.cidr)

    @property
    def bridge_ip(self) -> str:
        """The host's address on the bridge, where pods reach the API server."""
        return str(self._net.network_address + 1)

    @property
    def prefixlen(self) -> int:
        """The bridge's prefix length (pods use the same mask)."""
        return self._net.prefixlen

    def node_ip(self, index: int) -> str:
        """The address of node ``index`` (1..254): its kubelet endpoint and InternalIP."""
        if not 1 <= index <= 254:
            raise ValueError(f"node index {index} out of range 1..254")
        return str(self._net.network_address + index * 256 + 1)

    def pod_ips(self, index: int) -> list[str]:
        """The pod addresses node ``index`` hands out."""
        base = self._net.network_address + index * 256
        return [str(base + i) for i in range(2, 255)]


@dataclass(frozen=True)
class StateDir:
    """Paths inside one cluster's state directory (nothing here touches the disk)."""

    root: Path

    @property
    def pki(self) -> Path:
        """Certificates and keys (``ca.crt`` is the cluster CA)."""
        return self.root / "pki"

    @property
    def logs(self) -> Path:
        """One log file per process."""
        return self.root / "logs"

    @property
    def procs(self) -> Path:
        """One JSON record per running process (see ``procs.py``)."""
        return self.root / "procs"

    @property
    def etcd_data(self) -> Path:
        """etcd's data directory."""
        return self.root / "etcd"

    @property
    def kubeconfigs(self) -> Path:
        """Kubeconfigs of the control-plane components."""
        return self.root / "kubeconfigs"

    @property
    def admin_kubeconfig(self) -> Path:
        """The admin kubeconfig (system:masters), the one users and tests use."""
        return self.root / "admin.kubeconfig"

    @property
    def cluster_json(self) -> Path:
        """Ports and binaries of this cluster, fixed at its first ``up``."""
        return self.root / "cluster.json"

    @property
    def nodes(self) -> Path:
        """One directory per process node: its record, kubeconfigs and pods."""
        return self.root / "nodes"

    @property
    def tag(self) -> str:
        """This cluster's short id (see ``cluster_tag``)."""
        return cluster_tag(self.root)

    def ensure(self) -> None:
        """Create the directories (private: they hold keys)."""
        for d in (self.root, self.pki, self.logs, self.procs, self.kubeconfigs):
            d.mkdir(parents=True, exist_ok=True, mode=0o700)

    def _load(self) -> dict[str, dict[str, object]]:
        """Return cluster.json's content ({} before the first ``up``)."""
        with contextlib.suppress(FileNotFoundError, ValueError):
            data = json.loads(self.cluster_json.read_text())
            if isinstance(data, dict):
                return data
        return {}

    def _save(self, key: str, value: dict[str, object]) -> None:
        """Set one key of cluster.json atomically, keeping the others."""
        data = self._load()
        data[key] = value
        tmp = self.cluster_json.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=2) + "\n")
        tmp.replace(self.cluster_json)

    def load_ports(self) -> Ports | None:
        """Return the ports recorded for this cluster, or None before its first ``up``."""
        with contextlib.suppress(KeyError, TypeError):
            return Ports(**self._load()["ports"])  # type: ignore[arg-type]
        return None

    def save_ports(self, ports: Ports) -> None:
        """Record the ports, so later ``up`` runs reuse them."""
        self._save("ports", asdict(ports))

    def load_heartbeats(self) -> Heartbeats:
        """Return the heartbeat settings recorded for this cluster (the defaults when none are)."""
        with contextlib.suppress(KeyError, TypeError):
            return Heartbeats(**self._load()["heartbeats"])  # type: ignore[arg-type]
        return Heartbeats()

    def save_heartbeats(self, heartbeats: Heartbeats) -> None:
        """Record the heartbeat settings: components started later (a restart) keep them."""
        self._save("heartbeats", asdict(heartbeats))

    def load_network(self) -> Network | None:
        """Return the pod network recorded for this cluster, or None before its first ``up``."""
        with contextlib.suppress(KeyError, TypeError):
            return Network(**self._load()["network"])  # type: ignore[arg-type]
        return None

    def save_network(self, net: Network) -> None:
        """Record the pod network, so certificates and node addresses stay valid."""
        self._save("network", asdict(net))


@contextlib.contextmanager
def session_lock(sd: StateDir) -> Iterator[None]:
    """Hold the machine-wide lock of whoever uses the cluster now (a test session, the demo).

    One cluster per machine (fixed ports, one state directory): a second user waits here until the
    first is done, instead of sharing the cluster or tearing it down under the other.
    """
    # Machine-wide, not under DSTJ_CACHE: a clone with a cache of its own still binds the same ports.
    path = Path(os.environ.get("LOCALCLUSTER_LOCK") or Path.home() / ".cache/dstj/localcluster/session.lock")
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield
