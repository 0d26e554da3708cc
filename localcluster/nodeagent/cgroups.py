"""Track every process of a container in a cgroup, so none escapes a kill.

A container's command may fork (torchrun starts workers, a shell backgrounds a job). A real
runtime kills the whole container when its main process exits or the pod goes; without a PID
namespace we get the same from a cgroup v2 per container: ``cgroup.kill`` ends every process in
it and its children at once, and ``cgroup.procs`` lists them. The hierarchy is
``<cgroup2>/localcluster-<tag>/<node>/<pod uid>/<container>``, so a node kill is one write.

Where no writable cgroup2 hierarchy exists (some containers), this degrades to process groups:
each container leads its own session and is signalled by ``killpg``.
"""

from __future__ import annotations

import contextlib
import os
import signal
from functools import cache
from pathlib import Path

from localcluster.waiting import WaitTimeout, wait_until


@cache
def root() -> Path | None:
    """The writable cgroup2 mount point, or None (then process groups are used)."""
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        left, _, right = line.partition(" - ")
        if right.split()[:1] == ["cgroup2"]:
            point = Path(left.split()[4])
            probe = point / f".localcluster-probe-{os.getpid()}"
            try:
                probe.mkdir()
                probe.rmdir()
            except OSError:
                continue
            return point
    return None


def cluster_dir(tag: str) -> Path | None:
    """``<cgroup2>/localcluster-<tag>``, or None without cgroups."""
    r = root()
    return r / f"localcluster-{tag}" if r else None


def node_dir(tag: str, node: str) -> Path | None:
    """The cgroup of one node's pods."""
    c = cluster_dir(tag)
    return c / node if c else None


def pod_dir(tag: str, node: str, uid: str) -> Path | None:
    """The cgroup of one pod (parent of its containers' cgroups)."""
    n = node_dir(tag, node)
    return n / uid if n else None


def container_dir(tag: str, node: str, uid: str, container: str) -> Path | None:
    """The cgroup of one container (created on demand by ``make``)."""
    p = pod_dir(tag, node, uid)
    return p / container if p else None


def make(path: Path | None) -> int | None:
    """Create a cgroup and return a write-only fd of its ``cgroup.procs``.

    The container's first process writes its own pid there (the fd is inherited), because
    ``ip netns exec`` remounts /sys and the path is gone inside the pod's mount namespace.
    """
    if path is None:
        return None
    path.mkdir(parents=True, exist_ok=True)
    return os.open(path / "cgroup.procs", os.O_WRONLY | os.O_CLOEXEC)


def pids(path: Path | None) -> list[int]:
    """Pids in a cgroup and all its descendants."""
    if path is None or not path.is_dir():
        return []
    found = []
    for procs in path.rglob("cgroup.procs"):
        with contextlib.suppress(OSError, ValueError):
            found += [int(x) for x in procs.read_text().split()]
    return found


def signal_all(path: Path | None, sig: signal.Signals) -> None:
    """Send ``sig`` to every process in a cgroup tree (SIGKILL uses ``cgroup.kill``)."""
    if path is None or not path.is_dir():
        return
    if sig == signal.SIGKILL and (path / "cgroup.kill").exists():
        with contextlib.suppress(OSError):
            (path / "cgroup.kill").write_text("1")
            return
    for pid in pids(path):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def kill_and_remove(path: Path | None, timeout: float = 10.0) -> None:
    """SIGKILL everything in a cgroup tree, wait until it is empty, and remove it."""
    if path is None or not path.is_dir():
        return
    signal_all(path, signal.SIGKILL)
    with contextlib.suppress(WaitTimeout):
        wait_until(lambda: not pids(path), timeout=timeout, what=f"cgroup {path} to empty",
                   interval=0.01, max_interval=0.1)
    remove(path)


def remove(path: Path | None) -> None:
    """Remove an empty cgroup tree, deepest first (a busy one stays, harmlessly)."""
    if path is None or not path.is_dir():
        return
    for d in sorted((p for p in path.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
        with contextlib.suppress(OSError):
            d.rmdir()
    with contextlib.suppress(OSError):
        path.rmdir()
