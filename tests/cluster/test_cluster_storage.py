"""Persistent volumes on process nodes: static hostPath PVs and the default provisioner."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from localcluster.kubectl import Kubectl
from localcluster.waiting import wait_until
from tests.cluster.kobjects import apply, get, phase, pod, unique, wait_for

pytestmark = pytest.mark.cluster


def test_a_static_hostpath_pv_is_shared_read_write_many_across_nodes(kube_nodes: Kubectl, ns: str,
                                                                    tmp_path: Path) -> None:
    pv_name = unique("pv")
    pv = {"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": pv_name},
          "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteMany"], "storageClassName": "",
                   "persistentVolumeReclaimPolicy": "Retain", "hostPath": {"path": str(tmp_path / "pv")},
                   "claimRef": {"namespace": ns, "name": "shared"}}}
    pvc = {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "shared"},
           "spec": {"accessModes": ["ReadWriteMany"], "storageClassName": "", "volumeName": pv_name,
                    "resources": {"requests": {"storage": "1Gi"}}}}
    kube_nodes("apply", "-f", "-", stdin=json.dumps(pv))
    apply(kube_nodes, ns, pvc)
    wait_for(kube_nodes, "pvc", "shared", ns, lambda c: c.get("status", {}).get("phase") == "Bound")
    spread = {"topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "kubernetes.io/hostname",
                                             "whenUnsatisfiable": "DoNotSchedule",
                                             "labelSelector": {"matchLabels": {"app": "pvc-users"}}}]}
    vol = [{"name": "ckpt", "persistentVolumeClaim": {"claimName": "shared"}}]
    mount = {"volumeMounts": [{"name": "ckpt", "mountPath": "/ckpt"}]}
    for i in range(2):
        # Each writes its file and waits for the other's (so both run at once and spread out).
        script = f"echo {i} > /ckpt/from-$(hostname); while [ $(ls /ckpt | wc -l) -lt 2 ]; do sleep 0.05; done"
        apply(kube_nodes, ns, pod(f"w{i}", script, labels={"app": "pvc-users"}, volumes=vol, container=mount,
                                  **spread))
    done = [wait_for(kube_nodes, "pod", f"w{i}", ns, lambda p: phase(p) == "Succeeded") for i in range(2)]

    assert done[0]["spec"]["nodeName"] != done[1]["spec"]["nodeName"]
    assert sorted(p.name for p in (tmp_path / "pv").iterdir()) == ["from-w0", "from-w1"]
    kube_nodes("delete", "pv", pv_name, "--wait=false")


def test_a_claim_of_the_default_class_is_provisioned_and_cleaned_up(kube_nodes: Kubectl, ns: str) -> None:
    pvc = {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "ckpt"},
           "spec": {"accessModes": ["ReadWriteMany"], "resources": {"requests": {"storage": "1Gi"}}}}
    writer = pod("writer", "echo saved > /ckpt/step-10", volumes=[{"name": "c", "persistentVolumeClaim": {
        "claimName": "ckpt"}}], container={"volumeMounts": [{"name": "c", "mountPath": "/ckpt"}]})
    apply(kube_nodes, ns, pvc, writer)

    bound = wait_for(kube_nodes, "pvc", "ckpt", ns, lambda c: c.get("status", {}).get("phase") == "Bound")
    wait_for(kube_nodes, "pod", "writer", ns, lambda p: phase(p) == "Succeeded")

    assert bound["spec"]["storageClassName"] == "localcluster-hostpath"
    pv = get(kube_nodes, "pv", bound["spec"]["volumeName"])
    assert pv is not None
    directory = Path(pv["spec"]["hostPath"]["path"])
    assert (directory / "step-10").read_text() == "saved\n"
    kube_nodes("delete", "pod", "writer", "-n", ns)
    kube_nodes("delete", "pvc", "ckpt", "-n", ns)
    wait_until(lambda: get(kube_nodes, "pv", bound["spec"]["volumeName"]) is None and not directory.exists(),
               timeout=30, what="the released volume and its directory to be deleted")


