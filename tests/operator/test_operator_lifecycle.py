"""The operator against the local cluster: real API server, scheduler, process nodes, trainer pods."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dstj_operator.crd import CRD_FILE, PLURAL
from localcluster.kubectl import Kubectl
from localcluster.waiting import wait_until
from tests.cluster.conftest import bin_dir, kube, kube_nodes, ns  # noqa: F401 - shared cluster fixtures

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def operator(kube_nodes: Kubectl, tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:  # noqa: F811
    kube_nodes("apply", "--server-side", "-f", str(ROOT / CRD_FILE))
    wait_until(lambda: kube_nodes("get", f"crd/{PLURAL}.training.deepseek.dev", "-o",
                                  "jsonpath={.status.conditions[?(@.type=='Established')].status}").stdout == "True",
               timeout=30, what="the CRD to be established")
    log = (tmp_path / "operator.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "dstj_operator"], stdout=log, stderr=subprocess.STDOUT,
                            env=os.environ | {"KUBECONFIG": str(kube_nodes.kubeconfig)})
    yield proc
    proc.terminate()
    proc.wait(30)


def job_status(kube: Kubectl, ns: str, name: str) -> dict[str, Any]:  # noqa: F811
    out = kube("get", PLURAL, name, "-n", ns, "-o", "json", check=False)
    return json.loads(out.stdout).get("status", {}) if out.returncode == 0 else {}


@pytest.mark.slow
def test_a_job_runs_to_success_and_keeps_its_checkpoints(
    kube_nodes: Kubectl, ns: str, operator: subprocess.Popen[bytes], tmp_path: Path,  # noqa: F811
) -> None:
    from pydoc_data.topics import topics

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n\n".join(topics[k] for k in sorted(topics)))
    ckpt = tmp_path / "checkpoints"
    job = {
        "apiVersion": "training.deepseek.dev/v1alpha1", "kind": "DeepSeekTrainingJob",
        "metadata": {"name": "tiny", "namespace": ns},
        "spec": {
            "replicas": 2, "minReplicas": 1, "maxReplicas": 3, "image": "moe-trainer:test",
            "checkpoint": {"hostPath": str(ckpt)},
            "trainer": {"model": {"preset": "tiny", "vocabSize": 256},
                        "train": {"steps": 12, "globalBatch": 8, "microBatch": 2, "seqLen": 32, "logEvery": 2},
                        "data": {"source": "path", "path": str(corpus), "tokenizer": "bytes", "minChars": 100},
                        "checkpoint": {"interval": 4}},
        },
    }
    kube_nodes("apply", "-f", "-", stdin=json.dumps(job))
    wait_until(lambda: job_status(kube_nodes, ns, "tiny").get("phase") == "Running", timeout=60,
               what="the job to be Running")
    wait_until(lambda: job_status(kube_nodes, ns, "tiny").get("phase") == "Succeeded", timeout=240,
               what="the job to succeed: " + json.dumps(job_status(kube_nodes, ns, "tiny"))[:1500])
    status = job_status(kube_nodes, ns, "tiny")
    assert status["progress"]["step"] == 12
    assert status.get("crashes", 0) == 0
    assert json.loads((ckpt / "latest.json").read_text())["step"] == 12
    printed = kube_nodes("get", PLURAL, "tiny", "-n", ns).stdout
    assert "Succeeded" in printed and "LAYOUT" in printed
    kube_nodes("delete", PLURAL, "tiny", "-n", ns)
    assert (ckpt / "latest.json").exists()  # checkpoints outlive the job
