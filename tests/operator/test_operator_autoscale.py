"""spec.autoscaling on the local cluster, with node sizes that make capacity bind: a job asking for up to 4
workers on a node that fits 2 settles at 2 once the rest stay unschedulable, grows to 4 when a second node
joins (the Node watch ends its growth backoff), and shrinks back to 2 when that node is reclaimed."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest

from dstj_operator.crd import PLURAL
from localcluster import faults, nodes
from localcluster.kubectl import Kubectl
from localcluster.nodes import NodeSize
from localcluster.state import StateDir
from localcluster.waiting import wait_until
from tests.cluster.kobjects import unique
from tests.operator.conftest import job_status, tiny_job, training

NAME = "grow"
TAINT = "dstj.test/autoscale"
UNSCHEDULABLE_SECONDS = 10
"""The shortest the CRD allows: the test waits it out twice."""
FITS = NodeSize(pods=2)
"""A pool node holds two workers."""
FIRST = NodeSize(pods=3)
"""The first pool node also holds the rendezvous store (it follows the workers' node selector and tolerations,
and it is created before them), and then two workers."""


@pytest.fixture
def pool(kube_nodes: Kubectl, state: StateDir) -> Iterator[tuple[str, list[str]]]:
    """One fresh node that fits the store and two workers and takes only this test's pods; every pool node removed
    after."""
    label = unique("pool")
    names = [nodes.add(state, unique("auto"), size=FIRST, taints=(f"{TAINT}=true:NoSchedule",),
                       labels={TAINT: label})]
    yield label, names
    for n in names:
        if nodes.agent_alive(state, n):
            faults.remove(state, n)


def _scaling(status: dict) -> dict:
    return next((c for c in status.get("conditions") or [] if c["type"] == "Scaling"), {})


def _settled(kube: Kubectl, ns: str, world: int, after: int = -1) -> dict | None:
    """The status once the job trains at `world`, chose `world` and says capacity limits it."""
    status = job_status(kube, ns, NAME)
    ok = (status.get("targetReplicas") == world and _scaling(status).get("reason") == "CapacityLimited"
          and training(kube, ns, NAME, world=world, after=after) is not None)
    return status if ok else None


def _seconds(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


@pytest.mark.slow
def test_a_job_finds_its_size_as_nodes_join_and_leave(
    kube_nodes: Kubectl, ns: str, operator: object, state: StateDir, pool: tuple[str, list[str]], tmp_path: Path,
) -> None:
    kube = kube_nodes
    label, pool_nodes = pool
    job = tiny_job(ns, NAME, tmp_path, steps=100000, replicas=4, interval=5,
                   autoscaling={"enabled": True, "unschedulableSeconds": UNSCHEDULABLE_SECONDS, "powersOfTwo": True,
                                # growth waits for a capacity signal, not for a backoff the test would outlast
                                "growthBackoffSeconds": 3600},
                   pod={"nodeSelector": {TAINT: label},
                        "tolerations": [{"key": TAINT, "operator": "Exists", "effect": "NoSchedule"}]})
    kube("apply", "-f", "-", stdin=json.dumps(job))

    # Two of the four workers fit: the other two are removed after unschedulableSeconds and the job trains at 2.
    status = wait_until(lambda: _settled(kube, ns, 2), timeout=180, what="training at W=2, settled at capacity")
    created = json.loads(kube("get", PLURAL, NAME, "-n", ns, "-o", "json").stdout)["metadata"]["creationTimestamp"]
    settled = _seconds(_scaling(status)["lastTransitionTime"]) - _seconds(created)
    assert settled <= UNSCHEDULABLE_SECONDS + 10, f"settled {settled:.0f} s after the job was created"
    assert "unschedulable" in _scaling(status)["message"], _scaling(status)
    assert next(c for c in status["conditions"] if c["type"] == "Degraded")["status"] == "False", status

    # A second node: the Node watch ends the growth backoff (an hour) and the job grows to 4 at once.
    step = status["progress"]["step"]
    pool_nodes.append(nodes.add(state, unique("auto"), size=FITS, taints=(f"{TAINT}=true:NoSchedule",),
                                labels={TAINT: label}))
    wait_until(lambda: training(kube, ns, NAME, world=4, after=step), timeout=120, what="training at W=4")
    assert _scaling(job_status(kube, ns, NAME)).get("reason") == "AtMaximum"

    # The second node is reclaimed: the job trains on at 2 and settles there again.
    step = job_status(kube, ns, NAME)["progress"]["step"]
    faults.reclaim(state, pool_nodes[1], lambda _: None)
    status = wait_until(lambda: _settled(kube, ns, 2, after=step), timeout=150,
                        what="training at W=2 after the node was reclaimed")
    assert status.get("crashes", 0) == 0, status
    kube("delete", PLURAL, NAME, "-n", ns, "--wait=false")
