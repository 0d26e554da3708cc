"""The operator against the local cluster: real API server, scheduler, process nodes, trainer pods."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from dstj_operator.crd import PLURAL
from localcluster.kubectl import Kubectl
from localcluster.waiting import wait_until
from tests.operator.conftest import job_status, tiny_job


@pytest.mark.slow
def test_a_job_runs_to_success_and_keeps_its_checkpoints(
    kube_nodes: Kubectl, ns: str, operator: subprocess.Popen[bytes], tmp_path: Path,
) -> None:
    kube_nodes("apply", "-f", "-", stdin=json.dumps(tiny_job(ns, "tiny", tmp_path, ttlSecondsAfterFinished=600)))
    wait_until(lambda: job_status(kube_nodes, ns, "tiny").get("phase") == "Running", timeout=60,
               what="the job to be Running")
    wait_until(lambda: job_status(kube_nodes, ns, "tiny").get("phase") == "Succeeded", timeout=240,
               what="the job to succeed: " + json.dumps(job_status(kube_nodes, ns, "tiny"))[:1500])
    status = job_status(kube_nodes, ns, "tiny")
    assert status["progress"]["step"] == 12
    assert status.get("crashes", 0) == 0
    ckpt = tmp_path / "checkpoints"
    assert json.loads((ckpt / "latest.json").read_text())["step"] == 12
    printed = kube_nodes("get", PLURAL, "tiny", "-n", ns).stdout
    assert "Succeeded" in printed and "LAYOUT" in printed
    kube_nodes("delete", PLURAL, "tiny", "-n", ns)
    assert (ckpt / "latest.json").exists()  # checkpoints outlive the job


@pytest.mark.slow
def test_a_crash_looping_worker_fails_the_job_after_the_budget_and_ttl_deletes_it(
    kube_nodes: Kubectl, ns: str, operator: subprocess.Popen[bytes], tmp_path: Path,
) -> None:
    # A worker that cannot even start python: every incarnation exits 1 at once (a crash, not a preemption).
    job = tiny_job(ns, "crashy", tmp_path, ttlSecondsAfterFinished=3,
                   pod={"env": [{"name": "PYTHONHASHSEED", "value": "not-a-number"}]},
                   faultPolicy={"crashBudget": 2, "backoffSeconds": 1})
    kube_nodes("apply", "-f", "-", stdin=json.dumps(job))
    status = wait_until(lambda: (s := job_status(kube_nodes, ns, "crashy")).get("phase") == "Failed" and s,
                        timeout=120, what="the job to fail after its crash budget")
    failed = next(c for c in status["conditions"] if c["type"] == "Failed")
    assert failed["reason"] == "CrashBudgetExceeded" and "crashBudget" in failed["message"]
    assert status["crashes"] > 2 and status.get("preemptions", 0) == 0
    # Events are sent after the status write they describe: wait for them rather than read them at once.
    events = wait_until(lambda: (items := json.loads(kube_nodes("get", "events", "-n", ns, "-o", "json").stdout)[
        "items"]) and {"WorkerCrashed", "Failed"} <= {e["reason"] for e in items} and items,
        timeout=30, what="the WorkerCrashed and Failed events")
    # The worker's own error (its log's last lines, FallbackToLogsOnError) is in the event: no kubectl logs needed.
    crashed = [e["message"] for e in events if e["reason"] == "WorkerCrashed"]
    assert any("PYTHONHASHSEED" in m for m in crashed), crashed
    assert "PYTHONHASHSEED" in failed["message"]
    wait_until(lambda: kube_nodes("get", PLURAL, "crashy", "-n", ns, check=False).returncode != 0, timeout=30,
               what="ttlSecondsAfterFinished to delete the job")
