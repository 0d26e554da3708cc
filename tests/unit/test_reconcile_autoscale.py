"""A reconcile pass of an autoscaling job, against a cluster that is only a list of pods: which workers it
removes and creates, the size it publishes, and what its status and events say."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from dstj_api import ProgressReport
from dstj_api.contract import GROUP, INDEX_LABEL, JOB_LABEL, KIND, ROLE_LABEL, VERSION
from dstj_operator import capacity, conditions
from dstj_operator.converge import Mode
from dstj_operator.reconcile import Outcome, reconcile
from tests.unit.policies.builders import NOW, ago

AUTO = {"enabled": True, "unschedulableSeconds": 30, "growthBackoffSeconds": 60, "powersOfTwo": True}


class PodsOnly:
    """Stands in for `Cluster`: its pods are a list; every other child is taken as applied."""

    def __init__(self, pods: list[dict[str, Any]], hpas: list[str] | None = None,
                 report: ProgressReport | None = None) -> None:
        self.items, self.report = pods, report
        self.deleted: list[str] = []
        self.created: list[dict[str, Any]] = []
        self.hpas = hpas or []

    def converge(self, obj: dict[str, Any], mode: Mode = Mode.APPLY) -> bool:
        return False

    def create_if_absent(self, obj: dict[str, Any]) -> bool:
        self.created.append(obj)
        return True

    def pods(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        role = selector.split(f"{ROLE_LABEL}=")[1]
        return [p for p in self.items if p["metadata"]["labels"][ROLE_LABEL] == role]

    def delete_pod(self, namespace: str, name: str, grace_seconds: int | None = None) -> None:
        self.deleted.append(name)

    def progress(self, namespace: str, name: str) -> ProgressReport | None:
        return self.report

    def event(self, job: dict[str, Any], reason: str, message: str, kind: str = "Normal") -> None:
        pass

    def scale_up_triggered(self, namespace: str) -> set[str]:
        return set()

    def autoscalers(self, namespace: str, job: str) -> list[str]:
        return self.hpas

    def created_indices(self) -> list[int]:
        return sorted(int(p["metadata"]["labels"][INDEX_LABEL]) for p in self.created
                      if p["metadata"]["labels"][ROLE_LABEL] == "worker")


def pod(index: int, *, node: str | None = "n1", unschedulable_for: float | None = None,
        role: str = "worker") -> dict[str, Any]:
    """A worker pod: Running and Ready on `node`, or Pending (unschedulable for so many seconds)."""
    conds = [{"type": "Ready", "status": "True"}] if node else []
    if unschedulable_for is not None:
        conds = [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                  "lastTransitionTime": ago(unschedulable_for)}]
    return {"metadata": {"name": f"moe-{role}-{index}", "labels": {JOB_LABEL: "moe", ROLE_LABEL: role,
                                                                   INDEX_LABEL: str(index)},
                         "creationTimestamp": ago(300)},
            "spec": {**({"nodeName": node} if node else {}),
                     "containers": [{"name": role, "ports": [{"containerPort": 29400}]}]},
            "status": {"phase": "Running" if node else "Pending", "conditions": conds}}


def job(status: dict[str, Any] | None = None, **spec: Any) -> dict[str, Any]:
    """An autoscaling job at ceiling 4 (tiny model: with powersOfTwo the sizes are 1, 2, 4)."""
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": KIND,
            "metadata": {"name": "moe", "namespace": "team", "uid": "uid-1", "generation": 1},
            "spec": {"replicas": 4, "minReplicas": 1, "maxReplicas": 4, "autoscaling": AUTO, **spec},
            "status": status or {}}


def training(*members: int) -> dict[str, Any]:
    """A status whose published generation trains these worker indices (the gang has started)."""
    return {"membership": {"generation": 3, "worldSize": len(members), "members": [f"moe-worker-{i}" for i in members],
                           "state": "running", "rdzvEndpoint": "moe-rdzv:29400"}}


def scaling(out: Outcome) -> tuple[str, str]:
    cond = out.status.condition(conditions.SCALING)
    assert cond is not None
    return cond.status, cond.reason


@pytest.fixture(autouse=True)
def no_capacity_signal() -> None:
    capacity._cluster_signal = None
    capacity._namespace_signal.clear()


def test_workers_unschedulable_too_long_are_removed_and_the_job_settles_at_what_fits() -> None:
    cluster = PodsOnly([pod(0), pod(1), pod(2, node=None, unschedulable_for=45),
                        pod(3, node=None, unschedulable_for=45), pod(0, role="rendezvous")])
    out = reconcile(cluster, job({**training(0, 1), "targetReplicas": 4}), NOW)  # type: ignore[arg-type]
    assert out.status.target_replicas == 2 and out.status.schedulable_replicas == 2
    assert scaling(out) == ("False", conditions.CAPACITY_LIMITED)
    assert sorted(cluster.deleted) == ["moe-worker-2", "moe-worker-3"] and cluster.created_indices() == []
    assert ("Resized" in [e.reason for e in out.events]) and out.status.bookkeeping.growth_failures == 1
    degraded = out.status.condition(conditions.DEGRADED)
    assert degraded is not None and degraded.status == "False", "settled at capacity is not degraded"


def test_workers_still_within_unschedulable_seconds_are_waited_for() -> None:
    cluster = PodsOnly([pod(0), pod(1), pod(2, node=None, unschedulable_for=10),
                        pod(3, node=None, unschedulable_for=10), pod(0, role="rendezvous")])
    out = reconcile(cluster, job({**training(0, 1), "targetReplicas": 4}), NOW)  # type: ignore[arg-type]
    assert out.status.target_replicas == 4 and cluster.deleted == []
    assert scaling(out) == ("True", conditions.WAITING_FOR_CAPACITY)
    assert out.requeue_after is not None and out.requeue_after <= 20


@pytest.mark.parametrize(("signal", "target", "created"), [
    pytest.param(None, 2, [], id="without-a-signal-the-backoff-holds"),
    pytest.param(5.0, 4, [2, 3], id="a-node-after-the-failure-ends-the-backoff"),
])
def test_growth_waits_out_its_backoff_unless_the_cluster_signals_capacity(
        signal: float | None, target: int, created: list[int]) -> None:
    if signal is not None:
        capacity.signal(None, NOW - timedelta(seconds=signal))
    cluster = PodsOnly([pod(0), pod(1), pod(0, role="rendezvous")])
    status = {**training(0, 1), "targetReplicas": 2, "bookkeeping": {"growthFailures": 1, "growthFailedAt": ago(10),
                                                                     "targetSince": ago(10)}}
    out = reconcile(cluster, job(status), NOW)  # type: ignore[arg-type]
    assert out.status.target_replicas == target and cluster.created_indices() == created


def test_a_generation_only_trains_at_an_eligible_size() -> None:
    cluster = PodsOnly([pod(0), pod(1), pod(2), pod(3, node=None, unschedulable_for=5), pod(0, role="rendezvous")])
    out = reconcile(cluster, job({**training(0, 1), "targetReplicas": 4}), NOW)  # type: ignore[arg-type]
    assert out.status.membership is not None and out.status.membership.world_size == 2, "3 ready, 2 eligible"


def test_an_hpa_on_an_autoscaling_job_is_refused_with_a_condition_and_a_warning() -> None:
    cluster = PodsOnly([pod(0), pod(1), pod(0, role="rendezvous")], hpas=["moe-hpa"])
    out = reconcile(cluster, job({**training(0, 1), "targetReplicas": 2}), NOW)  # type: ignore[arg-type]
    cond = out.status.condition(conditions.SCALING)
    assert cond is not None and cond.reason == conditions.CONFLICTING_AUTOSCALER and "moe-hpa" in cond.message
    assert any(e.reason == "ConflictingAutoscaler" and e.type == "Warning" for e in out.events)


def test_a_job_without_autoscaling_writes_no_scaling_status() -> None:
    cluster = PodsOnly([pod(0), pod(1), pod(0, role="rendezvous")])
    out = reconcile(cluster, job(training(0, 1), replicas=2, autoscaling={}), NOW)  # type: ignore[arg-type]
    assert out.status.condition(conditions.SCALING) is None and out.status.target_replicas is None


def test_the_steady_throughput_of_the_training_generation_is_kept_per_worker_count() -> None:
    report = ProgressReport.model_validate({"step": 40, "totalSteps": 100, "generation": 3, "worldSize": 2,
                                            "expertParallel": 2, "dataParallel": 1, "tokensPerSecond": 900.0,
                                            "steadyTokensPerSecond": 640.0, "updated": NOW})
    cluster = PodsOnly([pod(0), pod(1), pod(0, role="rendezvous")], report=report)
    out = reconcile(cluster, job({**training(0, 1), "targetReplicas": 2}), NOW)  # type: ignore[arg-type]
    assert [(t.world_size, t.tokens_per_second) for t in out.status.throughput or []] == [(2, 640.0)]
