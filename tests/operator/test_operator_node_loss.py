"""A node dies under a running job (`node kill`: agent and pod processes SIGKILLed, the API not told):
the job recovers on the remaining capacity without waiting for the dead pod to finish terminating."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from dstj_api.contract import JOB_LABEL
from dstj_operator.crd import PLURAL
from localcluster import faults, nodes
from localcluster.kubectl import Kubectl
from localcluster.state import StateDir
from localcluster.waiting import wait_until
from tests.cluster.kobjects import unique
from tests.operator.conftest import job_status, tiny_job, training, worker_pods

NAME = "spot"
TAINT = "dstj.test/spot"


@pytest.fixture
def spot_pool(kube_nodes: Kubectl, state: StateDir) -> Iterator[tuple[str, list[str]]]:
    """Two fresh nodes that only pods tolerating the test taint land on; removed afterwards."""
    pool = unique("pool")
    names = [nodes.add(state, unique("spot"), taints=(f"{TAINT}=true:NoSchedule",), labels={TAINT: pool})
             for _ in range(2)]
    yield pool, names
    for n in names:
        faults.remove(state, n)


def _training(kube: Kubectl, ns: str, world: int, after: int, past_generation: int = -1) -> dict | None:
    return training(kube, ns, NAME, world=world, after=after, past_generation=past_generation)


@pytest.mark.slow
def test_a_killed_node_costs_its_worker_not_the_job(
    kube_nodes: Kubectl, ns: str, operator: object, state: StateDir, spot_pool: tuple[str, list[str]],
    tmp_path: Path,
) -> None:
    kube = kube_nodes
    pool, pool_nodes = spot_pool
    job = tiny_job(ns, NAME, tmp_path, steps=100000, interval=5,
                   faultPolicy={"unreachableSeconds": 2},
                   pod={"nodeSelector": {TAINT: pool},
                        "tolerations": [{"key": TAINT, "operator": "Exists", "effect": "NoSchedule"}],
                        "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "kubernetes.io/hostname",
                                                       "whenUnsatisfiable": "DoNotSchedule",
                                                       # the dead node (tainted) must not count as a domain
                                                       "nodeTaintsPolicy": "Honor",
                                                       "labelSelector": {"matchLabels": {
                                                           JOB_LABEL: NAME}}}]})
    kube("apply", "-f", "-", stdin=json.dumps(job))
    p = wait_until(lambda: _training(kube, ns, 2, 1), timeout=180, what="training at W=2 on the spot pool")
    victim = next(w for w in worker_pods(kube, ns, NAME))
    dead_node = victim["spec"]["nodeName"]
    assert dead_node in pool_nodes

    gen = job_status(kube, ns, NAME)["membership"]["generation"]
    nodes.kill(state, dead_node)

    # Survivors train on without the dead worker (W=1, then W=2 again once its replacement runs on
    # the surviving node), while the dead pod may still sit Terminating on a node nobody answers for.
    p = wait_until(lambda: _training(kube, ns, 2, p["step"], gen) or _training(kube, ns, 1, p["step"], gen),
                   timeout=150,
                   what="training to resume after the node died")
    # The survivor may train on before the taint manager evicts the dead pod (which counts it).
    status = wait_until(lambda: (s := job_status(kube, ns, NAME)).get("preemptions", 0) >= 1 and s, timeout=60,
                        what="the dead worker to be counted as a preemption")
    assert status.get("crashes", 0) == 0, status
    assert victim["metadata"]["name"] not in status["membership"]["members"]
    wait_until(lambda: _training(kube, ns, 2, p["step"]), timeout=150, what="a replacement on the surviving node")
    kube("delete", PLURAL, NAME, "-n", ns, "--wait=false")
