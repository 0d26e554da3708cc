"""The scale policy as data: which generation to publish, which workers to remove or create."""

from __future__ import annotations

from dataclasses import replace

from dstj_api import Membership
from dstj_operator.decide import EndKind
from dstj_operator.policies.scale import missing_indices, next_membership, republished, to_delete
from tests.unit.policies.builders import CFG, EP, job_spec, membership, worker


def test_the_first_generation_is_published_once_enough_workers_are_ready() -> None:
    assert next_membership(None, [worker(0), worker(1, ready=False)], 2, 2, EP, CFG) is None
    m = next_membership(None, [worker(0), worker(1)], 2, 2, EP, CFG)
    assert m is not None and (m.generation, m.members, m.handoff_from) == (0, ["w0", "w1"], None)


def test_a_lost_member_bumps_the_generation_with_a_handoff_for_the_stop_checkpoint() -> None:
    # A preempted member checkpoints with the others before it goes: that checkpoint must commit.
    current = membership(4, "w0", "w1", "w2")
    m = next_membership(current, [worker(0), worker(1), worker(2, ready=False, terminating=True)], 3, 1, EP, CFG)
    assert m is not None and (m.generation, m.members, m.handoff_from) == (5, ["w0", "w1"], 4)


def test_a_new_ready_worker_grows_the_group_and_hands_off_from_the_old_one() -> None:
    current = membership(2, "w0", "w1")
    m = next_membership(current, [worker(0), worker(1), worker(2)], 3, 1, EP, CFG)
    assert m is not None and (m.world_size, m.handoff_from) == (3, 2)


def test_an_unchanged_member_set_publishes_nothing() -> None:
    current = membership(2, "w0", "w1")
    assert next_membership(current, [worker(0), worker(1)], 2, 1, EP, CFG) is None


def test_below_min_replicas_the_job_waits_on_its_last_generation() -> None:
    current = membership(2, "w0", "w1")
    assert next_membership(current, [worker(0), worker(1, ready=False)], 2, 2, EP, CFG) is None


def test_scaling_down_keeps_the_lowest_indices_and_hands_off() -> None:
    current = membership(1, "w0", "w1", "w2")
    m = next_membership(current, [worker(0), worker(1), worker(2)], 2, 1, EP, CFG)
    assert m is not None and (m.members, m.handoff_from) == (["w0", "w1"], 1)


def test_a_member_whose_readiness_probe_fails_keeps_its_seat() -> None:
    # A probe timing out on a loaded node must not stop the group, nor start it again when it passes.
    current = membership(3, "w0", "w1")
    assert next_membership(current, [worker(0), worker(1, ready=False)], 2, 2, EP, CFG) is None


def test_a_member_on_a_lost_node_loses_its_seat_at_once() -> None:
    current = membership(3, "w0", "w1", "w2")
    m = next_membership(current, [worker(0), worker(1), worker(2, ready=False, node_lost=True)], 3, 1, EP, CFG)
    assert m is not None and m.members == ["w0", "w1"]


def test_readiness_admits_newcomers_only() -> None:
    current = membership(3, "w0")
    assert next_membership(current, [worker(0), worker(1, ready=False)], 2, 1, EP, CFG) is None


def test_ended_and_terminating_workers_are_replaced_at_once() -> None:
    workers = [worker(0), worker(1, ready=False, terminating=True), worker(2, ready=False, end=EndKind.PREEMPTED)]
    assert missing_indices(workers, 4) == [1, 2, 3]


def test_ended_workers_and_those_above_replicas_are_deleted_but_terminating_ones_are_left_alone() -> None:
    workers = [worker(0), worker(1, ready=False, end=EndKind.PREEMPTED), worker(2), worker(3, terminating=True)]
    assert [w.name for w in to_delete(job_spec(replicas=2, minReplicas=1), workers)] == ["w1", "w2"]


def test_the_last_crashed_pod_of_an_index_stays_until_its_replacement_runs() -> None:
    old = replace(worker(1, ready=False, end=EndKind.CRASHED, created="2026-12-01T10:00:00Z"), name="w1-old")
    last = worker(1, ready=False, end=EndKind.CRASHED, created="2026-12-01T10:05:00Z")
    starting = worker(1, ready=False, phase="Pending")
    spec = job_spec(replicas=2, minReplicas=1)
    assert [w.name for w in to_delete(spec, [worker(0), old, last, starting])] == ["w1-old"]
    running = worker(1, ready=False, phase="Running")
    assert [w.name for w in to_delete(spec, [worker(0), old, last, running])] == ["w1-old", "w1"]


def test_a_suspended_job_deletes_every_worker() -> None:
    workers = [worker(0), worker(1)]
    assert [w.name for w in to_delete(job_spec(suspend=True), workers)] == ["w0", "w1"]


def test_republishing_keeps_the_members_under_a_new_generation_without_a_handoff() -> None:
    current = Membership(generation=5, world_size=2, members=["w0", "w1"], handoff_from=4)
    again = republished(current)
    assert (again.generation, again.members, again.handoff_from) == (6, ["w0", "w1"], None)


def test_an_edited_rendezvous_port_publishes_the_same_members_at_the_new_endpoint() -> None:
    current = membership(2, "w0", "w1")
    m = next_membership(current, [worker(0), worker(1)], 2, 1, "job-rdzv:29500", CFG)
    assert m is not None and (m.generation, m.members, m.rdzv_endpoint) == (3, ["w0", "w1"], "job-rdzv:29500")


def test_an_edited_trainer_config_publishes_the_same_members_with_a_handoff_and_the_new_digest() -> None:
    # The running group stops at a step boundary and commits its checkpoint; the members rejoin on the new config.
    m = next_membership(membership(4, "w0", "w1"), [worker(0), worker(1)], 2, 1, EP, "feed000000000000")
    assert m is not None
    assert (m.generation, m.members, m.handoff_from, m.config_hash) == (5, ["w0", "w1"], 4, "feed000000000000")


def test_a_generation_published_before_config_digests_is_taken_as_current_so_an_upgrade_restarts_nothing() -> None:
    assert next_membership(membership(4, "w0", "w1", config=None), [worker(0), worker(1)], 2, 1, EP, CFG) is None
