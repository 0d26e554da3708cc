"""ttlSecondsAfterFinished deletes a finished job once its time has passed."""

from __future__ import annotations

import pytest

from dstj_operator.policies import ttl
from dstj_operator.status import JobStatus
from tests.unit.policies.builders import NOW, ago, job_spec


@pytest.mark.parametrize(("ttl_s", "finished_ago", "delete", "recheck"), [
    pytest.param(None, 1000, False, None, id="no-ttl-keeps-the-job"),
    pytest.param(60, 10, False, 50.0, id="before-the-ttl"),
    pytest.param(60, 60, True, None, id="at-the-ttl"),
    pytest.param(0, 0, True, None, id="zero-deletes-at-once"),
])
def test_a_finished_job_is_deleted_after_its_ttl(ttl_s: int | None, finished_ago: float, delete: bool,
                                                 recheck: float | None) -> None:
    status = JobStatus(phase="Succeeded", completion_time=ago(finished_ago))
    verdict = ttl.evaluate(job_spec(ttlSecondsAfterFinished=ttl_s), status, NOW)
    assert (verdict.delete, verdict.recheck_in) == (delete, recheck)


def test_a_job_whose_spec_cannot_be_read_is_never_deleted_by_ttl() -> None:
    assert not ttl.evaluate(None, JobStatus(completion_time=ago(10**6)), NOW).delete
