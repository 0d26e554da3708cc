"""Small builders and waiters for the cluster tests: manifests as data, waits with deadlines.

One place for "a pod that runs this shell command" and "wait until this object satisfies
that", so each test reads as its scenario and no test sleeps.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from localcluster.kubectl import Kubectl
from localcluster.waiting import wait_until

Obj = dict[str, Any]


def unique(prefix: str) -> str:
    """A unique object name, so reruns against a reused cluster never collide."""
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def pod(name: str, script: str, *, image: str = "busybox", restart: str = "Never", grace: int = 5,
        **spec: Any) -> Obj:
    """A pod whose one container runs ``sh -c script`` (extra keys go into ``spec``)."""
    container: Obj = {"name": "main", "image": image, "command": ["sh", "-c", script]}
    container |= spec.pop("container", {})
    body: Obj = {"restartPolicy": restart, "terminationGracePeriodSeconds": grace, "containers": [container]}
    labels = spec.pop("labels", {})
    body |= spec
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": labels}, "spec": body}


def apply(kube: Kubectl, ns: str, *objs: Obj) -> None:
    """Create or update objects in namespace ``ns``."""
    doc = {"apiVersion": "v1", "kind": "List", "items": list(objs)}
    kube("apply", "-n", ns, "-f", "-", stdin=json.dumps(doc))


def get(kube: Kubectl, kind: str, name: str, ns: str | None = None) -> Obj | None:
    """The object as JSON, or None when it does not exist."""
    args = ["get", kind, name, "-o", "json"] + (["-n", ns] if ns else [])
    res = kube(*args, check=False)
    if res.returncode != 0:
        if "NotFound" in res.stderr:
            return None
        raise RuntimeError(res.stderr)
    return dict(json.loads(res.stdout))


def wait_for(kube: Kubectl, kind: str, name: str, ns: str | None, pred: Callable[[Obj], bool], *,
             timeout: float = 30, what: str = "") -> Obj:
    """Wait until the object exists and ``pred`` holds; return it."""
    def check() -> Obj | None:
        obj = get(kube, kind, name, ns)
        return obj if obj is not None and pred(obj) else None

    return wait_until(check, timeout=timeout, what=what or f"{kind} {ns}/{name}", interval=0.1, max_interval=0.5)


def wait_gone(kube: Kubectl, kind: str, name: str, ns: str | None, *, timeout: float = 30) -> None:
    """Wait until the object no longer exists."""
    wait_until(lambda: get(kube, kind, name, ns) is None, timeout=timeout, what=f"{kind} {ns}/{name} to be gone",
               interval=0.1, max_interval=0.5)


def phase(p: Obj) -> str:
    """A pod's phase."""
    return str(p.get("status", {}).get("phase", ""))


def condition(obj: Obj, ctype: str) -> Obj:
    """One condition of an object's status ({} if absent)."""
    return next((c for c in obj.get("status", {}).get("conditions") or [] if c["type"] == ctype), {})


def ready(p: Obj) -> bool:
    """Whether a pod is Ready."""
    return condition(p, "Ready").get("status") == "True"


def container_status(p: Obj, name: str = "main") -> Obj:
    """One container's status ({} before the first report)."""
    return next((c for c in p.get("status", {}).get("containerStatuses") or [] if c["name"] == name), {})


def process_alive(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie waiting for init to reap it is dead)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] not in "ZX"


def container_pid(p: Obj, name: str = "main") -> int:
    """The main process of a running container (its containerID is ``localcluster://PID``)."""
    return int(container_status(p, name)["containerID"].rsplit("/", 1)[1])


def logs(kube: Kubectl, ns: str, name: str, *args: str) -> str:
    """``kubectl logs`` through the API server and the node's kubelet API."""
    return kube("logs", "-n", ns, name, *args).stdout
