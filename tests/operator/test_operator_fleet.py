"""The fleet path at a small N: 20 jobs on simulated nodes, preempted and with a node reclaimed under them,
all come back whole.

Runs `benchmarks.fleet.run` on a private cluster of its own (own state directory, ports and etcd; no
process nodes, so no network namespaces) beside the session cluster: the assertions are about
correctness, never speed (the speed goals live in `python -m benchmarks.fleet`).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.fleet.run import FleetSpec, run

pytestmark = pytest.mark.cluster


def test_twenty_preempted_jobs_on_simulated_nodes_each_reach_their_target_with_one_worker_per_index(
        bin_dir: Path, tmp_path: Path) -> None:
    # A reclaim 5 s into the window takes one of the two nodes, about half of every job's workers at once.
    spec = FleetSpec(jobs=20, workers=4, deletions_per_s=2.0, window_s=15.0, bring_up_timeout_s=300.0,
                     reclaim_every_s=5.0)

    result = run(spec, tmp_path / "operator.log", progress=lambda _: None)

    # Every job at its target, one live worker per index, no deletion left without a new generation.
    assert result.problems == [], "\n".join(result.problems[:20])
    assert result.numbers["deletions_total"] >= 10
    assert result.numbers["nodes_reclaimed"] >= 1
    assert result.numbers["deletions_followed_by_a_generation"] == result.numbers["deletions_total"]
