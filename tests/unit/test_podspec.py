"""What `spec.pod` puts into the worker and store pods, and the restricted-profile defaults: checked as data.

The API server's own verdict on these pods (PodSecurity admission) is in tests/cluster/test_pod_security.py.
"""

from __future__ import annotations

from typing import Any

import pytest

from dstj_api.contract import LEGACY_READY_DIR, READY_DIR
from dstj_operator import children, podspec
from tests.unit.test_children import a_job

SCHEDULING = {"nodeSelector": {"pool": "train"}, "affinity": {"nodeAffinity": {"x": 1}},
              "tolerations": [{"key": "gpu", "operator": "Exists"}], "priorityClassName": "low",
              "schedulerName": "volcano", "runtimeClassName": "nvidia", "imagePullSecrets": [{"name": "regcred"}],
              "imagePullPolicy": "Always"}


def pods(**pod: Any) -> dict[str, dict[str, Any]]:
    """The worker pod and the rendezvous store pod of a job with `spec.pod` = `pod`."""
    job, spec = a_job(pod=pod, checkpoint={"storageClass": "shared"})
    return {"worker": children.worker_pod(job, spec, 0, "a"), "store": children.rendezvous_pod(job, spec, "b")}


@pytest.mark.parametrize("role", ["worker", "store"])
def test_the_scheduling_and_pull_fields_reach_the_worker_and_the_store_pod(role: str) -> None:
    pod = pods(**SCHEDULING)[role]["spec"]
    container = pod["containers"][0]
    assert {k: pod[k] for k in ("nodeSelector", "affinity", "priorityClassName", "schedulerName",
                                "runtimeClassName", "imagePullSecrets")} == {
        k: v for k, v in SCHEDULING.items() if k not in ("tolerations", "imagePullPolicy")}
    assert {"key": "gpu", "operator": "Exists"} in pod["tolerations"]
    assert container["imagePullPolicy"] == "Always"


def test_unset_fields_leave_the_pods_to_the_clusters_defaults() -> None:
    for pod in pods().values():
        assert not {"nodeSelector", "affinity", "priorityClassName", "schedulerName", "runtimeClassName",
                    "imagePullSecrets"} & pod["spec"].keys()
        assert "imagePullPolicy" not in pod["spec"]["containers"][0]


@pytest.mark.parametrize("role", ["worker", "store"])
def test_by_default_every_pod_runs_as_the_restricted_profile_asks(role: str) -> None:
    pod = pods()[role]["spec"]
    context, container = pod["securityContext"], pod["containers"][0]["securityContext"]
    assert context["runAsNonRoot"] is True and context["runAsUser"] == podspec.RUN_AS_ID != 0
    assert context["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container == {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]},
                         "readOnlyRootFilesystem": True}
    assert all("hostPath" not in v for v in pod["volumes"])


def test_a_users_security_context_replaces_only_the_keys_it_sets() -> None:
    pod = pods(securityContext={"runAsUser": 1000, "supplementalGroups": [5]},
               containerSecurityContext={"readOnlyRootFilesystem": False})["worker"]["spec"]
    assert pod["securityContext"] == {**podspec.POD_SECURITY_DEFAULTS, "runAsUser": 1000, "supplementalGroups": [5]}
    assert pod["containers"][0]["securityContext"] == {**podspec.CONTAINER_SECURITY_DEFAULTS,
                                                       "readOnlyRootFilesystem": False}


def test_the_worker_writes_only_to_emptydirs_of_its_own_beside_its_checkpoints() -> None:
    pod = pods()["worker"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: volumes[m["name"]] for m in pod["containers"][0]["volumeMounts"]}
    assert mounts["/tmp"]["emptyDir"] == {} and mounts[READY_DIR]["emptyDir"] == {}
    assert mounts["/dev/shm"]["emptyDir"] == {"medium": "Memory"}
    assert "persistentVolumeClaim" in mounts[children.CHECKPOINT_MOUNT]
    probe = pod["containers"][0]["readinessProbe"]["exec"]["command"]
    assert f"{READY_DIR}/dstj-ready-$HOSTNAME" in probe[-1]
    assert f"{LEGACY_READY_DIR}/dstj-ready-$HOSTNAME" in probe[-1]  # a trainer image older than the operator


def test_a_users_own_volume_at_tmp_takes_the_place_of_the_default_one() -> None:
    pod = pods(volumes=[{"name": "fast", "emptyDir": {"medium": "Memory"}}],
               volumeMounts=[{"name": "fast", "mountPath": "/tmp"}])["worker"]["spec"]
    paths = [m["mountPath"] for m in pod["containers"][0]["volumeMounts"]]
    assert paths.count("/tmp") == 1 and next(m for m in pod["containers"][0]["volumeMounts"]
                                             if m["mountPath"] == "/tmp")["name"] == "fast"
    assert "/dev/shm" in paths and READY_DIR in paths


def test_the_store_leaves_a_lost_node_as_soon_as_the_workers_do() -> None:
    job, spec = a_job(faultPolicy={"unreachableSeconds": 7})
    tolerations = children.rendezvous_pod(job, spec, "a")["spec"]["tolerations"]
    assert {t["key"]: t["tolerationSeconds"] for t in tolerations} == {
        "node.kubernetes.io/unreachable": 7, "node.kubernetes.io/not-ready": 7}


def test_a_host_path_checkpoint_directory_is_given_to_the_trainers_user_first() -> None:
    # The kubelet makes a missing hostPath directory root's (0755) and fsGroup skips hostPath volumes.
    job, spec = a_job(checkpoint={"hostPath": "/shared/ckpt"}, pod={"securityContext": {"runAsUser": 1000}})
    pod = children.worker_pod(job, spec, 0, "a")["spec"]
    [init] = pod["initContainers"]
    assert init["command"] == ["chown", f"1000:{podspec.RUN_AS_ID}", children.CHECKPOINT_MOUNT]
    assert init["image"] == spec.image and init["volumeMounts"] == [{"name": "checkpoints",
                                                                     "mountPath": children.CHECKPOINT_MOUNT}]
    assert init["securityContext"]["runAsUser"] == 0
    assert init["securityContext"]["capabilities"] == {"drop": ["ALL"], "add": ["CHOWN"]}
    for storage in ({"storageClass": "shared"}, {"pvc": "mine"}):
        job, spec = a_job(checkpoint=storage)
        assert "initContainers" not in children.worker_pod(job, spec, 0, "a")["spec"]
