"""Operating the operator: a standby takes over a killed leader, and an operator killed (kill -9) in
the middle of a scale-up leaves neither duplicate nor orphaned workers. Real API server and pods."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from dstj_api.contract import INDEX_LABEL
from dstj_operator.crd import PLURAL
from localcluster.kubectl import Kubectl
from localcluster.waiting import wait_until
from tests.operator.conftest import StartOperator, free_port, job_status, tiny_job, training, worker_pods

NAME = "ha"


def _holder(kube: Kubectl, ns: str) -> str:
    out = kube("get", "lease", "dstj-test", "-n", ns, "-o", "jsonpath={.spec.holderIdentity}", check=False)
    return out.stdout if out.returncode == 0 else ""


def _world(kube: Kubectl, ns: str, world: int) -> bool:
    return training(kube, ns, NAME, world=world) is not None


def _metrics(port: int) -> str:
    """The operator's /metrics page ("" while it does not answer yet)."""
    try:
        return urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    except OSError:
        return ""


def _probe(port: int, path: str) -> str:
    """`200 ok`, or the status and the reason a probe gives ("" while the operator does not answer yet)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return f"{r.status} {r.read().decode().strip()}"
    except urllib.error.HTTPError as e:
        return f"{e.code} {e.read().decode().strip()}"
    except OSError:
        return ""


def _one_pod_per_index(kube: Kubectl, ns: str, replicas: int) -> None:
    pods = worker_pods(kube, ns, NAME)
    indices = sorted(int(p["metadata"]["labels"][INDEX_LABEL]) for p in pods)
    assert indices == list(range(replicas)), [p["metadata"]["name"] for p in pods]


@pytest.mark.slow
def test_a_standby_takes_over_and_killed_operators_leave_no_duplicates(
    kube_nodes: Kubectl, ns: str, start_operator: StartOperator, tmp_path: Path,
) -> None:
    kube = kube_nodes
    env = {"DSTJ_LEADER_ELECTION": "true", "DSTJ_LEADER_LEASE": "dstj-test", "DSTJ_LEADER_LEASE_SECONDS": "4",
           "POD_NAMESPACE": ns}
    health_a, health_b = free_port(), free_port()
    leader = start_operator("op-a", **env | {"DSTJ_HEALTH_PORT": str(health_a)})
    wait_until(lambda: _holder(kube, ns) == "op-a", timeout=30, what="op-a to hold the lease")
    port = free_port()
    standby = start_operator("op-b", **env | {"DSTJ_METRICS_PORT": str(port), "DSTJ_HEALTH_PORT": str(health_b)})
    # Both Ready: the leader once kopf's watch streams have listed, the standby once it reads the Lease.
    for health in (health_a, health_b):
        wait_until(lambda: _probe(health, "/readyz") == "200 ok", timeout=30,  # noqa: B023 - waited on at once
                   what=f"/readyz on {health} to answer 200")
        assert _probe(health, "/healthz") == "200 ok"
    kube("apply", "-f", "-", stdin=json.dumps(tiny_job(ns, NAME, tmp_path, steps=100000, interval=5)))
    wait_until(lambda: _world(kube, ns, 2), timeout=180, what="training at W=2")
    assert _holder(kube, ns) == "op-a"
    # The standby waits and does not reconcile (read once it serves metrics: it may start later than op-a).
    wait_until(lambda: "dstj_operator_leader 0.0" in _metrics(port), timeout=30, what="the standby's metrics")

    # kill -9 the leader in the middle of a scale-up: the standby takes over and finishes it.
    kube("scale", PLURAL, NAME, "-n", ns, "--replicas=3")
    leader.kill()
    wait_until(lambda: _holder(kube, ns) == "op-b", timeout=30, what="the standby to take the lease")
    wait_until(lambda: _world(kube, ns, 3), timeout=120, what="training at W=3 under the new leader")
    _one_pod_per_index(kube, ns, 3)
    # The gauge is refreshed after the status write the test saw: wait for it, never read it at once.
    wait_until(lambda: 'dstj_operator_jobs{phase="Running"} 1.0' in _metrics(port), timeout=30,
               what="the new leader's jobs gauge to count the job as Running")
    metrics = _metrics(port)
    assert "dstj_operator_leader 1.0" in metrics and "dstj_operator_reconcile_seconds_count" in metrics

    # And again with the only operator killed during a scale-up and a fresh one started later.
    kube("scale", PLURAL, NAME, "-n", ns, "--replicas=4")
    wait_until(lambda: len(worker_pods(kube, ns, NAME)) > 3, timeout=30, what="the scale-up to begin")
    standby.kill()
    start_operator("op-c", **env)
    wait_until(lambda: _world(kube, ns, 4), timeout=120, what="training at W=4 after a restart")
    _one_pod_per_index(kube, ns, 4)
    assert job_status(kube, ns, NAME).get("crashes", 0) == 0
    kube("delete", PLURAL, NAME, "-n", ns, "--wait=false")
