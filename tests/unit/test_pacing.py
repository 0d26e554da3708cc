"""Routine progress is mirrored into a job's status at most every so often; transitions at once."""

from __future__ import annotations

from typing import Any

import pytest

from dstj_operator.pacing import ProgressPacer, routine_only

JOB = ("ns", "job")


@pytest.mark.parametrize(("patch", "routine"), [
    ({"progress": {"step": 12, "loss": 2.5, "updated": "t"}}, True),
    ({"progress": {"step": 12, "tokensPerSecond": 9.0, "steadyTokensPerSecond": 8.0, "maxViolation": 0.1}}, True),
    ({"progress": {"step": 12, "generation": 3}}, False),  # a new generation trains: shown at once
    ({"progress": {"step": 12, "state": "finished"}}, False),
    ({"progress": {"step": 12, "lastCheckpointStep": 10}}, False),
    ({"progress": {"step": 12}, "phase": "Running"}, False),
    ({"progress": None}, False),  # the report went away
    ({"conditions": []}, False),
    ({}, False),
])
def test_only_a_report_that_moved_its_counters_is_routine(patch: dict[str, Any], routine: bool) -> None:
    assert routine_only(patch) is routine


def test_a_routine_patch_waits_for_the_interval_since_the_last_write() -> None:
    p = ProgressPacer(30)
    routine = {"progress": {"step": 5}}
    assert p.hold(JOB, routine, now=100.0) is None  # never written by this process: at once
    p.wrote(JOB, 100.0)
    assert p.hold(JOB, routine, now=110.0) == pytest.approx(20.0)
    assert p.hold(JOB, {"progress": {"generation": 1}}, now=110.0) is None
    assert p.hold(("ns", "other"), routine, now=110.0) is None
    assert p.hold(JOB, routine, now=130.0) is None
    p.forget(JOB)
    assert p.hold(JOB, routine, now=101.0) is None


def test_zero_mirrors_every_report() -> None:
    p = ProgressPacer(0)
    p.wrote(JOB, 100.0)
    assert p.hold(JOB, {"progress": {"step": 5}}, now=100.5) is None
