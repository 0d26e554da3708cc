"""Suspend publishes one suspended generation that hands off; success needs the last step finished."""

from __future__ import annotations

from dstj_operator.policies import success, suspend
from tests.unit.policies.builders import membership, report


def test_suspending_publishes_a_suspended_generation_that_may_commit_its_stop_checkpoint() -> None:
    new = suspend.membership(membership(3, "w0", "w1"), "j-rdzv:29400")
    assert new is not None and (new.generation, new.world_size, new.state, new.handoff_from) == (4, 0, "suspended", 3)
    assert suspend.membership(new, "j-rdzv:29400") is None  # already published: nothing more


def test_only_a_finished_report_at_the_last_step_is_success() -> None:
    assert success.finished(report(2, 100, 0, total=100, state="finished"))
    assert not success.finished(report(2, 60, 0, total=100, state="finished"))
    assert not success.finished(report(2, 100, 0, total=100, state="stopped"))
    assert not success.finished(None)

