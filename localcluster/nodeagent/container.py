"""One run of one container: a process in the pod's namespaces, its log, its exit.

The process chain is ``ip netns exec <ns> unshare --uts -- python -I -S shim.py SPEC``; each
step ``exec``s the next, so the Popen's pid is, in the end, the container's own command. Output
(stdout and stderr together, as ``kubectl logs`` shows them) goes to
``<pod dir>/logs/<container>/<restart count>.log``. Stopping follows a container runtime: SIGTERM
to the main process, and when the grace period ends SIGKILL to everything in its cgroup.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from localcluster.nodeagent import cgroups, kubeapi, termlog

Obj = dict[str, Any]
SHIM = Path(__file__).with_name("shim.py")
#: Absolute paths: the pod's own PATH must not decide which ``ip`` runs.
IP = shutil.which("ip") or "/usr/sbin/ip"
UNSHARE = shutil.which("unshare") or "/usr/bin/unshare"


@dataclass(frozen=True)
class Launch:
    """Everything needed to start one container process."""

    netns: str
    hostname: str
    argv: list[str]
    env: dict[str, str]
    mounts: list[Obj]
    working_dir: str
    python: Path
    cgroup: Path | None
    spec_path: Path
    log_path: Path
    mountpoint_record: Path
    termination_path: Path | None = None
    """The run's termination-message file (``termlog``); None for an exec probe."""
    fallback_to_logs: bool = False
    """``terminationMessagePolicy: FallbackToLogsOnError``."""


def log_path(pod_dir: Path, container: str, run: int) -> Path:
    """The log file of run ``run`` (0-based restart count) of a container."""
    return pod_dir / "logs" / container / f"{run}.log"


@dataclass
class Run:
    """A started container process and what became of it."""

    launch: Launch
    proc: subprocess.Popen[bytes]
    started_at: str
    finished_at: str | None = None
    exit_code: int | None = None
    start_error: str | None = None
    message: str = ""
    """The termination message, read when the run ended (``termlog``)."""
    term_sent_at: float | None = None
    #: Seconds between SIGTERM and SIGKILL (the pod's grace period, which a later delete may shorten).
    grace: float = 30.0
    done: threading.Event = field(default_factory=threading.Event)

    @property
    def container_id(self) -> str:
        """What the status reports as ``containerID``."""
        return f"localcluster://{self.proc.pid}"

    def poll(self) -> int | None:
        """Return the exit code once the process has exited (signals as 128 + n), else None."""
        if self.exit_code is None and self.done.is_set():
            rc = self.proc.returncode
            self.exit_code = 128 - rc if rc < 0 else rc
            self.finished_at = kubeapi.now_rfc3339()
            err = self.launch.spec_path.with_name(self.launch.spec_path.name + ".start-error")
            if rc == 128 and err.exists():
                self.start_error = err.read_text()
            if self.launch.termination_path is not None:
                self.message = termlog.read(self.launch.termination_path, self.launch.log_path,
                                            self.launch.fallback_to_logs, self.exit_code)
            # A container ends when its main process does: no forked helper outlives it.
            cgroups.kill_and_remove(self.launch.cgroup, timeout=5)
        return self.exit_code

    def terminate(self, grace: float) -> None:
        """Send SIGTERM to the main process, once (the runtime's stop signal); SIGKILL follows
        when ``overdue`` says so. A second call may only shorten the grace period."""
        self.grace = min(self.grace, grace) if self.term_sent_at is not None else grace
        if self.term_sent_at is None:
            self.term_sent_at = time.monotonic()
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            if self.launch.cgroup is None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(self.proc.pid, signal.SIGTERM)

    def overdue(self, now: float) -> bool:
        """Whether SIGTERM was sent and the grace period is over."""
        return self.term_sent_at is not None and self.exit_code is None and now >= self.term_sent_at + self.grace

    def kill(self) -> None:
        """SIGKILL every process of the container (the grace period is over)."""
        if self.launch.cgroup is not None:
            cgroups.signal_all(self.launch.cgroup, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            self.proc.kill()


def _argv(launch: Launch) -> list[str]:
    """The exec chain that puts the shim into the pod's network, mount and UTS namespaces."""
    return [IP, "netns", "exec", launch.netns, UNSHARE, "--uts", "--",
            str(launch.python), "-I", "-S", str(SHIM), str(launch.spec_path)]


def start(launch: Launch, wake: threading.Event) -> Run:
    """Start the container's process and a thread that reaps it and wakes the pod worker."""
    fd = cgroups.make(launch.cgroup)
    spec = {"hostname": launch.hostname, "mounts": launch.mounts, "workingDir": launch.working_dir,
            "argv": launch.argv, "cgroup_fd": fd, "mountpointRecord": str(launch.mountpoint_record)}
    launch.spec_path.parent.mkdir(parents=True, exist_ok=True)
    launch.spec_path.write_text(json.dumps(spec))
    with contextlib.suppress(FileNotFoundError):
        launch.spec_path.with_name(launch.spec_path.name + ".start-error").unlink()
    launch.log_path.parent.mkdir(parents=True, exist_ok=True)
    if launch.termination_path is not None:
        termlog.prepare(launch.termination_path)
    try:
        with open(launch.log_path, "ab") as out:
            proc = subprocess.Popen(_argv(launch), stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                    env=launch.env, start_new_session=True, close_fds=True,
                                    pass_fds=(fd,) if fd is not None else ())
    finally:
        if fd is not None:
            os.close(fd)
    run = Run(launch=launch, proc=proc, started_at=kubeapi.now_rfc3339())

    def reap() -> None:
        proc.wait()
        run.done.set()
        wake.set()

    threading.Thread(target=reap, name=f"reap-{proc.pid}", daemon=True).start()
    return run


def run_probe_command(launch: Launch, timeout: float) -> int:
    """Run an exec probe inside the container's namespaces and mounts; return its exit code."""
    spec = {"hostname": launch.hostname, "mounts": launch.mounts, "workingDir": launch.working_dir,
            "argv": launch.argv, "cgroup_fd": None, "mountpointRecord": str(launch.mountpoint_record)}
    launch.spec_path.parent.mkdir(parents=True, exist_ok=True)
    launch.spec_path.write_text(json.dumps(spec))
    try:
        res = subprocess.run(_argv(launch), env=launch.env, capture_output=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return -1
    return res.returncode
