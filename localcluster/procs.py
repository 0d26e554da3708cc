"""Detached processes, remembered by pid and start time, stopped by pid.

Each process the local cluster starts gets a JSON record in ``<state>/procs/<name>.json``
holding its pid and its kernel start time. The start time guards against pid reuse: ``down``
never signals a process that merely inherited a recorded pid. Other parts of the package (the
node agent) register their processes here too, so one ``down`` stops everything.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from localcluster.waiting import WaitTimeout, wait_until


@dataclass(frozen=True)
class ProcRecord:
    """What we remember about one started process."""

    name: str
    pid: int
    start_time: int  # /proc/<pid>/stat field 22, in clock ticks since boot
    argv: list[str]
    log: str


def _stat(pid: int) -> tuple[str, int] | None:
    """Return (state letter, start time) of ``pid`` from /proc, or None if it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # The command name (field 2) may contain spaces and parentheses: split after the last ')'.
    fields = raw[raw.rindex(")") + 2 :].split()
    return fields[0], int(fields[19])


def is_alive(rec: ProcRecord) -> bool:
    """Tell whether the recorded process still runs (a zombie or a reused pid does not count)."""
    st = _stat(rec.pid)
    return st is not None and st[0] not in ("Z", "X") and st[1] == rec.start_time


def spawn(procs_dir: Path, name: str, argv: list[str], log: Path, env: dict[str, str] | None = None,
          cwd: Path | None = None) -> ProcRecord:
    """Start ``argv`` detached (own session, output to ``log``) and record it under ``name``.

    A new session means the process outlives the command that started it and does not get the
    terminal's SIGINT; that is what lets ``up`` return while the cluster keeps running.
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        out.write(f"\n==== {time.strftime('%Y-%m-%dT%H:%M:%S')} start: {' '.join(argv)}\n".encode())
        out.flush()
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True, close_fds=True, env=env, cwd=cwd)
    st = _stat(proc.pid)
    rec = ProcRecord(name=name, pid=proc.pid, start_time=st[1] if st else -1, argv=argv, log=str(log))
    save(procs_dir, rec)
    return rec


def save(procs_dir: Path, rec: ProcRecord) -> None:
    """Write ``rec`` atomically, so a reader never sees half a record."""
    procs_dir.mkdir(parents=True, exist_ok=True)
    tmp = procs_dir / f".{rec.name}.json.tmp"
    tmp.write_text(json.dumps(asdict(rec)) + "\n")
    tmp.replace(procs_dir / f"{rec.name}.json")


def load(procs_dir: Path, name: str) -> ProcRecord | None:
    """Return the record of ``name``, or None if there is none (or it is unreadable)."""
    try:
        return ProcRecord(**json.loads((procs_dir / f"{name}.json").read_text()))
    except (FileNotFoundError, ValueError, TypeError):
        return None


def load_all(procs_dir: Path) -> list[ProcRecord]:
    """Return every record, newest first, so stopping them runs in reverse start order."""
    recs = []
    for path in procs_dir.glob("*.json") if procs_dir.is_dir() else []:
        rec = load(procs_dir, path.stem)
        if rec is not None:
            recs.append(rec)
    return sorted(recs, key=lambda r: r.start_time, reverse=True)


def _reap(pid: int) -> None:
    """Collect ``pid``'s exit status if it is our child, so it does not linger as a zombie."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def _signal(rec: ProcRecord, sig: signal.Signals) -> None:
    """Send ``sig`` to the process and its session, checking identity first."""
    if not is_alive(rec):
        return
    try:
        # The process leads its own session and process group (start_new_session): signal the
        # group so helpers it forked go too.
        os.killpg(rec.pid, sig)
    except (ProcessLookupError, PermissionError):
        with contextlib.suppress(ProcessLookupError):
            os.kill(rec.pid, sig)


def stop(rec: ProcRecord, grace: float = 10.0) -> bool:
    """Stop one process: SIGTERM, wait up to ``grace`` seconds, then SIGKILL.

    Returns True if it was running. Never signals a pid whose start time differs from the
    record (the original process is gone and the pid belongs to someone else now).
    """
    if not is_alive(rec):
        _reap(rec.pid)
        return False
    _signal(rec, signal.SIGTERM)

    def gone() -> bool:
        _reap(rec.pid)
        return not is_alive(rec)

    try:
        wait_until(gone, timeout=grace, what=f"{rec.name} (pid {rec.pid}) to exit", interval=0.05,
                   max_interval=0.25)
    except WaitTimeout:
        _signal(rec, signal.SIGKILL)
        wait_until(gone, timeout=10, what=f"{rec.name} (pid {rec.pid}) to die after SIGKILL")
    return True


def kill_now(rec: ProcRecord) -> bool:
    """SIGKILL the process and its group at once (a machine dying, not a shutdown).

    Returns True if it was running.
    """
    if not is_alive(rec):
        _reap(rec.pid)
        return False
    _signal(rec, signal.SIGKILL)

    def gone() -> bool:
        _reap(rec.pid)
        return not is_alive(rec)

    wait_until(gone, timeout=10, what=f"{rec.name} (pid {rec.pid}) to die after SIGKILL", interval=0.01)
    return True


def forget(procs_dir: Path, name: str) -> None:
    """Delete the record of ``name`` (after the process is gone)."""
    with contextlib.suppress(FileNotFoundError):
        (procs_dir / f"{name}.json").unlink()
