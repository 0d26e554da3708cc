"""The demo's record knows which group ran every step: world sizes are exact, not `logEvery` steps late."""

from __future__ import annotations

from typing import Any, cast

import pytest

from localcluster.kubectl import Kubectl
from scripts.timeline import JobWatcher, Sample, Span, world_at, world_segments


def a_report(step: int, generation: int, world: int, start: int | None, t: float = 0.0) -> Sample:
    """A sample as the watcher records it from the job's status."""
    fields: dict[str, Any] = {"t": t, "phase": "Running", "generation": generation, "members": world, "step": step,
                              "loss": 3.0, "world": world, "trained_generation": generation, "start_step": start,
                              "layout": None, "preemptions": 0, "crashes": 0, "checkpoint": None}
    return Sample(**fields)


def watcher_of(samples: list[Sample]) -> JobWatcher:
    return JobWatcher(kube=cast(Kubectl, None), namespace="ns", name="job", samples=samples)


# A node reclaimed at step 53 (the group checkpoints and stops there), back before step 74; reports every 10 steps.
RECLAIM = [a_report(10, 0, 3, 0), a_report(50, 0, 3, 0), a_report(60, 1, 2, 53), a_report(70, 1, 2, 53),
           a_report(80, 2, 3, 74), a_report(100, 2, 3, 74)]


@pytest.mark.parametrize(("step", "world"), [
    pytest.param(1, 3, id="the first step ran at the starting size"),
    pytest.param(53, 3, id="the stop checkpoint's step ran before the reclaim"),
    pytest.param(54, 2, id="the first step after the reclaim ran at two, before any report said so"),
    pytest.param(74, 2, id="the last step before the node came back ran at two"),
    pytest.param(75, 3, id="the first step after the regrowth ran at three"),
    pytest.param(100, 3, id="the last step ran at three"),
])
def test_every_step_has_the_world_size_of_the_group_that_ran_it(step: int, world: int) -> None:
    assert world_at(world_segments(watcher_of(RECLAIM).spans()), step) == world


def test_the_world_size_changes_at_the_step_a_generation_resumed_from() -> None:
    assert world_segments(watcher_of(RECLAIM).spans()) == [(0, 3), (53, 2), (74, 3)]


def test_steps_a_failed_group_ran_past_its_checkpoint_belong_to_the_group_that_ran_them_again() -> None:
    # Generation 0 reached step 57 and lost a worker without notice; generation 1 resumed from step 50.
    segments = world_segments([Span(0, 0, 3), Span(1, 50, 2)])
    assert segments == [(0, 3), (50, 2)]
    assert [world_at(segments, s) for s in (50, 51, 57)] == [3, 2, 2]


def test_generations_that_resume_where_the_last_one_did_at_the_same_size_make_one_segment() -> None:
    assert world_segments([Span(0, 0, 2), Span(1, 30, 2), Span(2, 30, 3)]) == [(0, 2), (30, 3)]


def test_no_step_has_a_world_size_before_any_report() -> None:
    assert world_at(world_segments([]), 1) is None


def test_reports_of_an_older_trainer_count_from_their_first_step_as_before() -> None:
    old = [a_report(10, 0, 3, None), a_report(60, 1, 2, None), a_report(70, 1, 2, None)]
    assert world_segments(watcher_of(old).spans()) == [(9, 3), (59, 2)]
