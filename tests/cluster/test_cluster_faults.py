"""Node faults: a killed node is noticed and evicted by the real controllers; a reclaimed node
drains gracefully. Each test adds its own tainted node, so the shared nodes stay healthy."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from localcluster import faults, nodes
from localcluster.kubectl import Kubectl
from localcluster.state import StateDir
from localcluster.waiting import wait_until
from tests.cluster.kobjects import (
    apply,
    condition,
    container_pid,
    get,
    phase,
    pod,
    process_alive,
    unique,
    wait_for,
)

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

TEST_TAINT = "localcluster.dev/test"


@pytest.fixture
def own_node(kube_nodes: Kubectl, state: StateDir) -> Iterator[str]:
    """A fresh node only pods that tolerate its taint land on; removed afterwards."""
    name = nodes.add(state, unique("n"), taints=(f"{TEST_TAINT}=true:NoSchedule",))
    yield name
    if get(kube_nodes, "node", name) is not None or nodes.agent_alive(state, name):
        faults.remove(state, name)


def _pinned(name: str, node: str, script: str, tmp_path: Path, **extra: object) -> dict:
    """A pod that lands on ``node`` (and tolerates its taint) with ``tmp_path`` at /signal."""
    tmp_path.chmod(0o755)
    tolerations = [{"key": TEST_TAINT, "operator": "Exists", "effect": "NoSchedule"}]
    tolerations += extra.pop("tolerations", [])  # type: ignore[arg-type]
    return pod(name, script, grace=5, nodeSelector={"kubernetes.io/hostname": node}, tolerations=tolerations,
               volumes=[{"name": "signal", "hostPath": {"path": str(tmp_path)}}],
               container={"volumeMounts": [{"name": "signal", "mountPath": "/signal"}]}, **extra)


def _cli(state: StateDir, *args: str) -> None:
    subprocess.run([sys.executable, "-m", "localcluster", "--state", str(state.root), *args], check=True,
                   timeout=120)


def test_a_killed_node_goes_not_ready_and_the_controller_evicts_its_pod(kube_nodes: Kubectl, ns: str,
                                                                        own_node: str, state: StateDir,
                                                                        tmp_path: Path) -> None:
    brief = [{"key": f"node.kubernetes.io/{k}", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 2}
             for k in ("unreachable", "not-ready")]
    apply(kube_nodes, ns, _pinned("victim", own_node, "sleep 600", tmp_path, tolerations=brief))
    running = wait_for(kube_nodes, "pod", "victim", ns, lambda p: phase(p) == "Running")
    pid = container_pid(running)

    _cli(state, "node", "kill", own_node)

    assert not process_alive(pid), "the node's pod processes die with it"
    def unreachable(n: dict) -> bool:
        tainted = any(t["key"] == "node.kubernetes.io/unreachable" for t in n["spec"].get("taints") or [])
        return condition(n, "Ready").get("status") == "Unknown" and tainted

    wait_for(kube_nodes, "node", own_node, None, unreachable, timeout=30,
             what="the node lifecycle controller to mark the node NotReady and taint it unreachable")
    evicted = wait_for(kube_nodes, "pod", "victim", ns, lambda p: p["metadata"].get("deletionTimestamp") is not None,
                       timeout=30, what="the taint manager to evict the pod")
    assert condition(evicted, "DisruptionTarget").get("reason") == "DeletionByTaintManager"


def test_a_reclaimed_node_sends_sigterm_first_then_goes_away(kube_nodes: Kubectl, ns: str, own_node: str,
                                                             state: StateDir, tmp_path: Path) -> None:
    script = ("trap 'echo got-sigterm > /signal/term; exit 0' TERM; touch /signal/started; "
              "while true; do sleep 0.05; done")
    apply(kube_nodes, ns, _pinned("spot", own_node, script, tmp_path))
    wait_for(kube_nodes, "pod", "spot", ns, lambda p: phase(p) == "Running")
    wait_until(lambda: (tmp_path / "started").exists(), timeout=10, what="the trap to be installed")

    _cli(state, "node", "reclaim", own_node)

    assert (tmp_path / "term").read_text() == "got-sigterm\n"
    assert get(kube_nodes, "pod", "spot", ns) is None
    assert get(kube_nodes, "node", own_node) is None
    assert not nodes.agent_alive(state, own_node)
