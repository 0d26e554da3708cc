"""Where a worker reads the published membership and writes its progress report.

Locally (tests, `make demo` without a cluster) both are JSON files. In a pod, membership is the
`DeepSeekTrainingJob` status the operator publishes and progress a per-job ConfigMap it watches
(`k8s_membership.py`). Chosen by `DSTJ_MEMBERSHIP` / `DSTJ_PROGRESS`: `k8s:NAMESPACE/NAME`,
or `file:/path` (or a bare path).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Protocol

from pydantic import ValidationError

from dstj_api import Membership, ProgressReport, read_lenient
from dstj_api.contract import ENV_MEMBERSHIP, ENV_PROGRESS
from moe_trainer.checkpoint.storage import write_json_atomically


class MembershipSource(Protocol):
    """Reads the currently published membership (None when nothing is published yet)."""

    def current(self) -> Membership | None: ...


class ProgressSink(Protocol):
    """Publishes rank 0's progress report."""

    def publish(self, report: ProgressReport) -> None: ...


class FileMembershipSource:
    """Membership from a JSON file (written atomically by whoever plays the operator)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def current(self) -> Membership | None:
        """The file's membership, or None while it is absent or not (yet) valid (unknown fields are ignored)."""
        try:
            return read_lenient(Membership, json.loads(self.path.read_text()), str(self.path))
        except (FileNotFoundError, ValidationError, ValueError):
            return None

    def publish(self, membership: Membership) -> None:
        """Write a new membership (tests and local runs play the operator with this)."""
        write_json_atomically(self.path, membership.model_dump_json(by_alias=True))


class FileProgressSink:
    """Progress as a JSON file, replaced atomically on each report."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def publish(self, report: ProgressReport) -> None:
        """Replace the file with this report."""
        write_json_atomically(self.path, report.model_dump_json(by_alias=True))


def _file_path(spec: str) -> Path:
    return Path(spec.removeprefix("file:"))


def membership_source(spec: str) -> MembershipSource:
    """The source a spec names: `k8s:NAMESPACE/JOB` (the job's status) or `file:PATH` (or a bare path)."""
    if spec.startswith("k8s:"):
        from moe_trainer.runtime.k8s_membership import JobStatusMembershipSource

        return JobStatusMembershipSource(spec)
    return FileMembershipSource(_file_path(spec))


def membership_from_env() -> MembershipSource | None:
    """The source named by DSTJ_MEMBERSHIP, or None for a run with no membership (plain local run)."""
    spec = os.environ.get(ENV_MEMBERSHIP)
    return membership_source(spec) if spec else None


def progress_from_env() -> ProgressSink | None:
    """The sink named by DSTJ_PROGRESS, or None. The API server's is paced (`progress_pace`: at most one
    routine report per 10 s) and written from a thread of its own (`progress_writer`: a slow write never stalls
    training); a local file takes every report, at once."""
    spec = os.environ.get(ENV_PROGRESS)
    if not spec:
        return None
    if spec.startswith("k8s:"):
        from moe_trainer.runtime.k8s_membership import ConfigMapProgressSink
        from moe_trainer.runtime.progress_pace import PacedProgressSink
        from moe_trainer.runtime.progress_writer import BackgroundProgressSink

        return PacedProgressSink(BackgroundProgressSink(ConfigMapProgressSink(spec)))
    return FileProgressSink(_file_path(spec))
