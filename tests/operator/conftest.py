"""Operator fixtures: the CRD installed in the local cluster, operators as real processes, tiny jobs.

The operator runs here as a process with a kubeconfig (as `make demo` and a developer would run
it); the Helm chart's in-cluster Deployment is tested in the chart and e2e tests.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from dstj_api.contract import GROUP, JOB_LABEL, KIND, ROLE_LABEL, VERSION
from dstj_operator.crd import PLURAL
from localcluster.kubectl import Kubectl
from tests.conftest import install_crd

ROOT = Path(__file__).resolve().parents[2]
StartOperator = Callable[..., subprocess.Popen[bytes]]


def free_port() -> int:
    """A TCP port nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def crd(kube_nodes: Kubectl) -> Kubectl:
    """The cluster, with the DeepSeekTrainingJob CRD applied and established."""
    return install_crd(kube_nodes)


@pytest.fixture
def start_operator(crd: Kubectl, tmp_path: Path) -> Iterator[StartOperator]:
    """Start operator processes (`start_operator(**env)`); all are stopped at the end of the test."""
    procs: list[subprocess.Popen[bytes]] = []

    def start(name: str = "operator", **env: str) -> subprocess.Popen[bytes]:
        log = (tmp_path / f"{name}.log").open("ab")
        base = {"KUBECONFIG": str(crd.kubeconfig), "DSTJ_METRICS_PORT": "0", "DSTJ_HEALTH_PORT": "0",
                "POD_NAME": name}
        proc = subprocess.Popen([sys.executable, "-m", "dstj_operator"], stdout=log, stderr=subprocess.STDOUT,
                                env=os.environ | base | env)
        procs.append(proc)
        return proc

    yield start
    for p in procs:
        if p.poll() is None:
            p.terminate()
    for p in procs:
        try:
            p.wait(30)
        except subprocess.TimeoutExpired:
            p.kill()


@pytest.fixture
def operator(start_operator: StartOperator) -> subprocess.Popen[bytes]:
    """One operator, no leader election."""
    return start_operator()


def job_status(kube: Kubectl, ns: str, name: str) -> dict[str, Any]:
    """The job's status ({} while it has none or is gone)."""
    out = kube("get", PLURAL, name, "-n", ns, "-o", "json", check=False)
    return json.loads(out.stdout).get("status", {}) if out.returncode == 0 else {}


def training(kube: Kubectl, ns: str, name: str, *, world: int | None = None, after: int = -1,
             past_generation: int = -1) -> dict[str, Any] | None:
    """The progress report while the published generation trains (past step `after`, at world size `world`,
    in a generation later than `past_generation`, where asked), else None: a condition to wait for."""
    status = job_status(kube, ns, name)
    report = status.get("progress") or {}
    published = (status.get("membership") or {}).get("generation", -1)
    ok = (report.get("state") == "running" and report.get("generation") == published > past_generation
          and report.get("step", 0) > after and (world is None or report.get("worldSize") == world))
    return report if ok else None


def job_condition(status: dict[str, Any], type_: str) -> dict[str, Any]:
    """The job status's condition of that type ({} while it is not set)."""
    return next((c for c in status.get("conditions") or [] if c["type"] == type_), {})


def worker_pods(kube: Kubectl, ns: str, name: str, *, live_only: bool = True) -> list[dict[str, Any]]:
    """The job's worker pods (without ended or terminating ones unless asked)."""
    out = kube("get", "pods", "-n", ns, "-l", f"{JOB_LABEL}={name},{ROLE_LABEL}=worker",
               "-o", "json")
    pods: list[dict[str, Any]] = json.loads(out.stdout)["items"]
    if live_only:
        pods = [p for p in pods if not p["metadata"].get("deletionTimestamp")
                and p.get("status", {}).get("phase") not in ("Succeeded", "Failed")]
    return pods


DATA_MOUNT = "/data"
"""Where tiny jobs' workers read the corpus: a hostPath volume of the test's directory, as a cluster would give
it (the worker's own `/tmp` is an emptyDir, so a host file under `/tmp` is not in its view)."""


DATA_LOG_MOUNT = "/data-log"
"""Where workers write their data log (DSTJ_DATA_LOG) when a test asks for it."""


def tiny_job(ns: str, name: str, workdir: Path, *, steps: int = 12, replicas: int = 2, interval: int = 4,
             data_log: Path | None = None, **spec: Any) -> dict[str, Any]:
    """A tiny CPU job over the Python docs corpus (from `workdir`, mounted read-only), checkpointing under it; with
    `data_log`, each rank records there the steps and samples it trained (`trained_steps` reads them)."""
    from pydoc_data.topics import topics

    corpus = workdir / "data" / "corpus.txt"
    corpus.parent.mkdir(exist_ok=True)
    corpus.write_text("\n\n".join(topics[k] for k in sorted(topics)))
    pod = dict(spec.pop("pod", {}))
    pod["volumes"] = [*pod.get("volumes", []), {"name": "data", "hostPath": {"path": str(corpus.parent)}}]
    pod["volumeMounts"] = [*pod.get("volumeMounts", []), {"name": "data", "mountPath": DATA_MOUNT, "readOnly": True}]
    if data_log is not None:
        data_log.mkdir(exist_ok=True)
        pod["env"] = [*pod.get("env", []), {"name": "DSTJ_DATA_LOG", "value": DATA_LOG_MOUNT}]
        pod["volumes"].append({"name": "data-log", "hostPath": {"path": str(data_log)}})
        pod["volumeMounts"].append({"name": "data-log", "mountPath": DATA_LOG_MOUNT})
    return {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": KIND,
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "replicas": replicas, "minReplicas": 1, "maxReplicas": 4, "image": "moe-trainer:test",
            "checkpoint": {"hostPath": str(workdir / "checkpoints")},
            "trainer": {"model": {"preset": "tiny", "vocabSize": 256},
                        "train": {"steps": steps, "globalBatch": 8, "microBatch": 2, "seqLen": 32, "logEvery": 1},
                        "data": {"source": "path", "path": f"{DATA_MOUNT}/{corpus.name}", "tokenizer": "bytes",
                                 "minChars": 100},
                        "checkpoint": {"interval": interval}},
            "pod": pod,
            **spec,
        },
    }


def trained_steps(log_dir: Path) -> dict[int, list[int]]:
    """generation -> the steps its ranks trained, from the trainer's data log (DSTJ_DATA_LOG)."""
    out: dict[int, list[int]] = {}
    for path in log_dir.glob("data-g*-r*.jsonl"):
        generation = int(path.name.split("-")[1][1:])
        for line in path.read_text().splitlines():
            with contextlib.suppress(ValueError):  # the last line may be half written while the rank trains on
                out.setdefault(generation, []).append(json.loads(line)["step"])
    return out
