"""A container's termination message, read at exit as a kubelet reads it.

A kubelet mounts an empty file at the container's ``terminationMessagePath`` (default
``/dev/termination-log``) and reads it when the container exits, at most 4096 bytes. With
``terminationMessagePolicy: FallbackToLogsOnError``, an empty file after a non-zero exit gives the
tail of the log instead: the last 80 lines, at most 2048 bytes. The message becomes
``state.terminated.message``.

Difference on process nodes: containers share the host's file system (and its ``/dev``), so the
file is a per-run file under the pod's directory, and its path reaches the process in the variable
``DSTJ_TERMINATION_LOG`` (``dstj_api.contract.ENV_TERMINATION_LOG``), not at ``terminationMessagePath``.
"""

from __future__ import annotations

from pathlib import Path

from dstj_api.contract import ENV_TERMINATION_LOG

ENV = ENV_TERMINATION_LOG
MAX_BYTES = 4096
"""The most a message file is read (the kubelet's MaxContainerTerminationMessageLength)."""
FALLBACK_LINES, FALLBACK_BYTES = 80, 2048
"""How much of the log stands in for an empty message after a failure (the kubelet's limits)."""


def path(pod_dir: Path, container: str, run: int) -> Path:
    """The message file of run ``run`` (0-based restart count) of a container."""
    return pod_dir / "termination" / container / f"{run}.msg"


def prepare(file: Path) -> None:
    """An empty message file before the run starts (as the kubelet creates one per container start)."""
    file.parent.mkdir(parents=True, exist_ok=True)
    file.write_bytes(b"")


def _log_tail(log: Path) -> str:
    try:
        with log.open("rb") as f:
            f.seek(0, 2)
            f.seek(max(0, f.tell() - 64 * 1024))
            data = f.read()
    except FileNotFoundError:
        return ""
    tail = b"".join(data.splitlines(keepends=True)[-FALLBACK_LINES:])[-FALLBACK_BYTES:]
    return tail.decode(errors="replace")


def read(file: Path, log: Path, fallback_to_logs: bool, exit_code: int) -> str:
    """The message of a finished run: the file's content, else (policy and a failure permitting) the log's tail."""
    try:
        with file.open("rb") as f:
            text = f.read(MAX_BYTES).decode(errors="replace")
    except FileNotFoundError:
        text = ""
    if not text and fallback_to_logs and exit_code != 0:
        text = _log_tail(log)
    return text
