"""Find (building once if needed) the local cluster's binaries: control plane, real nodes, kwok.

The recipe itself is ``build.sh`` beside this file: one place decides versions, flags and the
cache key, so this module only runs it. A cached run costs a few milliseconds; a cold one
builds from the Go module proxy (tens of minutes on two cores) and shows progress on stderr.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections import deque
from pathlib import Path

BUILD_SH = Path(__file__).with_name("build.sh")
#: The binaries ``build.sh`` guarantees in its output directory.
BINARIES = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl", "helm")
#: What ``build.sh node`` guarantees: what a real node runs (``realnodes.py``, ``realnet.py``).
NODE_BINARIES = ("kubelet", "kube-proxy", "containerd", "containerd-shim-runc-v2", "ctr", "clusterdns", "pause")


class BuildError(RuntimeError):
    """The binaries could not be built (no Go, no network to the module proxy, a compile error)."""


def bin_dir(*, force: bool = False) -> Path:
    """Return the directory holding the control-plane binaries, building them first if missing.

    ``force`` rebuilds even when a complete build is cached. Build progress goes straight to
    our stderr, so a user sees it while waiting.
    """
    return _run(["bash", str(BUILD_SH), "control"], BINARIES, force)


def node_bin_dir(*, force: bool = False) -> Path:
    """Return the directory holding the real-node binaries (``NODE_BINARIES``), building if missing."""
    return _run(["bash", str(BUILD_SH), "node"], NODE_BINARIES, force)


def kwok_bin_dir(*, force: bool = False) -> Path:
    """Return the directory holding ``kwok``, building it from its pinned module first if missing."""
    return _run(["bash", str(BUILD_SH), "kwok"], ("kwok",), force)


def _run(argv: list[str], binaries: tuple[str, ...], force: bool) -> Path:
    """Run a build script (a no-op when cached), streaming its progress to our stderr; return the directory it
    printed."""
    script = argv[1]
    if shutil.which("bash") is None:
        raise BuildError(f"bash is required to run {script}")
    env = {**os.environ, "LOCALCLUSTER_FORCE_BUILD": "1"} if force else None
    # Stream build.sh's progress to our stderr as it comes (a cold build takes minutes) and
    # keep its last lines, so an error (e.g. a skipped test's reason) says what went wrong.
    tail: deque[str] = deque(maxlen=8)
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, env=env) as proc:
        assert proc.stderr is not None and proc.stdout is not None
        for line in proc.stderr:
            sys.stderr.write(line)
            tail.append(line.rstrip())
        out = proc.stdout.read()
    if proc.returncode != 0:
        raise BuildError(f"{script} failed with exit code {proc.returncode}: " + " | ".join(tail))
    path = Path(out.strip().splitlines()[-1])
    missing = [b for b in binaries if not (path / b).is_file()]
    if missing:
        raise BuildError(f"{script} printed {path} but it lacks {', '.join(missing)}")
    return path


def binary(name: str) -> Path:
    """Return the path of one binary (``kubectl``, ``helm``...), building if needed."""
    if name not in BINARIES:
        raise ValueError(f"unknown binary {name!r}; known: {', '.join(BINARIES)}")
    return bin_dir() / name
