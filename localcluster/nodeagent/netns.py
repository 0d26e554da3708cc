"""The pod network: one bridge per cluster, one network namespace and veth pair per pod.

Every pod gets what a CNI bridge plugin gives it: its own network namespace (so ports never
clash), an ``eth0`` with its own address on the cluster's bridge, loopback up, and a default
route via the bridge. ``ip -batch`` runs each step's commands in one process, which keeps pod
start-up to a few milliseconds. Names carry the cluster's tag so two clusters never collide,
and ``down`` finds everything by prefix.
"""

from __future__ import annotations

import contextlib
import hashlib
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from localcluster.state import Network

NETNS_DIR = Path("/run/netns")
ETC_NETNS = Path("/etc/netns")


class NetError(RuntimeError):
    """An ``ip`` command failed; the message carries its stderr."""


def ip(*args: str, batch: str | None = None, check: bool = True) -> str:
    """Run ``ip ARGS`` (with ``-batch -`` reading ``batch``) and return its stdout."""
    argv = ["ip", *args] + (["-batch", "-"] if batch is not None else [])
    res = subprocess.run(argv, input=batch, capture_output=True, text=True, check=False, timeout=30)
    if check and res.returncode != 0:
        raise NetError(f"{' '.join(argv)} failed: {res.stderr.strip()}")
    return res.stdout


def bridge_mac(bridge: str) -> str:
    """A fixed, locally administered unicast MAC for the bridge, derived from its name.

    A bridge without an address of its own takes the lowest MAC among its ports, so deleting the pod whose veth
    had it changes the bridge's MAC: every other pod's ARP entry for the gateway (the API server's address) then
    points nowhere until it goes stale and is probed again, and their API calls hang for 10-40 s (measured: a
    surviving worker's progress report took 13 s after a reclaim). An address set by hand never changes."""
    digest = hashlib.sha256(bridge.encode()).digest()
    return ":".join(f"{b:02x}" for b in (0x02, *digest[:5]))


def ensure_bridge(net: Network) -> None:
    """Create the cluster's bridge with the API server's advertised address and a fixed MAC (idempotent)."""
    if not Path(f"/sys/class/net/{net.bridge}").exists():
        ip("link", "add", net.bridge, "type", "bridge", check=False)
    ip("link", "set", net.bridge, "address", bridge_mac(net.bridge))
    have = ip("-o", "-4", "addr", "show", "dev", net.bridge)
    if f" {net.bridge_ip}/" not in have:
        ip("addr", "add", f"{net.bridge_ip}/{net.prefixlen}", "dev", net.bridge)
    ip("link", "set", net.bridge, "up")


def ensure_node_address(net: Network, node_ip: str) -> None:
    """Give a node its own address on the bridge (where its kubelet API listens)."""
    have = ip("-o", "-4", "addr", "show", "dev", net.bridge)
    if f" {node_ip}/" not in have:
        ip("addr", "add", f"{node_ip}/32", "dev", net.bridge)


def remove_node_address(net: Network, node_ip: str) -> None:
    """Take a node's address off the bridge (the node is gone)."""
    ip("addr", "del", f"{node_ip}/32", "dev", net.bridge, check=False)


def delete_bridge(net: Network) -> None:
    """Delete the bridge (and with it every node address on it)."""
    if Path(f"/sys/class/net/{net.bridge}").exists():
        ip("link", "del", net.bridge, check=False)


@dataclass(frozen=True)
class Sandbox:
    """A pod's network namespace, its address and the host end of its veth pair."""

    netns: str
    ip: str
    veth: str

    @property
    def etc_dir(self) -> Path:
        """``/etc/netns/<ns>``: ``ip netns exec`` bind-mounts its files over ``/etc``."""
        return ETC_NETNS / self.netns

    @property
    def hosts_file(self) -> Path:
        """The pod's /etc/hosts, as its processes see it."""
        return self.etc_dir / "hosts"


def sandbox_names(tag: str, uid: str) -> tuple[str, str]:
    """Return (netns name, host veth name) for one pod of one cluster.

    The veth name must fit IFNAMSIZ (15 characters), so it is a hash; the namespace name keeps
    the cluster tag as a prefix, which is how ``down`` finds all of a cluster's namespaces.
    """
    digest = hashlib.sha256(f"{tag}/{uid}".encode()).hexdigest()
    return f"lc-{tag}-{uid[:13]}", f"lcv{digest[:12]}"


def create(net: Network, tag: str, uid: str, pod_ip: str, resolv_search: str) -> Sandbox:
    """Create a pod's namespace, veth pair, address, routes and /etc/netns files."""
    name, veth = sandbox_names(tag, uid)
    sb = Sandbox(netns=name, ip=pod_ip, veth=veth)
    delete(sb)  # a leftover from an agent that died half way must not make this fail
    sb.etc_dir.mkdir(parents=True, exist_ok=True)
    # Unknown names must fail at once, not after the host resolver's timeouts: nothing answers
    # DNS inside the pod network, so point the resolver at the pod's own loopback.
    (sb.etc_dir / "resolv.conf").write_text(
        f"search {resolv_search}\nnameserver 127.0.0.1\noptions ndots:1 timeout:1 attempts:1\n")
    if not sb.hosts_file.exists():
        sb.hosts_file.write_text("127.0.0.1\tlocalhost\n")
    ip(batch=f"netns add {name}\n"
             f"link add {veth} type veth peer name eth0 netns {name}\n"
             f"link set {veth} master {net.bridge} up\n")
    ip("-n", name, batch=f"addr add {pod_ip}/{net.prefixlen} dev eth0\n"
                         "link set eth0 up\nlink set lo up\n"
                         f"route add default via {net.bridge_ip}\n")
    return sb


def delete(sb: Sandbox) -> None:
    """Delete a pod's namespace (its veth pair goes with it) and its /etc/netns files."""
    if (NETNS_DIR / sb.netns).exists():
        ip("netns", "del", sb.netns, check=False)
    if Path(f"/sys/class/net/{sb.veth}").exists():
        ip("link", "del", sb.veth, check=False)
    # The DNS updater may be rewriting the hosts file in there at this very moment (rmtree then
    # fails with "Directory not empty"): retry a few times, and never let a leftover stop the caller.
    for _ in range(5):
        with contextlib.suppress(FileNotFoundError, OSError):
            shutil.rmtree(sb.etc_dir)
        if not sb.etc_dir.exists():
            return
        time.sleep(0.05)


def namespaces_with_prefix(prefix: str) -> list[str]:
    """Names of network namespaces starting with ``prefix`` (``lc-<tag>-``)."""
    if not NETNS_DIR.is_dir():
        return []
    return sorted(p.name for p in NETNS_DIR.iterdir() if p.name.startswith(prefix))


def delete_all(tag: str) -> int:
    """Delete every pod namespace and /etc/netns directory of one cluster; return how many."""
    prefix = f"lc-{tag}-"
    names = namespaces_with_prefix(prefix)
    for name in names:
        ip("netns", "del", name, check=False)
    if ETC_NETNS.is_dir():
        for d in ETC_NETNS.iterdir():
            if d.name.startswith(prefix):
                shutil.rmtree(d, ignore_errors=True)
    return len(names)
