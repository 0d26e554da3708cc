"""Reconfiguration in place: a worker process outlives generations, and its state comes from the checkpoint."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import torch

from dstj_api import Membership, TrainerConfig
from dstj_api.contract import EXIT_STOPPED
from moe_trainer.checkpoint.checkpointer import Checkpointer
from moe_trainer.runtime.metrics import TrainerMetrics
from moe_trainer.runtime.rendezvous import seat_in
from moe_trainer.training.trainer import Trainer, single_process
from tests.trainer.elastic_harness import Cluster, wait_for
from tests.trainer.test_elastic import _steps, first_step, last_step


def params(trainer: Trainer) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}


def test_a_reconfigured_trainer_continues_from_the_checkpoint_not_from_what_it_did_since(
    tiny_config: TrainerConfig, tmp_path: Path
) -> None:
    straight = Trainer(tiny_config)
    for _ in range(5):
        straight.train_step()

    trainer = Trainer(tiny_config)
    for _ in range(3):
        trainer.train_step()
    ckpt = Checkpointer(tmp_path, 1, 0, lambda final: True, rank=0, process_group=None)
    ckpt.save(trainer.checkpoint_state(), trainer.step, asynchronous=False)
    trainer.train_step()  # progress that was never committed, then a step that failed half way
    trainer._loss_sum(trainer._batch(trainer.train_data, [0, 1])).ce.backward()

    trainer.reconfigure(single_process())
    ckpt.load_latest(trainer.checkpoint_state())
    trainer.restored()
    assert trainer.step == 3
    for _ in range(2):
        trainer.train_step()
    for name, value in params(straight).items():
        torch.testing.assert_close(params(trainer)[name], value, rtol=0, atol=0, msg=name)


@pytest.mark.parametrize(("membership", "member", "node"), [
    pytest.param(Membership(generation=3, world_size=2, members=["a", "b"]), "b", 1, id="listed-second"),
    pytest.param(Membership(generation=3, world_size=2, members=["a", "b"]), "c", None, id="not-listed"),
    pytest.param(Membership(generation=3, world_size=2, members=["a", "b"], state="suspended"), "a", None,
                 id="suspended"),
])
def test_a_seat_comes_only_from_the_published_member_list(membership: Membership, member: str,
                                                          node: int | None) -> None:
    seat = seat_in(membership, member, "run", "host:1", local_rank=1, nproc=2)
    if node is None:
        assert seat is None
    else:
        assert seat is not None and (seat.node, seat.world_size, seat.prefix) == (node, 4, "run-g3")


def test_metrics_move_to_the_rank_of_the_current_generation_and_keep_the_restart_count() -> None:
    metrics = TrainerMetrics(rank=0, port=None)
    metrics.count_restarts(2)
    metrics.bind(1)
    metrics.step.set(7)
    samples = {(s.name, s.labels["rank"]): s.value for m in metrics.registry.collect() for s in m.samples}
    assert samples[("dstj_trainer_step", "1")] == 7
    assert samples[("dstj_trainer_restarts_total", "1")] == 2
    assert not any(rank == "0" for _, rank in samples)


def _pids(log: str) -> dict[int, int]:
    """generation -> pid, from the supervisor's 'generation N: rank R of W (pid P)' lines."""
    return {int(g): int(pid) for g, pid in re.findall(r"generation (\d+): rank \d+ of \d+ \(pid (\d+)\)", log)}


def _config(cfg: TrainerConfig, tmp_path: Path, steps: int) -> TrainerConfig:
    data = cfg.model_dump()
    data["train"] |= {"steps": steps, "global_batch": 12, "micro_batch": 2, "log_every": 1}
    data["checkpoint"] = {"dir": str(tmp_path / "ckpt"), "interval": 50, "keep": 2}
    return TrainerConfig.model_validate(data)


@pytest.mark.slow
def test_a_member_keeps_its_process_across_generations_and_a_removed_member_waits_without_training(
    tiny_config: TrainerConfig, tmp_path: Path
) -> None:
    cluster = Cluster(tmp_path, _config(tiny_config, tmp_path, steps=40), {"DSTJ_CACHE": os.environ["DSTJ_CACHE"]})
    try:
        cluster.start("a")
        cluster.publish(["a"])
        wait_for(lambda: any(s >= 2 for s in _steps(tmp_path, 0)), 90, "generation 0 to finish step 2")
        cluster.start("b")
        cluster.publish(["a", "b"], handoff=True)  # scale up
        wait_for(lambda: any(s >= last_step(tmp_path, 0) + 2 for s in _steps(tmp_path, 1)), 90,
                 "generation 1 to train two steps")
        cluster.publish(["b"], handoff=True)  # scale down: a is no longer a member
        assert cluster.agents["b"].wait(120) == 0, cluster.log("b")[-2000:]

        pids = _pids(cluster.log("a"))
        assert pids == {0: cluster.agents["a"].pid, 1: cluster.agents["a"].pid}  # one process, two generations
        # Planned resizes hand off at a step boundary: no finished step is lost, none repeated.
        assert first_step(tmp_path, 1) == last_step(tmp_path, 0) + 1
        assert first_step(tmp_path, 2) == last_step(tmp_path, 1) + 1
        assert last_step(tmp_path, 2) == 40
        # The removed member stopped with its group and waits (it trains nothing in generation 2)
        # until its pod is deleted: then it exits as preempted.
        assert cluster.agents["a"].poll() is None
        cluster.terminate("a")
        assert cluster.agents["a"].wait(60) == EXIT_STOPPED, cluster.log("a")[-2000:]
    finally:
        cluster.close()


@pytest.mark.slow
def test_a_worker_with_two_local_processes_takes_two_ranks(tiny_config: TrainerConfig, tmp_path: Path) -> None:
    cluster = Cluster(tmp_path, _config(tiny_config, tmp_path, steps=6), {"DSTJ_CACHE": os.environ["DSTJ_CACHE"]})
    try:
        cluster.start("a", nproc=2)
        cluster.publish(["a"])
        assert cluster.agents["a"].wait(180) == 0, cluster.log("a")[-3000:]
        assert "layout W=2 EP=2 DP=1" in cluster.log("a")
        assert sorted(p.name for p in tmp_path.glob("data-g0-r*.jsonl")) == ["data-g0-r0.jsonl", "data-g0-r1.jsonl"]
        assert last_step(tmp_path, 0) == 6
    finally:
        cluster.close()


@pytest.mark.slow
def test_an_edited_config_is_read_before_the_next_generation_and_the_run_ends_at_the_new_step_count(
    tiny_config: TrainerConfig, tmp_path: Path
) -> None:
    cfg = _config(tiny_config, tmp_path, steps=30)
    cluster = Cluster(tmp_path, cfg, {"DSTJ_CACHE": os.environ["DSTJ_CACHE"]})
    try:
        cluster.start("a")
        cluster.publish(["a"], config=cfg)
        wait_for(lambda: any(s >= 2 for s in _steps(tmp_path, 0)), 90, "generation 0 to finish step 2")
        edited = cfg.model_copy(deep=True)
        edited.train.steps, edited.optim.lr = 36, cfg.optim.lr / 2
        cluster.publish(["a"], handoff=True, config=edited)  # what the operator does when spec.trainer is edited
        assert cluster.agents["a"].wait(120) == 0, cluster.log("a")[-2000:]
        assert "generation 1: runs the edited trainer config" in cluster.log("a")
        assert _pids(cluster.log("a")) == {0: cluster.agents["a"].pid, 1: cluster.agents["a"].pid}
        assert first_step(tmp_path, 1) == last_step(tmp_path, 0) + 1  # at a step boundary: none lost or repeated
        assert last_step(tmp_path, 1) == 36
    finally:
        cluster.close()
