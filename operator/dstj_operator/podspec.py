"""What `spec.pod` puts into the pods the operator builds, besides the worker's own container.

The defaults pass the `restricted` Pod Security profile: a non-root user (the images' uid), no privilege
escalation, every capability dropped, the runtime's default seccomp profile and a read-only root file system,
with emptyDirs where the trainer writes (`/tmp`, `/dev/shm`, the readiness directory). A user's security
context is merged over them key by key. No API calls here; `children.py` assembles the pods.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from dstj_api.contract import READY_DIR
from dstj_operator.spec import PodOverrides

RUN_AS_ID = 65532
"""The uid and gid the trainer and operator images run as (their Dockerfiles' `USER`)."""

POD_SECURITY_DEFAULTS: dict[str, Any] = {
    "runAsNonRoot": True, "runAsUser": RUN_AS_ID, "runAsGroup": RUN_AS_ID,
    "fsGroup": RUN_AS_ID,  # a checkpoint volume that supports ownership becomes writable to that group
    "seccompProfile": {"type": "RuntimeDefault"},
}
"""The pod securityContext before `spec.pod.securityContext` is merged over it."""

CONTAINER_SECURITY_DEFAULTS: dict[str, Any] = {
    "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}, "readOnlyRootFilesystem": True,
}
"""The container securityContext before `spec.pod.containerSecurityContext` is merged over it."""

SCRATCH: tuple[tuple[str, str, dict[str, Any]], ...] = (
    ("tmp", "/tmp", {}),
    ("shm", "/dev/shm", {"medium": "Memory"}),  # shared memory (torch's data loader workers use it)
    ("ready", READY_DIR, {}),
)
"""(volume name, mount path, emptyDir source) of the writable directories every trainer container gets."""
ALL_SCRATCH = tuple(name for name, _, _ in SCRATCH)

_SCHEDULING = (("node_selector", "nodeSelector"), ("affinity", "affinity"),
               ("priority_class_name", "priorityClassName"), ("scheduler_name", "schedulerName"),
               ("runtime_class_name", "runtimeClassName"), ("image_pull_secrets", "imagePullSecrets"))
"""Pod-spec fields taken as written, on worker and store pods alike (where and how a pod of the job runs)."""


def merged(defaults: dict[str, Any], user: dict[str, Any] | None) -> dict[str, Any]:
    """`defaults` with every top-level key the user set replaced by the user's value (a key you set replaces the
    default's whole value: `capabilities: {add: [...]}` drops the default `drop: [ALL]`)."""
    return {**defaults, **(user or {})}


def pod_fields(o: PodOverrides) -> dict[str, Any]:
    """The pod-spec fields `spec.pod` decides on every pod of the job (workers and the rendezvous store): the
    scheduling and pull fields the user set, and the pod security context. Tolerations are the caller's (workers
    add their own)."""
    fields = {wire: getattr(o, attr) for attr, wire in _SCHEDULING if getattr(o, attr)}
    return {**fields, "securityContext": merged(POD_SECURITY_DEFAULTS, o.security_context)}


def container_fields(o: PodOverrides) -> dict[str, Any]:
    """The container fields `spec.pod` decides on every container of the job: pull policy, security context."""
    fields: dict[str, Any] = {"securityContext": merged(CONTAINER_SECURITY_DEFAULTS, o.container_security_context)}
    if o.image_pull_policy:
        fields["imagePullPolicy"] = o.image_pull_policy
    return fields


def host_path_owner(image: str, o: PodOverrides, mount: dict[str, Any]) -> dict[str, Any]:
    """The init container that gives a hostPath checkpoint directory to the trainer's user.

    The kubelet creates a missing hostPath directory as root with mode 0755, and `fsGroup` does not
    apply to hostPath volumes: without this a non-root trainer cannot write its checkpoints there.
    It runs as root with CAP_CHOWN alone and changes the directory itself, not its contents (a
    resumed job's files are the trainer's already). A namespace that admits hostPath volumes is at
    the privileged Pod Security level, so a root init container adds nothing it forbids.
    """
    context = merged(POD_SECURITY_DEFAULTS, o.security_context)
    owner = f"{context.get('runAsUser', RUN_AS_ID)}:{context.get('runAsGroup', RUN_AS_ID)}"
    container: dict[str, Any] = {
        "name": "checkpoint-owner", "image": image, "command": ["chown", owner, mount["mountPath"]],
        "volumeMounts": [mount],
        "securityContext": {"runAsUser": 0, "runAsNonRoot": False, "allowPrivilegeEscalation": False,
                            "readOnlyRootFilesystem": True, "capabilities": {"drop": ["ALL"], "add": ["CHOWN"]}},
    }
    if o.image_pull_policy:
        container["imagePullPolicy"] = o.image_pull_policy
    return container


def scratch(names: Collection[str], taken: Collection[str] = ()) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(volumes, volumeMounts) of the writable emptyDirs of `SCRATCH` called `names`, less those whose mount path
    is in `taken` (a user's own volume at that path wins)."""
    chosen = [(name, path, source) for name, path, source in SCRATCH if name in names and path not in taken]
    return ([{"name": f"scratch-{name}", "emptyDir": source} for name, _, source in chosen],
            [{"name": f"scratch-{name}", "mountPath": path} for name, path, _ in chosen])
