"""Child objects of a DeepSeekTrainingJob, as pure functions of the job (no API calls here).

Every child carries an ownerReference to the job (the garbage collector deletes them with it),
except an operator-created checkpoint PVC, which outlives the job unless the spec asks otherwise.
Worker pods are named `<job>-worker-<index>-<suffix>`, unique per incarnation, so a replacement
never waits for a pod stuck Terminating on a lost node.
"""

from __future__ import annotations

import json
from typing import Any

from dstj_api import config_digest
from dstj_api.contract import (
    CONFIG_KEY,
    ENV_CONFIG,
    ENV_LENIENT_CONFIG,
    ENV_MEMBER_ID,
    ENV_MEMBERSHIP,
    ENV_PROGRESS,
    ENV_RDZV_ENDPOINT,
    ENV_READY_PROBE,
    ENV_RUN_ID,
    GROUP,
    INDEX_LABEL,
    JOB_LABEL,
    KIND,
    LEGACY_READY_DIR,
    PLURAL,
    PROGRESS_KEY,
    READY_DIR,
    ROLE_LABEL,
    TEMPLATE_ANNOTATION,
    VERSION,
)
from dstj_operator.naming import CHILD_TAILS, rendezvous_pod_name, worker_name
from dstj_operator.podspec import ALL_SCRATCH, container_fields, host_path_owner, pod_fields, scratch
from dstj_operator.spec import DeepSeekTrainingJobSpec

# JOB_LABEL, INDEX_LABEL and ROLE_LABEL stay importable from here (older code does); dstj_api.contract defines them.
CHECKPOINT_MOUNT = "/checkpoints"
CONFIG_MOUNT = "/etc/dstj"
METRICS_PORT = 9400


def owner_reference(job: dict[str, Any]) -> dict[str, Any]:
    """The ownerReference that makes the garbage collector delete a child with its job."""
    meta = job["metadata"]
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": KIND, "name": meta["name"], "uid": meta["uid"],
            "controller": True, "blockOwnerDeletion": True}


def _meta(job: dict[str, Any], name: str, role: str, owned: bool = True,
          labels: dict[str, str] | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": job["metadata"]["namespace"],
                            "labels": {**(labels or {}), JOB_LABEL: job["metadata"]["name"], ROLE_LABEL: role}}
    if owned:
        meta["ownerReferences"] = [owner_reference(job)]
    return meta


def names(job: dict[str, Any]) -> dict[str, str]:
    """The fixed names of a job's children."""
    base = job["metadata"]["name"]
    return {role: f"{base}{tail}" for role, tail in CHILD_TAILS.items()}


def trainer_config_map(job: dict[str, Any], spec: DeepSeekTrainingJobSpec) -> dict[str, Any]:
    """The trainer config the workers read, with the checkpoint directory pointed at the mount."""
    trainer = spec.trainer.model_copy(deep=True)
    trainer.checkpoint.dir = spec.checkpoint.url or CHECKPOINT_MOUNT
    start = spec.checkpoint.resume_from
    if start:  # relative: a checkpoint under this job's own storage (e.g. one of its kept ones)
        absolute = "://" in start or start.startswith("/")
        trainer.checkpoint.resume_from = start if absolute else f"{trainer.checkpoint.dir.rstrip('/')}/{start}"
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": _meta(job, names(job)["config"], "config"),
            "data": {CONFIG_KEY: trainer.model_dump_json(by_alias=True, indent=2)}}


def trainer_config_hash(config_map: dict[str, Any]) -> str:
    """The digest a generation names the trainer config in `config_map` by (see `Membership.configHash`)."""
    return config_digest(config_map["data"][CONFIG_KEY])


def rendezvous_service(job: dict[str, Any], spec: DeepSeekTrainingJobSpec) -> dict[str, Any]:
    """Headless Service in front of the rendezvous store pod."""
    n = names(job)
    return {"apiVersion": "v1", "kind": "Service", "metadata": _meta(job, n["rdzv"], "rendezvous"),
            "spec": {"clusterIP": "None", "publishNotReadyAddresses": True,
                     "selector": {JOB_LABEL: job["metadata"]["name"], ROLE_LABEL: "rendezvous"},
                     "ports": [{"name": "c10d", "port": spec.rendezvous.port}]}}


def workers_service(job: dict[str, Any]) -> dict[str, Any]:
    """Headless Service whose records let workers resolve each other's hostnames (torchrun, gloo)."""
    return {"apiVersion": "v1", "kind": "Service", "metadata": _meta(job, names(job)["workers"], "workers"),
            "spec": {"clusterIP": "None", "publishNotReadyAddresses": True,
                     "selector": {JOB_LABEL: job["metadata"]["name"], ROLE_LABEL: "worker"},
                     "ports": [{"name": "metrics", "port": METRICS_PORT}]}}


def _tolerations(spec: DeepSeekTrainingJobSpec) -> list[dict[str, Any]]:
    """The user's tolerations, and leave a lost node after `unreachableSeconds`, not the default 300 s: a worker
    or a store pod there is replaced only once it is evicted."""
    unreachable = spec.fault_policy.unreachable_seconds
    return [{"key": f"node.kubernetes.io/{taint}", "operator": "Exists", "effect": "NoExecute",
             "tolerationSeconds": unreachable} for taint in ("unreachable", "not-ready")] + (spec.pod.tolerations or [])


def rendezvous_pod(job: dict[str, Any], spec: DeepSeekTrainingJobSpec, suffix: str) -> dict[str, Any]:
    """The small pod that runs the c10d store, so losing a worker never loses the store."""
    meta = _meta(job, rendezvous_pod_name(job["metadata"]["name"], suffix), "rendezvous")
    volumes, mounts = scratch(["tmp"])
    # Where and how the job's pods run (node selector, tolerations, security, pulls) holds for the store too.
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": {
        "restartPolicy": "Always", "automountServiceAccountToken": False, **pod_fields(spec.pod),
        "tolerations": _tolerations(spec), "volumes": volumes,
        "containers": [{"name": "store", "image": spec.image,
                        "command": ["python", "-m", "moe_trainer.rdzv_store", "--port", str(spec.rendezvous.port)],
                        "ports": [{"containerPort": spec.rendezvous.port}], "volumeMounts": mounts,
                        "resources": {"requests": {"cpu": "50m", "memory": "128Mi"}},
                        **container_fields(spec.pod)}]}}


def rendezvous_port(pod: dict[str, Any]) -> int | None:
    """The port a rendezvous store pod listens on (None when it names none)."""
    ports = (pod.get("spec") or {}).get("containers", [{}])[0].get("ports") or [{}]
    port = ports[0].get("containerPort")
    return int(port) if port is not None else None


def worker_pod(job: dict[str, Any], spec: DeepSeekTrainingJobSpec, index: int, suffix: str) -> dict[str, Any]:
    """Worker `index`: the supervisor that trains every membership generation it is a member of, in place."""
    n, job_name = names(job), job["metadata"]["name"]
    o = spec.pod
    name = worker_name(job_name, index, suffix)
    meta = _meta(job, name, "worker", labels={**(o.labels or {}), INDEX_LABEL: str(index)})
    meta["annotations"] = {**(o.annotations or {}), TEMPLATE_ANNOTATION: pod_template_hash(spec)}
    env = [
        {"name": ENV_MEMBER_ID, "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": ENV_MEMBERSHIP, "value": f"k8s:{job['metadata']['namespace']}/{job_name}"},
        {"name": ENV_PROGRESS, "value": f"k8s:{job['metadata']['namespace']}/{n['progress']}"},
        {"name": ENV_RDZV_ENDPOINT, "value": f"{n['rdzv']}:{spec.rendezvous.port}"},
        {"name": ENV_RUN_ID, "value": job["metadata"]["uid"]},
        {"name": ENV_READY_PROBE, "value": "1"},
        {"name": ENV_CONFIG, "value": f"k8s:{job['metadata']['namespace']}/{n['config']}"},
        {"name": ENV_LENIENT_CONFIG, "value": "1"},  # the config is ours: a newer operator's field must not crash-loop
        *(o.env or []),
    ]
    mounts = [{"name": "config", "mountPath": CONFIG_MOUNT, "readOnly": True}, *(o.volume_mounts or [])]
    volumes: list[dict[str, Any]] = [{"name": "config", "configMap": {"name": n["config"]}}, *(o.volumes or [])]
    storage = spec.checkpoint
    if storage.pvc or storage.storage_class or storage.host_path:
        mounts.append({"name": "checkpoints", "mountPath": CHECKPOINT_MOUNT})
        source = ({"hostPath": {"path": storage.host_path, "type": "DirectoryOrCreate"}} if storage.host_path
                  else {"persistentVolumeClaim": {"claimName": storage.pvc or n["pvc"]}})
        volumes.append({"name": "checkpoints", **source})
    container: dict[str, Any] = {
        "name": "trainer", "image": spec.image,
        "command": ["python", "-m", "moe_trainer.launch", "--config", f"{CONFIG_MOUNT}/{CONFIG_KEY}",
                    f"--nproc-per-node={max(1, spec.devices_per_worker)}"],
        "env": env, "volumeMounts": mounts, "ports": [{"name": "metrics", "containerPort": METRICS_PORT}],
        # The trainer writes what to change into the message file on a config error (exit EXIT_CONFIG); any
        # other failure with an empty file still leaves the log's tail in the pod's status.
        "terminationMessagePolicy": "FallbackToLogsOnError",
        # Ready once the trainer can join a group (torch imported, data and model built): only then does the
        # operator put the pod in a generation, so the running members never wait through a start-up.
        # A member's later probe failures do not unseat it (decide.seated): a slow exec on a loaded
        # node must not restart the group.
        "readinessProbe": {"exec": {"command": ["sh", "-c", f"test -f {READY_DIR}/dstj-ready-$HOSTNAME || "
                                                f"test -f {LEGACY_READY_DIR}/dstj-ready-$HOSTNAME"]},
                           "periodSeconds": 1, "timeoutSeconds": 5, "failureThreshold": 3},
        **container_fields(o),
    }
    # A read-only root file system: the trainer writes to emptyDirs (scratch, shared memory, readiness) only.
    scratch_volumes, scratch_mounts = scratch(ALL_SCRATCH, taken={m["mountPath"] for m in mounts})
    mounts.extend(scratch_mounts)
    volumes.extend(scratch_volumes)
    resources = dict(o.resources or {})
    if spec.devices_per_worker:
        limits = dict(resources.get("limits", {}))
        limits["nvidia.com/gpu"] = spec.devices_per_worker
        resources["limits"] = limits
    if resources:
        container["resources"] = resources
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",  # the operator replaces workers itself, under a new name
        "serviceAccountName": n["account"],
        "hostname": name, "subdomain": n["workers"],
        "terminationGracePeriodSeconds": 60,  # time to checkpoint at the next step boundary
        "containers": [container], "volumes": volumes,
        "tolerations": _tolerations(spec),
    }
    pod_spec.update(pod_fields(o))
    if o.topology_spread_constraints:
        pod_spec["topologySpreadConstraints"] = o.topology_spread_constraints
    if storage.host_path:
        pod_spec["initContainers"] = [host_path_owner(spec.image, o, {"name": "checkpoints",
                                                                      "mountPath": CHECKPOINT_MOUNT})]
    surplus = spec.autoscaling.surplus_priority_class_name
    if spec.autoscaling.enabled and surplus and index >= spec.min_replicas:
        # Workers above minReplicas may yield to other workloads. Not part of pod_template_hash: the one
        # field that differs between workers of a generation, so it never rolls them.
        pod_spec["priorityClassName"] = surplus
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": pod_spec}


def pod_template_hash(spec: DeepSeekTrainingJobSpec) -> str:
    """The digest of the spec fields whose edit is rolled (image, pod, devicesPerWorker): a worker pod built from
    other values is replaced, all of a generation at one step boundary (`policies.roll`)."""
    rolled = {"image": spec.image, "devicesPerWorker": spec.devices_per_worker,
              "pod": spec.pod.model_dump(mode="json", by_alias=True, exclude_none=True)}
    return config_digest(json.dumps(rolled, sort_keys=True))


def worker_rbac(job: dict[str, Any]) -> list[dict[str, Any]]:
    """ServiceAccount, Role and RoleBinding: workers read their own job and trainer config, and write only their
    progress."""
    n, job_name = names(job), job["metadata"]["name"]
    rules = [
        {"apiGroups": [GROUP], "resources": [PLURAL], "resourceNames": [job_name],
         "verbs": ["get", "watch", "list"]},
        {"apiGroups": [""], "resources": ["configmaps"], "resourceNames": [n["progress"]],
         "verbs": ["get", "update", "patch"]},
        {"apiGroups": [""], "resources": ["configmaps"], "resourceNames": [n["config"]], "verbs": ["get"]},
    ]
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": _meta(job, n["account"], "rbac")},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": _meta(job, n["account"], "rbac"),
         "rules": rules},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
         "metadata": _meta(job, n["account"], "rbac"),
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": n["account"]},
         "subjects": [{"kind": "ServiceAccount", "name": n["account"],
                       "namespace": job["metadata"]["namespace"]}]},
    ]


def progress_config_map(job: dict[str, Any]) -> dict[str, Any]:
    """The object rank 0 writes its progress report into (created empty by the operator)."""
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": _meta(job, names(job)["progress"], "progress"),
            "data": {PROGRESS_KEY: json.dumps(None)}}


def disruption_budget(job: dict[str, Any], spec: DeepSeekTrainingJobSpec) -> dict[str, Any]:
    """Voluntary evictions may take workers down to minReplicas, never below."""
    return {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
            "metadata": _meta(job, names(job)["workers"], "workers"),
            "spec": {"minAvailable": spec.min_replicas,
                     "selector": {"matchLabels": {JOB_LABEL: job["metadata"]["name"], ROLE_LABEL: "worker"}}}}


def rendezvous_network_policy(job: dict[str, Any], spec: DeepSeekTrainingJobSpec) -> dict[str, Any]:
    """Only the job's own pods may reach the store (it has no authentication)."""
    job_name = job["metadata"]["name"]
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": _meta(job, names(job)["ingress"], "rendezvous"),
            "spec": {"podSelector": {"matchLabels": {JOB_LABEL: job_name, ROLE_LABEL: "rendezvous"}},
                     "policyTypes": ["Ingress"],
                     "ingress": [{"from": [{"podSelector": {"matchLabels": {JOB_LABEL: job_name}}}],
                                  "ports": [{"port": spec.rendezvous.port}]}]}}


def checkpoint_pvc(job: dict[str, Any], spec: DeepSeekTrainingJobSpec) -> dict[str, Any] | None:
    """A shared checkpoint volume when the spec names a storage class; kept after the job by default."""
    storage = spec.checkpoint
    if storage.pvc or storage.host_path or storage.url or not storage.storage_class:
        return None
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": _meta(job, names(job)["pvc"], "checkpoints", owned=storage.delete_with_job),
            "spec": {"accessModes": ["ReadWriteMany"], "storageClassName": storage.storage_class,
                     "resources": {"requests": {"storage": storage.size}}}}
