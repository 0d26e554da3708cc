"""The operator at the API server's limits: throttled (429) and cut off (every watch dropped), it still converges.

A private cluster of simulated nodes (`benchmarks.fleet.run`) whose API server puts every request of the
operator's user in a priority level of 3 seats that answers 429 to whatever does not fit at once (API
Priority and Fairness set tight). Jobs are brought up and preempted there; the API server is killed and
restarted as the preemptions start. The trainers report only on a new generation, never on a timer: a pass
that failed on a 429 and did not requeue itself would wait for an event that never comes.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.fleet.run import FleetSpec, run

pytestmark = pytest.mark.cluster


def test_a_throttled_operator_that_loses_its_watches_backs_off_and_brings_every_job_to_its_target(
        bin_dir: Path, tmp_path: Path) -> None:
    spec = FleetSpec(jobs=8, workers=2, deletions_per_s=1.0, window_s=8.0, report_every_s=1e6,
                     bring_up_timeout_s=240.0, tight_apf=True, restart_apiserver=True)

    result = run(spec, tmp_path / "operator.log", progress=lambda _: None)

    # Every job at its target, one live worker per index (at every moment), no generation lost or gone back,
    # a new generation after every deletion, and the operator still running.
    print({k: round(v, 2) for k, v in result.numbers.items()})  # shown with -s: the 429s, the retries
    assert result.problems == [], "\n".join(result.problems[:20])
    assert result.numbers["deletions_total"] >= 5
    # Not vacuous: the API server itself counted requests of the operator it refused with 429.
    assert result.numbers["operator_requests_rejected_429"] > 0, result.numbers
