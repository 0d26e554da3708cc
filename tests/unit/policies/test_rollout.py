"""observedGeneration and Progressing as data: an edit is live once the training group runs it."""

from __future__ import annotations

from typing import Any

from dstj_operator.policies.rollout import RolloutVerdict, evaluate
from tests.unit.policies.builders import CFG, EP, membership, report


def _verdict(**kw: Any) -> RolloutVerdict:
    facts: dict[str, Any] = {"spec_changed": True, "running": True, "membership": membership(3, "w0", "w1"),
                             "progress": report(3, 40, 1), "config_hash": CFG, "endpoint": EP}
    return evaluate(**(facts | kw))


def test_a_group_that_runs_the_edited_spec_and_has_reported_a_step_is_up_to_date() -> None:
    assert _verdict().up_to_date


def test_an_edited_trainer_config_is_not_live_until_a_generation_runs_it() -> None:
    verdict = _verdict(config_hash="feed000000000000")
    assert not verdict.up_to_date and "previous trainer config" in verdict.waiting_for


def test_an_edited_rendezvous_port_is_not_live_until_a_generation_forms_there() -> None:
    verdict = _verdict(endpoint="job-rdzv:29500")
    assert not verdict.up_to_date and "job-rdzv:29500" in verdict.waiting_for


def test_members_on_pods_of_an_older_template_hold_the_rollout() -> None:
    verdict = _verdict(stale_pods=2)
    assert not verdict.up_to_date and "2 members" in verdict.waiting_for


def test_a_generation_published_for_the_edit_is_live_only_after_it_reports_a_step() -> None:
    verdict = _verdict(progress=report(2, 40, 1))
    assert not verdict.up_to_date and "not reported a step" in verdict.waiting_for


def test_with_no_generation_training_the_edit_is_live_at_once() -> None:
    # Suspended, waiting for workers or finished: the next generation is built from the current spec.
    assert _verdict(running=False, config_hash="feed000000000000").up_to_date
    assert _verdict(membership=membership(3, state="suspended"), config_hash="feed000000000000",
                    suspend=True).up_to_date
    assert _verdict(membership=None).up_to_date


def test_without_a_spec_change_a_new_generation_is_not_a_rollout() -> None:
    # A preemption publishes a generation that has not reported yet: replicas and members are not spec edits.
    assert _verdict(spec_changed=False, progress=report(2, 40, 1)).up_to_date


def test_a_rolled_edits_stop_generation_is_not_the_edit_being_live() -> None:
    # The replacements have not trained yet: only a suspension's stopped generation means nothing trains.
    stopping = membership(4, state="suspended")
    verdict = _verdict(membership=stopping, running=False)  # the job gathers its replacements meanwhile
    assert not verdict.up_to_date and "stops the group" in verdict.waiting_for
    assert _verdict(membership=stopping, suspend=True).up_to_date
