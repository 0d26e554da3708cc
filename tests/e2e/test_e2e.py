"""End to end, as a user meets the product: `helm install` the chart, apply the example job, lose a
node mid-run, watch the job shrink, resume from its checkpoint and grow back, reach Succeeded; then
`helm uninstall` and the job's deletion leave nothing behind but the CRD and the checkpoints.

Runs against any cluster (DSTJ_E2E_KUBECONFIG; `make e2e-kind` sets it) or the local cluster, once
with process nodes and once with real nodes (kubelet, containerd, runc) running the images built
here (`make test-images`). The node is lost the portable way, `kubectl drain` (what spot termination
handlers do): its workers are evicted and the node cordoned; then it is uncordoned, as if new
capacity arrived.
"""

from __future__ import annotations

import copy
import json
import os
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml

from dstj_api.contract import GROUP, JOB_LABEL, PLURAL, ROLE_LABEL, SHORT_NAME
from localcluster.kubectl import Kubectl
from localcluster.waiting import wait_until
from scripts.timeline import JobWatcher
from tests.e2e.conftest import E2ECluster
from tests.helmchart import CHART, Helm

ROOT = Path(__file__).resolve().parents[2]
JOB = "moe-tiny"
WORKERS = f"{JOB_LABEL}=moe-tiny,{ROLE_LABEL}=worker"

pytestmark = [pytest.mark.slow, pytest.mark.cluster]


def _leftovers(kube: Kubectl, ns: str, selector: str | None = None) -> list[str]:
    kinds = ("pods,services,configmaps,serviceaccounts,roles,rolebindings,poddisruptionbudgets,networkpolicies,"
             "persistentvolumeclaims,leases,deployments,replicasets")
    args = ["get", kinds, "-n", ns, "-o", "name", *(["-l", selector] if selector else [])]
    names = kube(*args).stdout.split()
    return [n for n in names if n not in ("configmap/kube-root-ca.crt", "serviceaccount/default")]


def _an_oom_kill_is_a_crash(kube: Kubectl, ns: str, job: dict[str, Any]) -> None:
    """A worker whose memory limit cannot hold torch is OOM-killed by the kernel: the job counts a crash."""
    oom = copy.deepcopy(job)
    oom["metadata"] = {"name": "moe-oom", "namespace": ns}
    oom["spec"].update(replicas=1, minReplicas=1, faultPolicy={"crashBudget": 1})
    oom["spec"]["checkpoint"]["hostPath"] += "-oom"
    oom["spec"]["pod"] = {"resources": {"limits": {"memory": "96Mi"}, "requests": {"memory": "96Mi"}}}
    kube("apply", "-f", "-", stdin=json.dumps(oom))

    def counted() -> bool:
        status = json.loads(kube("get", SHORT_NAME, "moe-oom", "-n", ns, "-o", "json").stdout).get("status") or {}
        return status.get("crashes", 0) >= 1 and "OOMKilled" in json.dumps(status)

    wait_until(counted, timeout=300, interval=2, what="moe-oom's OOM kill counted as a crash")
    kube("delete", SHORT_NAME, "moe-oom", "-n", ns, "--wait=true", timeout=120)


def test_install_train_lose_a_node_succeed_and_uninstall_cleanly(e2e_cluster: E2ECluster, helm: Helm,
                                                                 tmp_path: Path) -> None:
    kube, suffix = e2e_cluster.kube, os.urandom(2).hex()
    ns, op_ns, release = f"e2e-{suffix}", f"e2e-op-{suffix}", f"dstj-e2e-{suffix}"
    shared_in_pods = os.environ.get("DSTJ_E2E_SHARED_DIR") or str(tmp_path)
    shared_here = Path(os.environ.get("DSTJ_E2E_SHARED_HOST_DIR") or tmp_path)
    values: dict[str, object] = {"watchNamespaces": [ns]}
    if os.environ.get("DSTJ_E2E_OPERATOR_IMAGE"):
        repo, _, tag = os.environ["DSTJ_E2E_OPERATOR_IMAGE"].rpartition(":")
        values["image"] = {"repository": repo, "tag": tag}
    kube("create", "namespace", ns)

    # The chart's own image (deepseek-operator:<appVersion>) and pull policy, unless told otherwise.
    helm("install", release, str(CHART), "--kubeconfig", str(kube.kubeconfig), "--namespace", op_ns,
         "--create-namespace", "-f", str(helm.values_file(values)),
         "--wait", "--timeout", "5m", timeout=330)

    job = yaml.safe_load((ROOT / "examples" / "moe-tiny.yaml").read_text())
    job["metadata"]["namespace"] = ns
    job["spec"]["checkpoint"]["hostPath"] = f"{shared_in_pods}/{JOB}-{suffix}"
    job["spec"]["image"] = os.environ.get("DSTJ_E2E_TRAINER_IMAGE", job["spec"]["image"])
    if e2e_cluster.kind == "real":
        # A replacement container on a real node imports torch from the image before it can join
        # (tens of seconds on a loaded machine): twice the steps leave it time to grow the job back.
        job["spec"]["trainer"]["train"]["steps"] *= 2
    steps, interval = job["spec"]["trainer"]["train"]["steps"], job["spec"]["trainer"]["checkpoint"]["interval"]
    watcher = JobWatcher(kube, ns, JOB).start()
    kube("apply", "-f", "-", stdin=json.dumps(job))
    wait_until(lambda: (s := watcher.last()) is not None and (s.checkpoint or 0) >= interval and s.world == 3,
               timeout=600, interval=1, what="training at W=3 with a checkpoint committed")

    pods = json.loads(kube("get", "pods", "-n", ns, "-l", WORKERS, "-o", "json").stdout)["items"]
    # The operator's probes and both metrics ports answer (through the API server's pod proxy, as a
    # Prometheus in the cluster or `kubectl port-forward` reaches them).
    op_pod = kube("get", "pods", "-n", op_ns, "-l", f"app.kubernetes.io/instance={release}", "-o",
                  "jsonpath={.items[0].metadata.name}").stdout.strip()
    for path in ("8081/proxy/healthz", "8081/proxy/readyz"):
        kube("get", "--raw", f"/api/v1/namespaces/{op_ns}/pods/{op_pod}:{path}")
    op_metrics = kube("get", "--raw", f"/api/v1/namespaces/{op_ns}/pods/{op_pod}:8080/proxy/metrics").stdout
    assert "dstj_operator_" in op_metrics
    worker = pods[0]["metadata"]["name"]
    assert "dstj_trainer_" in kube("get", "--raw", f"/api/v1/namespaces/{ns}/pods/{worker}:9400/proxy/metrics").stdout
    per_node = Counter(p["spec"]["nodeName"] for p in pods)
    # The node with the fewest workers (one of three on the local clusters): the job shrinks to the rest.
    node, lost = min(per_node.items(), key=lambda kv: kv[1])
    before = watcher.last()
    assert before is not None and before.checkpoint is not None
    watcher.mark(f"drain {node}")
    kube("drain", node, "--pod-selector", WORKERS, "--delete-emptydir-data", "--ignore-daemonsets",
         "--timeout=180s", timeout=200)
    kube("uncordon", node)
    watcher.mark(f"uncordon {node}")
    wait_until(lambda: (s := watcher.last()) is not None and s.phase in ("Succeeded", "Failed"), timeout=900,
               interval=1, what="the job to finish")
    watcher.stop()
    print(watcher.timeline())

    last = watcher.last()
    assert last is not None and last.phase == "Succeeded" and last.step == steps, watcher.timeline()
    assert last.preemptions >= 1 and last.crashes == 0
    after = [s for s in watcher.samples if s.t > before.t]
    # The smaller generation may live for less than a poll (the replacement is Ready within a second):
    # its GenerationBumped event is the record.
    bumps = [text for t, text in watcher.lines if t > before.t and text.startswith("event GenerationBumped")]
    assert any(f": {3 - lost} workers" in b for b in bumps), "the job never shrank:\n" + watcher.timeline()
    assert any(": 3 workers" in b for b in bumps), "the job never grew back:\n" + watcher.timeline()
    # Resumed, not restarted: every step trained after the drain continues from a checkpoint.
    assert min(s.step for s in after if s.step is not None) >= before.checkpoint
    assert any(s.world == 3 and (s.trained_generation or 0) > (before.trained_generation or 0) for s in after)
    latest = shared_here / f"{JOB}-{suffix}" / "latest.json"
    if shared_here.exists():
        assert json.loads(latest.read_text())["step"] == steps

    if e2e_cluster.kind != "process":  # process nodes enforce no memory limit
        _an_oom_kill_is_a_crash(kube, ns, job)

    kube("delete", SHORT_NAME, JOB, "-n", ns, "--wait=true", timeout=120)
    children = f"{JOB_LABEL}={JOB}"
    wait_until(lambda: not _leftovers(kube, ns, children), timeout=120, what="the job's children to go")
    helm("uninstall", release, "--kubeconfig", str(kube.kubeconfig), "--namespace", op_ns, "--wait", timeout=150)
    # The chart's Role and RoleBinding in the watched namespace go with the release.
    wait_until(lambda: not _leftovers(kube, ns) and not _leftovers(kube, op_ns), timeout=120,
               what="the job's and the operator's namespaces to be empty")
    cluster_rbac = kube("get", "clusterroles,clusterrolebindings", "-o", "name").stdout.split()
    assert not [n for n in cluster_rbac if release in n]
    assert kube("get", "crd", f"{PLURAL}.{GROUP}", check=False).returncode == 0
    if shared_here.exists():
        assert latest.exists(), "checkpoints are the user's: kept after the job and the operator are gone"
    kube("delete", "namespace", ns, op_ns, "--wait=false")
