"""The typed status: read leniently, written without nulls, diffed into merge patches."""

from __future__ import annotations

from dstj_operator.patch import merge_patch
from dstj_operator.status import JobStatus


def test_a_status_from_an_operator_that_kept_bookkeeping_at_the_top_level_keeps_its_counts() -> None:
    status = JobStatus.read({"phase": "Running", "crashes": 1, "countedPods": ["w1"], "stallGeneration": 3})
    assert (status.bookkeeping.counted_pods, status.bookkeeping.stall_generation, status.crashes) == (["w1"], 3, 1)
    assert "countedPods" not in status.dump()


def test_fields_this_operator_does_not_know_are_ignored_when_reading() -> None:
    status = JobStatus.read({"phase": "Running", "autoscaling": {"targetReplicas": 3}})
    assert status.phase == "Running"


def test_a_progress_report_that_does_not_parse_costs_only_the_report() -> None:
    status = JobStatus.read({"phase": "Running", "crashes": 2, "progress": {"step": "many"}})
    assert (status.phase, status.crashes, status.progress) == ("Running", 2, None)


def test_the_written_status_has_no_nulls() -> None:
    dumped = JobStatus(phase="Pending").dump()
    assert None not in dumped.values() and "membership" not in dumped


def test_a_merge_patch_sets_changes_removes_with_null_and_replaces_lists() -> None:
    old = {"phase": "Pending", "layout": "2x1", "bookkeeping": {"countedPods": ["a"], "syncFailures": 1},
           "conditions": [{"type": "Synced"}]}
    new = {"phase": "Running", "bookkeeping": {"countedPods": ["a", "b"], "syncFailures": 1},
           "conditions": [{"type": "Synced"}]}
    assert merge_patch(old, new) == {"phase": "Running", "layout": None, "bookkeeping": {"countedPods": ["a", "b"]}}
    assert merge_patch(new, new) == {}


def test_a_field_a_newer_trainer_added_to_the_report_keeps_the_report() -> None:
    report = {"step": 3, "totalSteps": 9, "generation": 1, "worldSize": 2, "expertParallel": 2, "dataParallel": 1,
              "updated": "2026-12-01T12:00:00Z", "tokensPerSecondSteady": 10.0}
    status = JobStatus.read({"phase": "Running", "progress": report})
    assert status.progress is not None and status.progress.step == 3
