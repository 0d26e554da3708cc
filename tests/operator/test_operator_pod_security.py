"""The example job trains to the end in a namespace that enforces the `restricted` Pod Security profile, with the
operator's default pods: non-root, read-only root file system, checkpoints on a claim (hostPath is forbidden)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml

from localcluster.kubectl import Kubectl
from localcluster.provisioner import CLASS
from localcluster.waiting import WaitTimeout, wait_until
from tests.operator.conftest import job_status

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "moe-tiny.yaml"
STEPS = 20
"""The example's 80 steps cut to two of its checkpoint intervals: the rest of its settings are kept."""


@pytest.mark.slow
def test_the_example_job_succeeds_in_a_namespace_that_enforces_the_restricted_profile(
    kube_nodes: Kubectl, ns: str, operator: subprocess.Popen[bytes],
) -> None:
    kube_nodes("label", "namespace", ns, "pod-security.kubernetes.io/enforce=restricted")
    job = yaml.safe_load(EXAMPLE.read_text())
    name = job["metadata"]["name"]
    job["metadata"]["namespace"] = ns
    job["spec"]["checkpoint"] = {"storageClass": CLASS, "size": "1Gi"}
    job["spec"]["trainer"]["train"]["steps"] = STEPS
    kube_nodes("apply", "-f", "-", stdin=json.dumps(job))

    try:
        wait_until(lambda: job_status(kube_nodes, ns, name).get("phase") in ("Succeeded", "Failed"), timeout=420,
                   what="the job to finish")
    except WaitTimeout:
        pods = kube_nodes("get", "pods", "-n", ns, "-o", "wide").stdout
        raise AssertionError(f"the job did not finish: {json.dumps(job_status(kube_nodes, ns, name))[:1500]}\n"
                             f"{pods}") from None
    status = job_status(kube_nodes, ns, name)
    assert status["phase"] == "Succeeded", json.dumps(status)[:1500]
    assert status["progress"]["step"] == STEPS and status.get("crashes", 0) == 0
    # The checkpoints went to the claim the operator made (the provisioner's directory behind its volume).
    claim = json.loads(kube_nodes("get", "pvc", f"{name}-checkpoints", "-n", ns, "-o", "json").stdout)
    volume = json.loads(kube_nodes("get", "pv", claim["spec"]["volumeName"], "-o", "json").stdout)
    latest = Path(volume["spec"]["hostPath"]["path"]) / "latest.json"
    assert json.loads(latest.read_text())["step"] == STEPS
