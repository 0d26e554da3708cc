"""What the job says about itself on the real API server: a refusal by the API server becomes a condition
that quotes it, and the deadline counts running time only (a suspended job's clock stands still)."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from dstj_operator.crd import PLURAL
from localcluster.kubectl import Kubectl
from localcluster.waiting import wait_until
from tests.operator.conftest import job_condition, job_status, tiny_job


@pytest.mark.slow
def test_a_job_whose_pods_pod_security_refuses_shows_the_refusal_as_a_condition(
    kube_nodes: Kubectl, ns: str, operator: subprocess.Popen[bytes], tmp_path: Path,
) -> None:
    kube_nodes("label", "namespace", ns, "pod-security.kubernetes.io/enforce=restricted")
    kube_nodes("apply", "-f", "-", stdin=json.dumps(tiny_job(ns, "refused", tmp_path)))
    synced = wait_until(lambda: (c := job_condition(job_status(kube_nodes, ns, "refused"), "Synced"))
                        .get("status") == "False" and c, timeout=60, what="the Synced condition to be False")
    assert synced["reason"] == "Forbidden"
    assert "violates PodSecurity" in synced["message"], synced["message"]
    status = job_status(kube_nodes, ns, "refused")
    assert status["phase"] == "Pending"
    events = kube_nodes("get", "events", "-n", ns, "-o", "json").stdout
    assert any(e["reason"] == "SyncFailed" and "PodSecurity" in e["message"] for e in json.loads(events)["items"])


@pytest.mark.slow
def test_a_suspended_jobs_deadline_does_not_run_and_a_running_one_fails_on_it(
    kube_nodes: Kubectl, ns: str, operator: subprocess.Popen[bytes], tmp_path: Path,
) -> None:
    deadline = 8
    job = tiny_job(ns, "clock", tmp_path, steps=100000, suspend=True, activeDeadlineSeconds=deadline)
    kube_nodes("apply", "-f", "-", stdin=json.dumps(job))
    wait_until(lambda: job_status(kube_nodes, ns, "clock").get("phase") == "Suspended", timeout=60,
               what="the job to be Suspended")
    # Let more than the deadline pass in wall time, then make the operator look again (a spec edit it must
    # observe): the job must still be Suspended, with no running time on its clock.
    created = time.monotonic()
    wait_until(lambda: time.monotonic() - created > deadline + 2, timeout=deadline + 10,
               what="the deadline's length of wall time to pass")
    edit = '{"spec":{"faultPolicy":{"stallSeconds":601},"trainer":{"train":{"logEvery":2}}}}'
    kube_nodes("patch", PLURAL, "clock", "-n", ns, "--type=merge", "-p", edit)
    generation = int(kube_nodes("get", PLURAL, "clock", "-n", ns, "-o", "jsonpath={.metadata.generation}").stdout)
    status = wait_until(lambda: (s := job_status(kube_nodes, ns, "clock")).get("observedGeneration") == generation
                        and s, timeout=30, what="the operator to observe the edit")
    assert status["phase"] == "Suspended", status
    assert job_condition(status, "Progressing")["status"] == "False"  # nothing trains: the edit is live at once
    assert status["bookkeeping"].get("runningSeconds", 0) == 0 and "runningSince" not in status["bookkeeping"]

    kube_nodes("patch", PLURAL, "clock", "-n", ns, "--type=merge", "-p", '{"spec":{"suspend":false}}')
    wait_until(lambda: job_status(kube_nodes, ns, "clock").get("phase") == "Running", timeout=120,
               what="the resumed job to run")
    failed = wait_until(lambda: (s := job_status(kube_nodes, ns, "clock")).get("phase") == "Failed" and s,
                        timeout=deadline + 60, what="the deadline to fail the running job")
    condition = job_condition(failed, "Failed")
    assert condition["reason"] == "DeadlineExceeded" and "activeDeadlineSeconds" in condition["message"]
    assert failed["bookkeeping"]["runningSeconds"] >= deadline
