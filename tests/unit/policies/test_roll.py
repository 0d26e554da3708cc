"""Rolled edits as data: replacements start beside the running pods, take over at one step boundary, or wait."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from dstj_operator.decide import Worker
from dstj_operator.policies.roll import RollPlan, plan
from tests.unit.policies.builders import NOW, ago, job_spec, membership, report, worker

NEW, OLD = "new", "old"


def _w(index: int, template: str, ready: bool = True, **kw: Any) -> Worker:
    return replace(worker(index, ready=ready, **kw), name=f"{template}{index}", template=template)


def _plan(live: list[Worker], current: Any = None, progress: Any = None, **kw: Any) -> RollPlan:
    spec = job_spec(replicas=2, minReplicas=1, **kw)
    return plan(spec, live, current, progress, NEW, ago(5), NOW)


def test_without_pods_of_another_template_every_live_worker_is_a_candidate() -> None:
    live = [_w(0, NEW), _w(1, NEW), replace(worker(2), template=None)]  # unannotated: an older operator's
    assert _plan(live) == RollPlan(candidates=live)


def test_replacements_start_beside_the_running_group_which_keeps_training_until_enough_are_ready() -> None:
    old = [_w(0, OLD), _w(1, OLD)]
    p = _plan([*old, _w(0, NEW, ready=False)], membership(3, "old0", "old1"))
    assert p.candidates == old and p.surge == [1] and not p.stop and p.stale_members == 2


def test_once_as_many_replacements_are_ready_as_the_group_has_members_the_group_is_stopped() -> None:
    p = _plan([_w(0, OLD), _w(1, OLD), _w(0, NEW), _w(1, NEW)], membership(3, "old0", "old1"))
    assert p.stop and p.candidates == [] and p.retire == []


def test_the_replacements_wait_for_the_stopped_groups_checkpoint_report() -> None:
    live = [_w(0, OLD), _w(1, OLD), _w(0, NEW), _w(1, NEW)]
    stopping = membership(4, state="suspended").model_copy(update={"handoff_from": 3})
    assert _plan(live, stopping, report(3, 40, 1)).hold
    p = _plan(live, stopping, report(3, 41, 0, state="stopped"))
    assert [w.name for w in p.candidates] == ["new0", "new1"] and [w.name for w in p.retire] == ["old0", "old1"]


def test_a_stopped_group_that_never_reports_holds_the_replacements_only_for_the_join_timeout() -> None:
    live = [_w(0, OLD), _w(1, OLD), _w(0, NEW), _w(1, NEW)]
    stopping = membership(4, state="suspended").model_copy(update={"handoff_from": 3})
    spec = job_spec(replicas=2, minReplicas=1, rendezvous={"joinTimeoutSeconds": 10})
    assert plan(spec, live, stopping, report(3, 40, 1), NEW, ago(5), NOW).hold
    assert not plan(spec, live, stopping, report(3, 40, 1), NEW, ago(11), NOW).hold


def test_a_replacement_that_cannot_start_blocks_the_rollout_and_says_why_while_the_old_pods_train() -> None:
    old = [_w(0, OLD), _w(1, OLD)]
    stuck = _w(0, NEW, ready=False, stuck="ErrImagePull: failed to pull image 'nope:1': not found")
    p = _plan([*old, stuck, _w(1, NEW, ready=False)], membership(3, "old0", "old1"))
    assert p.candidates == old and not p.stop
    assert "cannot start" in p.blocked and "ErrImagePull" in p.blocked and "new0" in p.blocked


def test_old_pods_nothing_trains_on_are_replaced_at_once() -> None:
    # E.g. an image edited before the first generation formed: there is no group to keep training.
    p = _plan([_w(0, OLD), _w(1, NEW, ready=False)], None)
    assert [w.name for w in p.retire] == ["old0"] and p.surge == [0] and not p.stop


def test_once_the_replacements_train_the_old_pods_are_retired() -> None:
    p = _plan([_w(0, OLD), _w(0, NEW), _w(1, NEW)], membership(5, "new0", "new1"))
    assert [w.name for w in p.retire] == ["old0"] and [w.name for w in p.candidates] == ["new0", "new1"]
