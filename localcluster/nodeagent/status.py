"""Pod status as a kubelet reports it: phase, conditions, container statuses.

``Slot`` is the runtime record of one container across restarts; ``pod_status`` turns the
slots of a pod into the ``status`` object the agent patches. Reasons follow the kubelet:
waiting ``ContainerCreating`` / ``PodInitializing`` / ``CrashLoopBackOff`` /
``CreateContainerConfigError`` / ``CreateContainerError``; terminated ``Completed`` (exit 0),
``Error`` (non-zero, signals as 128 + n) or ``StartError`` (the command could not be run).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from localcluster.nodeagent import images, kubeapi
from localcluster.nodeagent.container import Run
from localcluster.nodeagent.probes import Prober

Obj = dict[str, Any]


@dataclass
class Slot:
    """One container of a pod: its spec, current run, restarts and probe state."""

    spec: Obj
    init: bool
    restarts: int = 0
    run: Run | None = None
    waiting_reason: str = "ContainerCreating"
    waiting_message: str = ""
    last_terminated: Obj | None = None
    #: monotonic time before which a crashed container is not restarted (CrashLoopBackOff).
    backoff_until: float | None = None
    #: True once the container has exited and will not run again.
    finished: bool = False
    readiness: Prober | None = None
    liveness: Prober | None = None

    @property
    def name(self) -> str:
        """The container's name."""
        return str(self.spec["name"])

    @property
    def running(self) -> bool:
        """Whether a process of this container runs now."""
        return self.run is not None and self.run.exit_code is None

    @property
    def ready(self) -> bool:
        """Running and (without a readiness probe, or with it passing)."""
        return self.running and (self.readiness is None or self.readiness.ok)

    @property
    def succeeded(self) -> bool:
        """Finished with exit code 0."""
        return self.finished and self.run is not None and self.run.exit_code == 0


def terminated(run: Run) -> Obj:
    """The ``terminated`` state of a finished run."""
    code = run.exit_code if run.exit_code is not None else -1
    reason = "StartError" if run.start_error else ("Completed" if code == 0 else "Error")
    out: Obj = {"exitCode": code, "reason": reason, "startedAt": run.started_at,
                "finishedAt": run.finished_at, "containerID": run.container_id}
    if run.start_error or run.message:
        out["message"] = run.start_error or run.message
    return out


def container_status(slot: Slot) -> Obj:
    """One entry of ``containerStatuses`` / ``initContainerStatuses``."""
    image = slot.spec.get("image", "")
    st: Obj = {"name": slot.name, "image": image, "imageID": images.image_id(image),
               "restartCount": slot.restarts, "ready": slot.ready, "started": slot.running}
    run = slot.run
    if run is not None and run.exit_code is None:
        st["state"] = {"running": {"startedAt": run.started_at}}
        st["containerID"] = run.container_id
    elif run is not None and slot.finished:
        st["state"] = {"terminated": terminated(run)}
        st["containerID"] = run.container_id
    else:
        waiting: Obj = {"reason": slot.waiting_reason}
        if slot.waiting_message:
            waiting["message"] = slot.waiting_message
        st["state"] = {"waiting": waiting}
    if slot.last_terminated is not None:
        st["lastState"] = {"terminated": slot.last_terminated}
    return st


@dataclass
class Conditions:
    """Pod conditions with transition times that change only when the status does."""

    items: dict[str, Obj] = field(default_factory=dict)

    def set(self, ctype: str, ok: bool, reason: str = "", message: str = "") -> None:
        """Set one condition, keeping its lastTransitionTime unless its status flips."""
        status = "True" if ok else "False"
        old = self.items.get(ctype)
        when = old["lastTransitionTime"] if old and old["status"] == status else kubeapi.now_rfc3339()
        cond: Obj = {"type": ctype, "status": status, "lastProbeTime": None, "lastTransitionTime": when}
        if reason and not ok:
            cond["reason"] = reason
            if message:
                cond["message"] = message
        self.items[ctype] = cond


def pod_status(*, phase: str, pod_ip: str | None, host_ip: str, start_time: str, sandbox: bool,
               inits: list[Slot], mains: list[Slot], conds: Conditions, message: str = "",
               reason: str = "") -> Obj:
    """Build the pod's ``status`` from its containers' slots."""
    terminal = phase in ("Succeeded", "Failed")
    initialized = all(s.succeeded for s in inits)
    unready = [s.name for s in mains if not s.ready]
    conds.set("PodReadyToStartContainers", sandbox and not terminal)
    conds.set("Initialized", initialized or (terminal and not inits), "ContainersNotInitialized",
              f"containers with incomplete status: [{' '.join(s.name for s in inits if not s.succeeded)}]")
    why = "PodCompleted" if terminal else "ContainersNotReady"
    msg = "" if terminal else f"containers with unready status: [{' '.join(unready)}]"
    conds.set("ContainersReady", not unready and not terminal, why, msg)
    conds.set("Ready", not unready and not terminal, why, msg)
    st: Obj = {"phase": phase, "hostIP": host_ip, "hostIPs": [{"ip": host_ip}], "startTime": start_time,
               "conditions": list(conds.items.values()),
               "containerStatuses": [container_status(s) for s in mains]}
    if inits:
        st["initContainerStatuses"] = [container_status(s) for s in inits]
    if pod_ip:
        st["podIP"] = pod_ip
        st["podIPs"] = [{"ip": pod_ip}]
    if message:
        st["message"] = message
    if reason:
        st["reason"] = reason
    return st
