"""What real nodes change on the host, recorded before and undone by ``down``.

Real nodes need three host-wide things a mount namespace cannot hide: IPv4 forwarding (a pod's
packet to a Service is DNATed to another pod and forwarded back onto the bridge), iptables
chains (kube-proxy's Service rules, and the kubelet's KUBE-FIREWALL / KUBE-KUBELET-CANARY /
KUBE-IPTABLES-HINT), and nothing else (the kernel settings the kubelet writes are bound over
inside its namespace: ``realnodes.KERNEL_TUNABLES``). ``record`` saves the forwarding setting and
the chains that exist before the first real node; ``restore`` deletes every ``KUBE-`` chain
(and each rule jumping to one) that was not there before, and puts forwarding back.

These are one machine's settings, so the record is machine-wide (``~/.cache/dstj/localcluster/
hostguard``, beside the session lock): the first cluster with real nodes writes the baseline,
each such cluster registers itself, and only the last one to go restores the host (a test's
private cluster must not take Service routing away from another cluster still running).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

from localcluster.state import StateDir

Progress = Callable[[str], None]
IP_FORWARD = Path("/proc/sys/net/ipv4/ip_forward")
TABLES = ("filter", "nat", "mangle")
FAMILIES = ("iptables", "ip6tables")
CHAIN_PREFIX = "KUBE-"


def record_dir() -> Path:
    """Where the record is kept (beside the session lock, LOCALCLUSTER_LOCK)."""
    lock = Path(os.environ.get("LOCALCLUSTER_LOCK") or Path.home() / ".cache/dstj/localcluster/session.lock")
    return lock.parent / "hostguard"


@contextlib.contextmanager
def _locked() -> Iterator[Path]:
    d = record_dir()
    (d / "users").mkdir(parents=True, exist_ok=True)
    with (d / ".lock").open("w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield d


def _users(d: Path) -> list[Path]:
    """Registered clusters whose state directory still exists (a deleted one cannot come back)."""
    alive = []
    for u in (d / "users").iterdir():
        if Path(u.read_text().strip()).is_dir():
            alive.append(u)
        else:
            u.unlink(missing_ok=True)
    return alive


def registered() -> list[str]:
    """State directories of the clusters with real nodes registered in this record (running, or
    killed without ``down``: their state directory still exists)."""
    with _locked() as d:
        return sorted(u.read_text().strip() for u in _users(d))


def _save(family: str, table: str) -> str:
    """``iptables-save -t TABLE`` output ("" where the family or table is unavailable)."""
    tool = shutil.which(f"{family}-save")
    if tool is None:
        return ""
    res = subprocess.run([tool, "-t", table], capture_output=True, text=True, check=False, timeout=30)
    return res.stdout if res.returncode == 0 else ""


def kube_chains() -> dict[str, list[str]]:
    """``family/table -> KUBE-* chains`` present now."""
    found = {}
    for family in FAMILIES:
        for table in TABLES:
            chains = re.findall(r"^:(KUBE-\S+)", _save(family, table), re.MULTILINE)
            if chains:
                found[f"{family}/{table}"] = sorted(chains)
    return found


def record(sd: StateDir) -> None:
    """Register this cluster; the first one saves what the host looks like before real nodes."""
    with _locked() as d:
        if not _users(d) or not (d / "baseline.json").exists():
            baseline = {"ip_forward": IP_FORWARD.read_text().strip(), "chains": kube_chains()}
            (d / "baseline.json").write_text(json.dumps(baseline, indent=2) + "\n")
        (d / "users" / sd.tag).write_text(str(sd.root) + "\n")


def enable_forwarding() -> None:
    """Turn IPv4 forwarding on (Service traffic between pods is routed through the host)."""
    if IP_FORWARD.read_text().strip() != "1":
        IP_FORWARD.write_text("1\n")


def _iptables(family: str, *args: str) -> None:
    subprocess.run([family, "-w", *args], capture_output=True, text=True, check=False, timeout=30)


def remove_chains(before: dict[str, list[str]]) -> int:
    """Delete the KUBE-* chains not in ``before`` and every rule that jumps to one; return the count."""
    removed = 0
    for family in FAMILIES:
        if shutil.which(family) is None:
            continue
        for table in TABLES:
            dump = _save(family, table)
            keep = set(before.get(f"{family}/{table}", []))
            ours = [c for c in re.findall(r"^:(KUBE-\S+)", dump, re.MULTILINE) if c not in keep]
            if not ours:
                continue
            targets = set(ours)
            for rule in re.findall(r"^-A (\S+) (.*)$", dump, re.MULTILINE):
                chain, spec = rule
                jump = re.search(r"-j (\S+)", spec)
                if chain not in targets and jump and jump.group(1) in targets:
                    _iptables(family, "-t", table, "-D", chain, *_split(spec))
            for chain in ours:
                _iptables(family, "-t", table, "-F", chain)
            for chain in ours:
                _iptables(family, "-t", table, "-X", chain)
                removed += 1
    return removed


def _split(spec: str) -> list[str]:
    """Split an iptables-save rule into arguments (quoted comments stay one argument)."""
    import shlex

    return shlex.split(spec)


def release(sd: StateDir, progress: Progress, undo: Callable[[], None]) -> None:
    """Unregister this cluster; the last one runs ``undo`` (kube-proxy's own cleanup), then
    deletes the chains added since the baseline and puts forwarding back."""
    with _locked() as d:
        mine = d / "users" / sd.tag
        if not mine.exists():
            return
        mine.unlink()
        if _users(d):
            progress("another cluster with real nodes runs: host settings left for it to restore")
            return
        undo()
        saved = json.loads((d / "baseline.json").read_text())
        removed = remove_chains(saved.get("chains", {}))
        if IP_FORWARD.read_text().strip() != saved["ip_forward"]:
            IP_FORWARD.write_text(saved["ip_forward"] + "\n")
        (d / "baseline.json").unlink()
        progress(f"host restored: {removed} iptables chains removed, ip_forward={saved['ip_forward']}")
