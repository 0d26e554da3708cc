"""Graceful deletion on process nodes: SIGTERM first, the grace period, then SIGKILL."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from localcluster.kubectl import Kubectl
from localcluster.waiting import wait_until
from tests.cluster.kobjects import apply, container_pid, get, phase, pod, process_alive, wait_for, wait_gone

pytestmark = pytest.mark.cluster


def _signal_volume(tmp_path: Path) -> dict:
    """Pod spec parts that mount ``tmp_path`` at /signal, where the pod leaves its traces."""
    tmp_path.chmod(0o755)
    return {"volumes": [{"name": "signal", "hostPath": {"path": str(tmp_path)}}],
            "container": {"volumeMounts": [{"name": "signal", "mountPath": "/signal"}]}}


def test_a_deleted_pod_gets_sigterm_and_may_finish_within_its_grace_period(kube_nodes: Kubectl, ns: str,
                                                                          tmp_path: Path) -> None:
    # On SIGTERM the pod records it, takes a second to "save its work", and exits.
    script = ("trap 'echo got-sigterm > /signal/term; sleep 1; echo saved > /signal/saved; exit 0' TERM; "
              "touch /signal/started; while true; do sleep 0.05; done")
    apply(kube_nodes, ns, pod("graceful", script, grace=10, **_signal_volume(tmp_path)))
    wait_for(kube_nodes, "pod", "graceful", ns, lambda p: phase(p) == "Running")
    wait_until(lambda: (tmp_path / "started").exists(), timeout=10, what="the trap to be installed")

    kube_nodes("delete", "pod", "graceful", "-n", ns, "--wait=false")

    wait_until(lambda: (tmp_path / "term").exists(), timeout=10, what="the pod to receive SIGTERM")
    still = get(kube_nodes, "pod", "graceful", ns)
    assert still is not None and still["metadata"].get("deletionTimestamp"), \
        "the pod must stay in the API while its processes run"
    wait_gone(kube_nodes, "pod", "graceful", ns, timeout=15)
    assert (tmp_path / "saved").read_text() == "saved\n", "the grace period must let the handler finish"


def test_a_pod_that_ignores_sigterm_is_killed_when_its_grace_period_ends(kube_nodes: Kubectl, ns: str,
                                                                        tmp_path: Path) -> None:
    script = "trap 'echo ignored > /signal/term' TERM; touch /signal/started; while true; do sleep 0.05; done"
    apply(kube_nodes, ns, pod("stubborn", script, grace=2, **_signal_volume(tmp_path)))
    running = wait_for(kube_nodes, "pod", "stubborn", ns, lambda p: phase(p) == "Running")
    wait_until(lambda: (tmp_path / "started").exists(), timeout=10, what="the trap to be installed")
    pid = container_pid(running)

    start = time.monotonic()
    kube_nodes("delete", "pod", "stubborn", "-n", ns, "--wait=false")
    wait_gone(kube_nodes, "pod", "stubborn", ns, timeout=15)
    took = time.monotonic() - start

    assert (tmp_path / "term").exists()
    assert 1.8 <= took < 8, f"SIGKILL must come when the 2 s grace period ends, not after {took:.1f} s"
    assert not process_alive(pid), "the pod is deleted from the API only after its processes are gone"
