"""Readiness and liveness probes: exec, tcpSocket and httpGet, with the kubelet's thresholds.

exec probes run inside the container's namespaces and mounts (the same shim as the container);
tcpSocket and httpGet connect from the host to the pod's IP over the bridge, as a kubelet does.
Startup probes are not run (a container counts as started when its process is).
"""

from __future__ import annotations

import dataclasses
import http.client
import socket
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from localcluster.nodeagent.status import Slot

Obj = dict[str, Any]
#: (slot, probe command, timeout) -> exit code of the command run inside the container.
ExecIn = Callable[["Slot", list[str], float], int]


def _port(value: Any, container: Obj) -> int:
    """A probe port: a number, or the name of one of the container's ports."""
    if isinstance(value, int) or str(value).isdigit():
        return int(value)
    for p in container.get("ports") or []:
        if p.get("name") == value:
            return int(p["containerPort"])
    raise ValueError(f"no container port named {value!r}")


def check(probe: Obj, container: Obj, pod_ip: str, run_exec: Callable[[list[str], float], int]) -> bool:
    """Run one probe once and tell whether it succeeded."""
    timeout = float(probe.get("timeoutSeconds", 1))
    try:
        if "exec" in probe:
            return run_exec(probe["exec"]["command"], timeout) == 0
        if "tcpSocket" in probe:
            with socket.create_connection((pod_ip, _port(probe["tcpSocket"]["port"], container)), timeout=timeout):
                return True
        if "httpGet" in probe:
            g = probe["httpGet"]
            conn = http.client.HTTPConnection(pod_ip, _port(g["port"], container), timeout=timeout)
            try:
                headers = {h["name"]: h["value"] for h in g.get("httpHeaders") or []}
                conn.request("GET", g.get("path", "/"), headers=headers)
                return 200 <= conn.getresponse().status < 400
            finally:
                conn.close()
    except (OSError, ValueError, http.client.HTTPException):
        return False
    return False


@dataclasses.dataclass
class Prober:
    """The state of one probe of one container run: when next, and the verdict so far."""

    probe: Obj
    started: float
    #: The verdict: readiness starts False (not ready until it passes), liveness True.
    ok: bool
    next_at: float = 0.0
    successes: int = 0
    failures: int = 0

    def __post_init__(self) -> None:
        self.next_at = self.started + float(self.probe.get("initialDelaySeconds", 0))

    def due(self, now: float) -> bool:
        """Tell whether the probe should run now."""
        return now >= self.next_at

    def record(self, success: bool, now: float) -> None:
        """Fold one result into the verdict, with success and failure thresholds."""
        self.next_at = now + float(self.probe.get("periodSeconds", 10))
        if success:
            self.successes, self.failures = self.successes + 1, 0
            if self.successes >= int(self.probe.get("successThreshold", 1)):
                self.ok = True
        else:
            self.failures, self.successes = self.failures + 1, 0
            if self.failures >= int(self.probe.get("failureThreshold", 3)):
                self.ok = False


def new(probe: Obj | None, ready_probe: bool) -> Prober | None:
    """A prober for a container's readiness (``ready_probe``) or liveness probe, if it has one."""
    if not probe:
        return None
    return Prober(probe=probe, started=time.monotonic(), ok=not ready_probe)


def probe_all(slots: list[Slot], pod_ip: str, exec_in: ExecIn, grace: float, now: float) -> None:
    """Run the due readiness and liveness probes of running containers; a container whose
    liveness probe failed is stopped (SIGTERM, then SIGKILL after ``grace``) and restarts per
    its pod's policy."""
    for slot in slots:
        run = slot.run
        if run is None or run.exit_code is not None:
            continue
        for prober in (slot.readiness, slot.liveness):
            if prober is not None and prober.due(now):
                def run_exec(cmd: list[str], timeout: float, slot: Slot = slot) -> int:
                    return exec_in(slot, cmd, timeout)
                prober.record(check(prober.probe, slot.spec, pod_ip, run_exec), time.monotonic())
        if slot.liveness is not None and not slot.liveness.ok:
            run.terminate(grace)
            slot.liveness = None
        if run.overdue(now):
            run.kill()
