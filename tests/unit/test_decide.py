"""Operator decisions as data: membership generations, preemption vs crash, missing workers."""

from __future__ import annotations

from typing import Any

import pytest

from dstj_api import EXIT_CONFIG, EXIT_STOPPED, Membership
from dstj_operator.decide import (
    MESSAGE_CHARS,
    EndKind,
    Worker,
    classify_end,
    join_overdue,
    missing_indices,
    next_membership,
    observe,
)

EP = "job-rdzv:29400"


def worker(index: int, ready: bool = True, **kw: Any) -> Worker:
    return Worker(name=f"w{index}", index=index, ready=ready, terminating=kw.pop("terminating", False),
                  phase=kw.pop("phase", "Running"), **kw)


def test_the_first_generation_is_published_once_enough_workers_are_ready() -> None:
    assert next_membership(None, [worker(0), worker(1, ready=False)], 2, 2, EP) is None
    m = next_membership(None, [worker(0), worker(1)], 2, 2, EP)
    assert m is not None and (m.generation, m.members, m.handoff_from) == (0, ["w0", "w1"], None)


def test_a_lost_member_bumps_the_generation_with_a_handoff_for_the_stop_checkpoint() -> None:
    # A preempted member checkpoints with the others before it goes: that checkpoint must commit.
    current = Membership(generation=4, world_size=3, members=["w0", "w1", "w2"])
    m = next_membership(current, [worker(0), worker(1), worker(2, ready=False, terminating=True)], 3, 1, EP)
    assert m is not None and (m.generation, m.members, m.handoff_from) == (5, ["w0", "w1"], 4)


def test_a_new_ready_worker_grows_the_group_and_hands_off_from_the_old_one() -> None:
    current = Membership(generation=2, world_size=2, members=["w0", "w1"])
    m = next_membership(current, [worker(0), worker(1), worker(2)], 3, 1, EP)
    assert m is not None and (m.world_size, m.handoff_from) == (3, 2)


def test_an_unchanged_member_set_publishes_nothing() -> None:
    current = Membership(generation=2, world_size=2, members=["w0", "w1"])
    assert next_membership(current, [worker(0), worker(1)], 2, 1, EP) is None


def test_below_min_replicas_the_job_waits_on_its_last_generation() -> None:
    current = Membership(generation=2, world_size=2, members=["w0", "w1"])
    assert next_membership(current, [worker(0), worker(1, ready=False)], 2, 2, EP) is None


def test_scaling_down_keeps_the_lowest_indices_and_hands_off() -> None:
    current = Membership(generation=1, world_size=3, members=["w0", "w1", "w2"])
    m = next_membership(current, [worker(0), worker(1), worker(2)], 2, 1, EP)
    assert m is not None and (m.members, m.handoff_from) == (["w0", "w1"], 1)


def test_a_member_whose_readiness_probe_fails_keeps_its_seat() -> None:
    # A probe timing out on a loaded node must not stop the group, nor start it again when it passes.
    current = Membership(generation=3, world_size=2, members=["w0", "w1"])
    assert next_membership(current, [worker(0), worker(1, ready=False)], 2, 2, EP) is None


def test_a_member_on_a_lost_node_loses_its_seat_at_once() -> None:
    current = Membership(generation=3, world_size=3, members=["w0", "w1", "w2"])
    m = next_membership(current, [worker(0), worker(1), worker(2, ready=False, node_lost=True)], 3, 1, EP)
    assert m is not None and m.members == ["w0", "w1"]


def test_readiness_admits_newcomers_only() -> None:
    current = Membership(generation=3, world_size=1, members=["w0"])
    assert next_membership(current, [worker(0), worker(1, ready=False)], 2, 1, EP) is None


def _pod(ready: str, containers_ready: str) -> dict[str, Any]:
    return {"metadata": {"name": "w0", "labels": {"i": "0"}},
            "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": ready},
                                                          {"type": "ContainersReady", "status": containers_ready}]}}


@pytest.mark.parametrize(("ready", "containers_ready", "node_lost"), [
    ("True", "True", False), ("False", "False", False), ("False", "True", True)])
def test_a_lost_node_is_told_from_a_failed_probe(ready: str, containers_ready: str, node_lost: bool) -> None:
    # The node controller sets only the pod's Ready to False; a failed probe sets ContainersReady too.
    w = observe(_pod(ready, containers_ready), "i")
    assert (w.ready, w.node_lost) == (ready == "True", node_lost)


def test_a_generation_that_never_reports_is_published_again_after_the_join_timeout() -> None:
    current = Membership(generation=5, world_size=2, members=["w0", "w1"])
    assert join_overdue(current, report_generation=4, generation_age_s=600, join_timeout_s=600)
    assert not join_overdue(current, report_generation=4, generation_age_s=599, join_timeout_s=600)
    assert not join_overdue(current, report_generation=5, generation_age_s=6000, join_timeout_s=600)  # it formed
    assert not join_overdue(current, report_generation=None, generation_age_s=599, join_timeout_s=600)
    suspended = Membership(generation=6, world_size=0, state="suspended")
    assert not join_overdue(suspended, report_generation=5, generation_age_s=6000, join_timeout_s=600)


def failed(code: int, reason: str = "Error", message: str | None = None) -> dict[str, Any]:
    terminated = {"exitCode": code, "reason": reason} | ({"message": message} if message is not None else {})
    return {"status": {"phase": "Failed", "containerStatuses": [{"state": {"terminated": terminated}}]}}


@pytest.mark.parametrize(("pod", "kind"), [
    pytest.param({"status": {"phase": "Failed", "reason": "Evicted"}}, EndKind.PREEMPTED, id="evicted"),
    pytest.param({"status": {"phase": "Running", "conditions": [
        {"type": "DisruptionTarget", "status": "True", "reason": "PreemptionByScheduler"}]}},
        EndKind.PREEMPTED, id="disruption-target"),
    pytest.param(failed(EXIT_STOPPED), EndKind.PREEMPTED, id="trainer-stopped-on-request"),
    pytest.param(failed(143), EndKind.PREEMPTED, id="sigterm"),
    pytest.param(failed(1), EndKind.CRASHED, id="non-zero-exit"),
    pytest.param(failed(137, "OOMKilled"), EndKind.CRASHED, id="oom-killed"),
    pytest.param(failed(EXIT_CONFIG, message="fix it"), EndKind.MISCONFIGURED, id="config-error"),
    pytest.param({"status": {"phase": "Succeeded"}}, EndKind.SUCCEEDED, id="succeeded"),
    pytest.param({"status": {"phase": "Running"}}, None, id="still-running"),
])
def test_preemptions_are_told_from_crashes(pod: dict[str, Any], kind: EndKind | None) -> None:
    assert classify_end(pod)[0] == kind


def test_ended_and_terminating_workers_are_replaced_at_once() -> None:
    workers = [worker(0), worker(1, ready=False, terminating=True), worker(2, ready=False, end=EndKind.PREEMPTED)]
    assert missing_indices(workers, 4) == [1, 2, 3]


def test_a_config_error_is_a_misconfiguration_whose_reason_is_the_workers_message() -> None:
    message = ("checkpoint.resumeFrom '/ckpt/none' (checkpoint.resumeFrom, or the job's spec.checkpoint.resumeFrom) "
               "holds no checkpoint: name a checkpoint directory ...\n")
    assert classify_end(failed(EXIT_CONFIG, message=message)) == (EndKind.MISCONFIGURED, message.strip())


def test_a_long_termination_message_is_trimmed_to_stay_readable_in_conditions() -> None:
    kind, reason = classify_end(failed(EXIT_CONFIG, message="x" * 5000))
    assert kind is EndKind.MISCONFIGURED and len(reason) == MESSAGE_CHARS and reason.endswith("...")


def test_a_config_error_without_a_message_still_says_what_kind_of_end_it_was() -> None:
    assert classify_end(failed(EXIT_CONFIG)) == (EndKind.MISCONFIGURED,
                                                 "exit code 78 (a setting only run time could check)")
