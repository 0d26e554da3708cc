"""Workers read the membership from their job's status and write progress to its ConfigMap (real API)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from dstj_api import ProgressReport
from dstj_api.contract import GROUP, KIND, PROGRESS_KEY, VERSION
from dstj_operator.crd import CRD_FILE, PLURAL
from localcluster.kubectl import Kubectl
from localcluster.waiting import wait_until
from moe_trainer.runtime.k8s_membership import ConfigMapProgressSink, JobStatusMembershipSource

ROOT = Path(__file__).resolve().parents[2]
NS = "membership-source"


def test_a_worker_sees_each_published_generation_and_its_progress_reaches_the_job(
    kube: Kubectl, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBECONFIG", str(kube.kubeconfig))
    kube("apply", "--server-side", "-f", str(ROOT / CRD_FILE))
    wait_until(lambda: kube("get", f"crd/{PLURAL}.{GROUP}", "-o",
                            "jsonpath={.status.conditions[?(@.type=='Established')].status}").stdout == "True",
               timeout=30, what="the CRD to be established")
    kube("create", "namespace", NS, check=False)
    try:
        kube("apply", "-n", NS, "-f", "-", stdin=json.dumps({
            "apiVersion": f"{GROUP}/{VERSION}", "kind": KIND,
            "metadata": {"name": "job"}, "spec": {}}))
        kube("create", "configmap", "job-progress", "-n", NS, check=False)

        source = JobStatusMembershipSource(f"k8s:{NS}/job")
        assert source.current() is None
        for generation in (1, 2):
            status = {"status": {"membership": {"generation": generation, "worldSize": 2, "members": ["a", "b"]}}}
            kube("patch", PLURAL, "job", "-n", NS, "--subresource=status", "--type=merge", "-p", json.dumps(status))
            wait_until(lambda g=generation: (m := source.current()) is not None and m.generation == g,  # type: ignore[misc]
                       timeout=10, what=f"generation {generation} to reach the worker")

        report = ProgressReport(step=5, total_steps=10, generation=2, world_size=2, expert_parallel=2,
                                data_parallel=1, loss=3.5, updated=datetime.now(UTC))
        ConfigMapProgressSink(f"k8s:{NS}/job-progress").publish(report)
        data = json.loads(kube("get", "configmap", "job-progress", "-n", NS, "-o", "json").stdout)["data"]
        assert ProgressReport.model_validate_json(data[PROGRESS_KEY]).step == 5
    finally:
        # The job would outlive the test: an operator a later test starts cluster-wide would run its workers for
        # the rest of the session.
        kube("delete", "namespace", NS, "--wait=false", check=False)
