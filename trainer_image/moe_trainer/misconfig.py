"""Settings only run time can check, and how a worker hands them to the job instead of crash-looping.

A checkpoint URL whose fsspec backend is not installed, a `resumeFrom` that holds no checkpoint,
checkpoint storage the workers do not share: retrying cannot help. The worker raises `RunConfigError`
(its message names the spec field and the fix), writes that message to its termination-message file
and exits with `EXIT_CONFIG`; the operator reads the message from the pod's status and puts it on
the job. Nothing here retries or decides for the job.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from dstj_api import EXIT_CONFIG, ConfigError
from dstj_api.contract import ENV_TERMINATION_LOG

KUBELET_TERMINATION_LOG = Path("/dev/termination-log")
"""Where a kubelet mounts the message file by default (the pod spec's terminationMessagePath)."""
MAX_MESSAGE_BYTES = 4096
"""A kubelet reads no more of the file than this."""


class RunConfigError(ConfigError):
    """A setting that only run time could check is wrong; the message names the spec field and the fix."""


def termination_log() -> Path | None:
    """The file the orchestrator reads the termination message from: `DSTJ_TERMINATION_LOG` when set (the
    local cluster's process nodes), else the kubelet's default path when writable, else none."""
    named = os.environ.get(ENV_TERMINATION_LOG)
    if named:
        return Path(named)
    return KUBELET_TERMINATION_LOG if os.access(KUBELET_TERMINATION_LOG, os.W_OK) else None


def exit_misconfigured(message: str) -> int:
    """Say what to change on stderr and in the termination message; return `EXIT_CONFIG` for the exit."""
    print(f"error: {message}", file=sys.stderr, flush=True)
    path = termination_log()
    if path is not None:
        text = message.encode()[:MAX_MESSAGE_BYTES].decode(errors="ignore")  # never half a character
        try:
            path.write_text(text)
        except OSError as e:  # the message still went to stderr (the log)
            print(f"warning: could not write the termination message to {path}: {e}", file=sys.stderr)
    return EXIT_CONFIG
