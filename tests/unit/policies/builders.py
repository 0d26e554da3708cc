"""Fluent builders for policy tests: a spec, a status, workers and a fixed clock, as plain data."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from dstj_api import Membership, ProgressReport
from dstj_operator.decide import Worker
from dstj_operator.spec import DeepSeekTrainingJobSpec
from dstj_operator.status import Bookkeeping, JobStatus, stamp

NOW = datetime(2026, 12, 1, 12, 0, 0, tzinfo=UTC)


def ago(seconds: float) -> str:
    """The RFC 3339 stamp `seconds` before NOW."""
    return stamp(NOW - timedelta(seconds=seconds))


def job_spec(**fields: Any) -> DeepSeekTrainingJobSpec:
    """A spec from camelCase fields (nested dicts allowed), defaults elsewhere."""
    return DeepSeekTrainingJobSpec.model_validate({"replicas": 2, **fields})


def worker(index: int, ready: bool = True, **kw: Any) -> Worker:
    """Worker `index`, named w<index>, Running and Ready unless told otherwise."""
    return Worker(name=f"w{index}", index=index, ready=ready, terminating=kw.pop("terminating", False),
                  phase=kw.pop("phase", "Running"), **kw)


EP = "job-rdzv:29400"
"""The rendezvous endpoint of `job_spec()`'s job."""
CFG = "c0ffee0000000000"
"""The digest of the trainer config the generations of these tests run."""


def membership(generation: int, *members: str, state: str = "running", endpoint: str = EP,
               config: str | None = CFG) -> Membership:
    """A published generation of these members, running trainer config `config`."""
    return Membership.model_validate({"generation": generation, "worldSize": len(members), "members": list(members),
                                      "state": state, "rdzvEndpoint": endpoint, "configHash": config})


def report(generation: int, step: int, updated_ago: float, **kw: Any) -> ProgressReport:
    """A progress report of `generation`, written `updated_ago` seconds before NOW."""
    return ProgressReport.model_validate({"step": step, "totalSteps": kw.pop("total", 100), "generation": generation,
                                          "worldSize": 2, "expertParallel": 2, "dataParallel": 1,
                                          "updated": NOW - timedelta(seconds=updated_ago), **kw})


def job_status(*, membership: Membership | None = None, progress: ProgressReport | None = None,
               conditions: list[dict[str, Any]] | None = None, **book: Any) -> JobStatus:
    """A status with these parts; `book` fills the bookkeeping (snake_case)."""
    return JobStatus.model_validate({"membership": membership, "progress": progress,
                                     "conditions": conditions or [], "bookkeeping": Bookkeeping(**book)})
