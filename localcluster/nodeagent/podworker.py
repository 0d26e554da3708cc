"""The life of one pod on a process node, from binding to deletion (one thread per pod).

Stages, as a kubelet's pod worker: sandbox (network namespace, address, hosts file) ->
volumes -> init containers one by one -> all containers, restarted per ``restartPolicy`` with
back-off -> terminal (sandbox torn down, logs kept) -> deletion. Deletion can interrupt any
stage: SIGTERM to every running container, SIGKILL when the grace period ends (a later delete
may shorten it), final status, sandbox torn down, and only then the pod is deleted from the API
with grace period 0 (so the API never shows a pod gone whose processes still run).
"""

from __future__ import annotations

import shutil
import threading
import time
from typing import Any

from localcluster.nodeagent import (
    cgroups,
    container,
    envvars,
    hosts,
    images,
    launch,
    netns,
    probes,
    status,
    termination,
    volumes,
)
from localcluster.nodeagent.context import PodContext
from localcluster.nodeagent.kubeapi import ApiError, now_rfc3339
from localcluster.nodeagent.status import Slot

Obj = dict[str, Any]


def _pull_reason(previous: str) -> str:
    """A kubelet's reasons for a failed pull: ErrImagePull the first time, ImagePullBackOff while it retries."""
    return "ImagePullBackOff" if previous in ("ErrImagePull", "ImagePullBackOff") else "ErrImagePull"


class PodWorker:
    """Runs one pod; the agent feeds it the pod's updates and its removal from the API."""

    def __init__(self, ctx: PodContext, pod: Obj) -> None:
        self.ctx, self.pod = ctx, pod
        meta, spec = pod["metadata"], pod["spec"]
        self.uid, self.ns, self.name = meta["uid"], meta["namespace"], meta["name"]
        self.dir = ctx.cfg.paths.pod(self.uid)
        self.wake = threading.Event()
        self.removed = False  # gone from the API (force-deleted): nothing left to report
        self.stage = "sandbox"
        self.phase, self.reason, self.message = "Pending", "", ""
        self.sandbox: netns.Sandbox | None = None
        self.pod_ip: str | None = None  # kept in the status after the sandbox is gone
        self.vols: volumes.PodVolumes | None = None
        self.inits = [Slot(c, True) for c in spec.get("initContainers") or []]
        first_wait = "PodInitializing" if self.inits else "ContainerCreating"
        self.mains = [Slot(c, False, waiting_reason=first_wait) for c in spec["containers"]]
        self.conds = status.Conditions()
        self.start_time = now_rfc3339()
        self.last_status: Obj | None = None
        self.retry_at = 0.0
        self.failures = 0  # consecutive set-up failures (for the retry delay)
        self.marks: dict[str, float] = {"seen": time.monotonic()}  # start-up timings, logged once Running
        self.thread = threading.Thread(target=self._main, name=f"pod-{self.ns}/{self.name}", daemon=True)

    # -- inputs from the agent -------------------------------------------------------------
    def update(self, pod: Obj) -> None:
        """A newer version of the pod (a deletionTimestamp, a shorter grace period)."""
        if pod["metadata"]["uid"] == self.uid:
            self.pod = pod
            self.wake.set()

    def remove(self) -> None:
        """The pod is gone from the API: stop at once, report nothing more."""
        self.removed = True
        self.wake.set()

    @property
    def deleting(self) -> bool:
        """Whether the pod is being deleted (gracefully, or already gone)."""
        return self.removed or self.pod["metadata"].get("deletionTimestamp") is not None

    def slots(self) -> list[Slot]:
        """All containers, init containers first (for the kubelet API's log lookups)."""
        return self.inits + self.mains

    def refresh_hosts(self) -> None:
        """Rewrite the hosts file (Service endpoints in the pod's namespace changed)."""
        sb = self.sandbox
        if sb is not None:
            own = hosts.own_entries(self.pod, sb.ip, self.ctx.cfg.network.bridge_ip)
            hosts.write_in_place(sb.hosts_file, own + self.ctx.records.entries(self.ns))

    # -- the loop --------------------------------------------------------------------------
    def _main(self) -> None:
        """Advance the pod until it is deleted, then clean up.

        An unexpected error fails the pod (reason ``NodeAgentError``, processes killed) but keeps
        it in the API, as a kubelet bug would: its controller sees a Failed pod, not a vanished one.
        """
        while not self.deleting:
            try:
                self._step()
                self._report()
            except Exception as e:
                self.ctx.log.exception("pod %s/%s: worker failed", self.ns, self.name)
                self._fail(f"node agent error: {type(e).__name__}: {e}")
            self.wake.wait(self._timeout())
            self.wake.clear()
        try:
            self._shutdown()
        except Exception:
            self.ctx.log.exception("pod %s/%s: shutdown failed", self.ns, self.name)

    def _fail(self, message: str) -> None:
        """Kill every process of the pod and mark it Failed."""
        for s in self.slots():
            if s.run is not None and s.run.exit_code is None:
                s.run.kill()
            s.backoff_until = None
            s.finished = True
        self.reason, self.message = "NodeAgentError", message
        self._terminal("Failed")
        self.retry_at = time.monotonic() + 1.0

    def _step(self) -> None:
        """Do whatever the current stage allows now."""
        now = time.monotonic()
        if now < self.retry_at:
            return
        try:
            if self.stage == "sandbox":
                self._make_sandbox()
            if self.stage == "volumes":
                self.vols = volumes.prepare(self.pod, self.dir, self._ip(), self.ctx.get, self.ctx.mint)
                self.marks.setdefault("volumes", time.monotonic())
                self.stage = "init" if self.inits else "main"
            if self.stage == "init":
                self._advance(self.inits, now)
            if self.stage == "main":
                self._advance(self.mains, now)
                self._probe(now)
            if self.vols is not None and self.stage in ("init", "main"):
                volumes.refresh_tokens(self.pod, self.vols, self.ctx.mint)
        except (volumes.VolumeError, envvars.EnvError, images.ImageError, netns.NetError, ApiError, OSError) as e:
            # Fast first retries: right after binding, the API server's Node authorizer may not know
            # yet that the pod is on this node (403 on its token or configmaps) for a few ms.
            delay = min(0.05 * 2 ** self.failures, 2.0)
            self.failures += 1
            self.ctx.log.info("pod %s/%s: %s: %s (retry in %.2f s)", self.ns, self.name, self.stage, e, delay)
            for s in self.slots():
                if s.run is None and not s.finished:
                    s.waiting_message = str(e)
            self.retry_at = now + delay
            return
        self.failures = 0

    def _ip(self) -> str:
        """The pod's address (allocated in the sandbox stage)."""
        assert self.pod_ip is not None
        return self.pod_ip

    def _make_sandbox(self) -> None:
        """Network namespace, address and hosts file."""
        ip = self.pod_ip = self.ctx.ips.allocate(self.uid)
        search = f"{self.ns}.svc.{hosts.DOMAIN} svc.{hosts.DOMAIN} {hosts.DOMAIN}"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.sandbox = netns.create(self.ctx.cfg.network, self.ctx.cfg.paths.sd.tag, self.uid, ip, search)
        (self.dir / "sandbox.json").write_text(f'{{"netns": "{self.sandbox.netns}", "veth": "{self.sandbox.veth}"}}\n')
        self.refresh_hosts()
        self.stage = "volumes"
        self.marks.setdefault("sandbox", time.monotonic())

    def _launch(self, slot: Slot, probe_argv: list[str] | None = None) -> container.Launch:
        """How to start (or probe) one container (see ``launch.build``)."""
        assert self.sandbox is not None and self.vols is not None
        return launch.build(self.ctx, self.pod, self.dir, self.sandbox, self.vols, slot, probe_argv)

    def _start(self, slot: Slot) -> None:
        """Start one run of a container, or record why it cannot start."""
        try:
            how = self._launch(slot)
        except (envvars.EnvError, images.ImageError, volumes.VolumeError) as e:
            slot.waiting_reason = (_pull_reason(slot.waiting_reason) if isinstance(e, images.ImageNotFound)
                                   else "CreateContainerError" if isinstance(e, images.ImageError)
                                   else "CreateContainerConfigError")
            slot.waiting_message = str(e)
            self.retry_at = time.monotonic() + 1.0
            return
        slot.run = container.start(how, self.wake)
        self.marks.setdefault("started", time.monotonic())
        slot.waiting_reason, slot.waiting_message, slot.backoff_until = "", "", None
        slot.readiness = probes.new(slot.spec.get("readinessProbe"), ready_probe=True)
        slot.liveness = probes.new(slot.spec.get("livenessProbe"), ready_probe=False)
        self.ctx.log.info("pod %s/%s: started %s (pid %d, run %d)", self.ns, self.name, slot.name,
                          slot.run.proc.pid, slot.restarts)

    def _advance(self, slots: list[Slot], now: float) -> None:
        """Start, reap and restart containers; init containers one at a time."""
        policy = self.pod["spec"].get("restartPolicy", "Always")
        for slot in slots:
            if slot.finished:
                continue
            run = slot.run
            if run is None:
                if slot.backoff_until is None or now >= slot.backoff_until:
                    if slot.backoff_until is not None:
                        slot.restarts += 1
                    self._start(slot)
            elif run.poll() is not None:
                assert run.exit_code is not None
                if termination.should_restart(slot, policy, run.exit_code):
                    termination.back_off(slot, now, self.ctx.cfg.backoff_initial, self.ctx.cfg.backoff_max)
                else:
                    slot.finished = True
                    if slot.init and run.exit_code != 0:
                        self._terminal("Failed")
                        return
            if slot.init and not slot.finished:
                return  # the next init container waits for this one
        if all(s.finished for s in slots):
            if slots is self.inits:
                self.stage = "main"
                for s in self.mains:
                    s.waiting_reason = "ContainerCreating"
                self._advance(self.mains, now)
            else:
                self._terminal("Succeeded" if all(s.succeeded for s in slots) else "Failed")
        elif slots is self.mains and any(s.run is not None or s.last_terminated for s in slots):
            self.phase = "Running"

    def _probe(self, now: float) -> None:
        """Run due probes (see ``probes.probe_all``)."""
        def exec_in(slot: Slot, cmd: list[str], timeout: float) -> int:
            return container.run_probe_command(self._launch(slot, cmd), timeout)
        grace = float(self.pod["spec"].get("terminationGracePeriodSeconds", 30))
        probes.probe_all(self.mains, self._ip(), exec_in, grace, now)

    def _terminal(self, phase: str) -> None:
        """All containers are done for good: record the phase, free the sandbox, keep the logs."""
        self.phase, self.stage = phase, "terminal"
        self._free_sandbox()

    def _timeout(self) -> float:
        """How long the loop may sleep before something is due (back-off, probe, token, retry)."""
        now = time.monotonic()
        due = [now + 5.0]
        due += [s.backoff_until for s in self.slots() if s.backoff_until is not None and s.run is None]
        for s in self.mains:
            due += [p.next_at for p in (s.readiness, s.liveness) if p is not None and s.running]
            if s.run is not None and s.run.term_sent_at is not None:
                due.append(s.run.term_sent_at + s.run.grace)
        if self.vols is not None:
            due += [t.refresh_at for t in self.vols.tokens]
        if self.retry_at > now:
            due.append(self.retry_at)
        return max(0.01, min(due) - now)

    def _report(self) -> None:
        """Patch the pod's status when it changed (strategic merge: the scheduler's and the
        taint manager's conditions stay)."""
        if self.removed:
            return
        st = status.pod_status(
            phase=self.phase, pod_ip=self.pod_ip, host_ip=self.ctx.cfg.node_ip,
            start_time=self.start_time, sandbox=self.sandbox is not None and self.stage != "terminal",
            inits=self.inits, mains=self.mains, conds=self.conds, reason=self.reason, message=self.message)
        if st == self.last_status:
            return
        try:
            # metadata.uid makes the patch a precondition: never the status of a same-named successor.
            self.ctx.api.patch(f"/api/v1/namespaces/{self.ns}/pods/{self.name}/status",
                               {"metadata": {"uid": self.uid}, "status": st})
            self.last_status = st
            if self.phase == "Running" and "reported" not in self.marks:
                self.marks["reported"] = time.monotonic()
                self._log_startup()
        except ApiError as e:
            if e.status in (404, 409):
                self.removed = True
            else:
                self.ctx.log.warning("pod %s/%s: status patch failed: %s", self.ns, self.name, e)
                self.retry_at = time.monotonic() + 0.5

    def _log_startup(self) -> None:
        """One line per pod with where its start-up time went (ms since the agent saw it)."""
        t0 = self.marks["seen"]
        steps = " ".join(f"{k}={1000 * (v - t0):.0f}" for k, v in self.marks.items() if k != "seen")
        self.ctx.log.info("pod %s/%s: running after %s ms", self.ns, self.name, steps)

    # -- the end ---------------------------------------------------------------------------
    def _shutdown(self) -> None:
        """Stop every container within the grace period, report, clean up, delete from the API."""
        termination.stop_all(self.slots(), lambda: termination.grace_period(self.pod, self.removed), self.wake)
        if self.stage != "terminal":
            ok = all(s.succeeded for s in self.mains)
            self.phase = "Succeeded" if ok else "Failed"
            self.stage = "terminal"
        for s in self.slots():
            s.readiness = None
        self._report()
        try:
            self._free_sandbox()
        except Exception:  # a leftover file must not leave the pod Terminating in the API forever
            self.ctx.log.exception("pod %s/%s: freeing the sandbox failed", self.ns, self.name)
        if not self.removed:
            try:
                self.ctx.api.delete(f"/api/v1/namespaces/{self.ns}/pods/{self.name}",
                                    {"gracePeriodSeconds": 0, "preconditions": {"uid": self.uid}})
            except ApiError as e:
                if e.status not in (404, 409):
                    self.ctx.log.warning("pod %s/%s: delete failed: %s", self.ns, self.name, e)
        shutil.rmtree(self.dir, ignore_errors=True)
        self.ctx.log.info("pod %s/%s: deleted", self.ns, self.name)

    def _free_sandbox(self) -> None:
        """Kill leftovers, delete the namespace and veth, give the address back."""
        cgroups.kill_and_remove(cgroups.pod_dir(self.ctx.cfg.paths.sd.tag, self.ctx.cfg.spec.name, self.uid))
        if self.sandbox is not None:
            netns.delete(self.sandbox)
            self.sandbox = None
        self.ctx.ips.release(self.uid)
