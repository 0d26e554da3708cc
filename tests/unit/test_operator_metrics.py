"""The operator's per-job worker gauges: desired, schedulable and training workers, dropped with the job."""

from __future__ import annotations

from prometheus_client import REGISTRY

from dstj_operator import metrics
from dstj_operator.status import JobStatus


def gauge(kind: str) -> float | None:
    return REGISTRY.get_sample_value("dstj_operator_job_workers", {"namespace": "team", "job": "moe", "kind": kind})


def test_an_autoscaling_job_reports_its_chosen_schedulable_and_training_workers() -> None:
    status = JobStatus.model_validate({
        "phase": "Running", "replicas": 4, "desiredReplicas": 4, "targetReplicas": 2, "schedulableReplicas": 2,
        "membership": {"generation": 1, "worldSize": 2, "members": ["a", "b"], "rdzvEndpoint": "moe-rdzv:29400"}})
    metrics.job_workers("team", "moe", status)
    assert (gauge("desired"), gauge("schedulable"), gauge("training")) == (2.0, 2.0, 2.0)
    metrics.job_workers("team", "moe", None)
    assert gauge("desired") is None


def test_without_autoscaling_the_spec_is_desired_and_a_pending_job_trains_nobody() -> None:
    status = JobStatus.model_validate({"phase": "Pending", "replicas": 3, "desiredReplicas": 3})
    metrics.job_workers("team", "moe", status)
    assert (gauge("desired"), gauge("schedulable"), gauge("training")) == (3.0, 3.0, 0.0)
    metrics.job_workers("team", "moe", None)
