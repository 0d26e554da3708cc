"""Choose a cluster's pod network: a /16 nothing on this machine uses yet.

The default is 10.244.0.0/16 (kubeadm's and flannel's habit). A second cluster beside the first
(a test's private cluster, the benchmark) takes the next free /16, so two clusters' bridges and
routes never overlap. A range that holds the machine's nameserver, one of its addresses or one of
its routes is skipped: a bridge there would cut the host off from it.
"""

from __future__ import annotations

import ipaddress
import re
import subprocess
from pathlib import Path

from localcluster.state import Network, StateDir

#: Candidate second octets: 10.244.0.0/16 first, then its neighbours.
CANDIDATES = tuple(range(244, 252))


def _ip_lines(*args: str) -> list[str]:
    """Run ``ip ARGS`` and return its lines ([] where ip is missing: nothing to avoid then)."""
    try:
        res = subprocess.run(["ip", *args], capture_output=True, text=True, check=False, timeout=10)
    except (FileNotFoundError, subprocess.TimeoutExpired):
        return []
    return res.stdout.splitlines()


def used_networks() -> list[ipaddress.IPv4Network]:
    """Networks and addresses this machine already uses (addresses, routes, nameservers)."""
    found: list[ipaddress.IPv4Network] = []
    lines = _ip_lines("-o", "-4", "addr", "show") + _ip_lines("-4", "route", "show", "table", "all")
    for line in lines:
        for m in re.finditer(r"\b(\d+\.\d+\.\d+\.\d+(?:/\d+)?)\b", line):
            try:
                found.append(ipaddress.IPv4Network(m.group(1), strict=False))
            except ValueError:
                continue
    try:
        resolv = Path("/etc/resolv.conf").read_text()
    except OSError:
        resolv = ""
    for m in re.finditer(r"^\s*nameserver\s+(\d+\.\d+\.\d+\.\d+)", resolv, re.MULTILINE):
        found.append(ipaddress.IPv4Network(m.group(1)))
    # The default route (0.0.0.0/0) overlaps everything and says nothing about our ranges.
    return [n for n in found if n.prefixlen > 0]


def choose(sd: StateDir) -> Network:
    """Return the first candidate /16 that overlaps nothing in use, named after this cluster."""
    used = used_networks()
    for octet in CANDIDATES:
        net = ipaddress.IPv4Network(f"10.{octet}.0.0/16")
        if not any(net.overlaps(u) for u in used):
            return Network(cidr=str(net), bridge=f"lc-{sd.tag}")
    raise RuntimeError(f"no free pod network among 10.{CANDIDATES[0]}-{CANDIDATES[-1]}.0.0/16: "
                       "stop another local cluster (python -m localcluster down --state DIR)")


def ensure(sd: StateDir) -> Network:
    """Return this cluster's network, choosing and recording it on the first call."""
    net = sd.load_network()
    if net is None:
        net = choose(sd)
        sd.save_network(net)
    return net
