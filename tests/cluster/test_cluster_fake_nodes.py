"""Simulated nodes (kwok): pods bound to them go Pending -> Running -> Ready and honour graceful deletion."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from localcluster import controlplane, fakenodes
from localcluster.nodeagent.kubeapi import Api
from localcluster.state import StateDir
from localcluster.waiting import wait_until

pytestmark = pytest.mark.cluster


@pytest.fixture
def fake_node(state: StateDir) -> Iterator[str]:
    """One tainted fake node in the session cluster, removed afterwards (other tests count nodes)."""
    name = f"{fakenodes.PREFIX}t{time.monotonic_ns() % 10_000}"
    fakenodes.start(state, controlplane.stderr_progress)
    fakenodes.add(state, name, taint=True)
    try:
        wait_until(lambda: fakenodes.ready(state, name), timeout=30, what=f"fake node {name} to be Ready")
        yield name
    finally:
        fakenodes.remove(state, name)


def _state(pod: dict[str, Any]) -> str:
    """A pod's lifecycle state as a kubelet would move it: Pending, Running, Ready or Terminating."""
    if pod["metadata"].get("deletionTimestamp"):
        return "Terminating"
    status = pod.get("status") or {}
    ready = any(c["type"] == "Ready" and c["status"] == "True" for c in status.get("conditions") or [])
    return "Ready" if ready else str(status.get("phase", "Pending"))


def test_a_pod_on_a_fake_node_goes_pending_running_ready_then_waits_out_a_graceful_deletion(
        state: StateDir, ns: str, fake_node: str) -> None:
    api = Api(state.admin_kubeconfig)
    seen: list[str] = []
    gone, listed, stop = threading.Event(), threading.Event(), threading.Event()

    def on_event(kind: str, obj: dict[str, Any]) -> None:
        if kind == "DELETED":
            gone.set()
        elif not seen or seen[-1] != _state(obj):
            seen.append(_state(obj))

    only_sim = {"fieldSelector": "metadata.name=sim"}
    watch = threading.Thread(target=api.watch, daemon=True, args=(
        f"/api/v1/namespaces/{ns}/pods", only_sim, lambda _: listed.set(), on_event, stop))
    watch.start()
    try:
        wait_until(listed.is_set, timeout=10, what="the watch to list")
        api.post(f"/api/v1/namespaces/{ns}/pods", {
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "sim"},
            "spec": {"nodeSelector": dict([fakenodes.FAKE_LABEL]), "tolerations": [fakenodes.FAKE_TOLERATION],
                     "terminationGracePeriodSeconds": 30, "containers": [{"name": "c", "image": "nothing-runs"}]}})
        wait_until(lambda: seen[-1:] == ["Ready"], timeout=30, what=f"the pod to be Ready (seen: {seen})")
        pod = api.get(f"/api/v1/namespaces/{ns}/pods/sim")
        assert pod["spec"]["nodeName"] == fake_node
        assert pod["status"]["podIP"].startswith("100.")

        t0 = time.monotonic()
        api.delete(f"/api/v1/namespaces/{ns}/pods/sim")
        wait_until(gone.is_set, timeout=30, what="the pod to be deleted")
        took = time.monotonic() - t0
    finally:
        stop.set()
    assert seen == ["Pending", "Running", "Ready", "Terminating"]
    # Graceful: it stays Terminating about a second (a worker checkpointing), well inside its 30 s grace.
    assert 0.5 <= took < 10, took
