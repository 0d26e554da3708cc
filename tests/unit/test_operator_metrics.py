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


def phase_gauge(phase: str) -> float | None:
    return REGISTRY.get_sample_value("dstj_operator_jobs", {"phase": phase})


def test_the_jobs_by_phase_gauge_moves_a_job_from_its_old_phase_to_its_new_one_and_drops_it_when_gone() -> None:
    pending, running = phase_gauge("Pending") or 0.0, phase_gauge("Running") or 0.0
    metrics.job_phase("team", "phased", "Pending")
    metrics.job_phase("team", "phased", "Pending")  # a pass that changed nothing counts nothing
    assert (phase_gauge("Pending"), phase_gauge("Running")) == (pending + 1, running)
    metrics.job_phase("team", "phased", "Running")
    assert (phase_gauge("Pending"), phase_gauge("Running")) == (pending, running + 1)
    metrics.job_phase("team", "phased", None)
    metrics.job_phase("team", "phased", None)
    assert (phase_gauge("Pending"), phase_gauge("Running")) == (pending, running)
    assert phase_gauge("Suspended") is not None  # every phase is exported, a phase no job has at 0
