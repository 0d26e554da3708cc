"""Child objects are pure functions of the job: checked here as data, no cluster needed."""

from __future__ import annotations

import json
from typing import Any

from dstj_api.contract import ENV_LENIENT_CONFIG, GROUP, KIND, VERSION
from dstj_operator import children
from dstj_operator.spec import DeepSeekTrainingJobSpec


def a_job(**spec: Any) -> tuple[dict[str, Any], DeepSeekTrainingJobSpec]:
    job = {"apiVersion": f"{GROUP}/{VERSION}", "kind": KIND,
           "metadata": {"name": "moe", "namespace": "team", "uid": "uid-1"}, "spec": spec}
    return job, DeepSeekTrainingJobSpec.model_validate(spec)


def test_every_child_is_owned_by_the_job_so_deleting_it_deletes_them() -> None:
    job, spec = a_job(checkpoint={"storageClass": "shared", "deleteWithJob": True})
    objs = [children.trainer_config_map(job, spec), children.rendezvous_service(job, spec),
            children.workers_service(job), children.rendezvous_pod(job, spec, "a1"),
            children.worker_pod(job, spec, 0, "b2"), *children.worker_rbac(job), children.progress_config_map(job),
            children.disruption_budget(job, spec), children.rendezvous_network_policy(job, spec),
            children.checkpoint_pvc(job, spec)]
    for obj in objs:
        assert obj is not None
        assert obj["metadata"]["ownerReferences"][0]["uid"] == "uid-1", obj["kind"]
        assert obj["metadata"]["labels"][children.JOB_LABEL] == "moe"


def test_the_checkpoint_volume_outlives_the_job_unless_asked() -> None:
    job, spec = a_job(checkpoint={"storageClass": "shared"})
    pvc = children.checkpoint_pvc(job, spec)
    assert pvc is not None and "ownerReferences" not in pvc["metadata"]
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]


def test_worker_pods_are_named_per_incarnation_and_labelled_with_their_index() -> None:
    job, spec = a_job()
    first, second = children.worker_pod(job, spec, 1, "x1"), children.worker_pod(job, spec, 1, "y2")
    assert first["metadata"]["name"] == "moe-worker-1-x1" != second["metadata"]["name"]
    assert first["metadata"]["labels"][children.INDEX_LABEL] == "1"
    assert first["spec"]["restartPolicy"] == "Never"


def test_workers_leave_a_lost_node_after_the_fault_policy_not_after_five_minutes() -> None:
    job, spec = a_job(faultPolicy={"unreachableSeconds": 7})
    tolerations = children.worker_pod(job, spec, 0, "a")["spec"]["tolerations"]
    assert {t["key"]: t["tolerationSeconds"] for t in tolerations} == {
        "node.kubernetes.io/unreachable": 7, "node.kubernetes.io/not-ready": 7}


def test_the_trainer_config_points_at_the_checkpoint_mount() -> None:
    job, spec = a_job(checkpoint={"pvc": "ckpt"})
    config = json.loads(children.trainer_config_map(job, spec)["data"]["trainer.json"])
    assert config["checkpoint"]["dir"] == children.CHECKPOINT_MOUNT
    pod = children.worker_pod(job, spec, 0, "a")
    claim = next(v for v in pod["spec"]["volumes"] if v["name"] == "checkpoints")
    assert claim["persistentVolumeClaim"]["claimName"] == "ckpt"


def test_a_url_is_the_trainers_checkpoint_location_and_resume_from_is_resolved_against_it() -> None:
    job, spec = a_job(checkpoint={"url": "s3://bucket/runs/moe/", "resumeFrom": "step-00000040-g2"})
    config = json.loads(children.trainer_config_map(job, spec)["data"]["trainer.json"])
    assert config["checkpoint"]["dir"] == "s3://bucket/runs/moe/"
    assert config["checkpoint"]["resumeFrom"] == "s3://bucket/runs/moe/step-00000040-g2"
    assert all(v["name"] != "checkpoints" for v in children.worker_pod(job, spec, 0, "a")["spec"].get("volumes", []))
    for absolute in ("/data/pretrained", "gs://other/run"):
        job, spec = a_job(checkpoint={"pvc": "ckpt", "resumeFrom": absolute})
        config = json.loads(children.trainer_config_map(job, spec)["data"]["trainer.json"])
        assert config["checkpoint"]["resumeFrom"] == absolute


def test_workers_may_read_only_their_job_and_config_and_write_only_their_progress() -> None:
    job, _ = a_job()
    role = children.worker_rbac(job)[1]
    assert [r["resourceNames"] for r in role["rules"]] == [["moe"], ["moe-progress"], ["moe-config"]]
    assert role["rules"][2]["verbs"] == ["get"]
    assert all("delete" not in r["verbs"] and "create" not in r["verbs"] for r in role["rules"])


def test_gpu_workers_ask_for_their_devices_and_run_a_process_each() -> None:
    job, spec = a_job(devicesPerWorker=4, pod={"resources": {"requests": {"cpu": "8"}}})
    container = children.worker_pod(job, spec, 0, "a")["spec"]["containers"][0]
    assert container["resources"] == {"requests": {"cpu": "8"}, "limits": {"nvidia.com/gpu": 4}}
    assert "--nproc-per-node=4" in container["command"]


def test_pod_overrides_reach_the_worker_pod() -> None:
    job, spec = a_job(pod={"nodeSelector": {"pool": "spot"}, "priorityClassName": "low",
                           "labels": {"kueue.x-k8s.io/queue-name": "q"}})
    pod = children.worker_pod(job, spec, 0, "a")
    assert pod["spec"]["nodeSelector"] == {"pool": "spot"} and pod["spec"]["priorityClassName"] == "low"
    assert pod["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "q"


def test_workers_are_told_the_config_is_the_operators_so_they_read_it_leniently() -> None:
    job, spec = a_job()
    container = children.worker_pod(job, spec, 0, "a")["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env[ENV_LENIENT_CONFIG] == "1"  # a newer operator's extra config field must not crash-loop the worker


def test_a_workers_termination_message_or_its_logs_tail_reaches_the_pod_status() -> None:
    job, spec = a_job()
    container = children.worker_pod(job, spec, 0, "a")["spec"]["containers"][0]
    assert container["terminationMessagePolicy"] == "FallbackToLogsOnError"


def test_the_rendezvous_port_is_read_back_from_a_store_pod() -> None:
    from dstj_operator.children import rendezvous_pod, rendezvous_port
    from dstj_operator.spec import DeepSeekTrainingJobSpec

    job = {"metadata": {"name": "j", "namespace": "ns", "uid": "u"}}
    spec = DeepSeekTrainingJobSpec.model_validate({"rendezvous": {"port": 29500}})
    assert rendezvous_port(rendezvous_pod(job, spec, "abc123")) == 29500
    assert rendezvous_port({"spec": {"containers": [{}]}}) is None


def test_surplus_workers_carry_the_surplus_priority_class_without_changing_the_pod_template() -> None:
    auto = {"enabled": True, "surplusPriorityClassName": "spare"}
    job, spec = a_job(replicas=4, minReplicas=2, pod={"priorityClassName": "normal"}, autoscaling=auto)
    classes = [children.worker_pod(job, spec, i, "a")["spec"]["priorityClassName"] for i in range(4)]
    assert classes == ["normal", "normal", "spare", "spare"]
    _, without = a_job(replicas=4, minReplicas=2, pod={"priorityClassName": "normal"}, autoscaling={"enabled": True})
    assert children.pod_template_hash(spec) == children.pod_template_hash(without)


def test_the_surplus_priority_class_waits_for_autoscaling_to_be_on() -> None:
    job, spec = a_job(replicas=2, autoscaling={"surplusPriorityClassName": "spare"})
    assert "priorityClassName" not in children.worker_pod(job, spec, 1, "a")["spec"]
