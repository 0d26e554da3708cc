"""The elastic runtime with real supervisors, torchrun and gloo: the test plays the operator."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dstj_api import TrainerConfig
from dstj_api.contract import ENV_MEMBERSHIP, EXIT_STOPPED
from moe_trainer.checkpoint.checkpointer import read_marker
from tests.trainer.elastic_harness import (
    Cluster,
    committed_trajectory,
    final_params,
    reference_run,
    relative_distance,
    trajectory_errors,
    wait_for,
)

STEPS = 20


@pytest.fixture
def elastic_config(tiny_config: TrainerConfig, tmp_path: Path) -> TrainerConfig:
    # 12 sequences in micro-batches of 2 split evenly at W = 1, 2 and 3; W=2 gets EP=2 (8 experts).
    data = tiny_config.model_dump()
    data["train"] |= {"steps": STEPS, "global_batch": 12, "micro_batch": 2, "log_every": 1}
    data["checkpoint"] = {"dir": str(tmp_path / "ckpt"), "interval": 4, "keep": 3}
    return TrainerConfig.model_validate(data)


def _steps(log_dir: Path, generation: int) -> list[int]:
    return [json.loads(line)["step"] for p in log_dir.glob(f"data-g{generation}-r*.jsonl")
            for line in p.read_text().splitlines()]


def first_step(log_dir: Path, generation: int) -> int:
    return min(_steps(log_dir, generation))


def last_step(log_dir: Path, generation: int) -> int:
    return max(_steps(log_dir, generation))


def marker_at(cfg: TrainerConfig, generation: int, step: int) -> bool:
    m = read_marker(cfg.checkpoint.dir or "")
    return m is not None and m.generation >= generation and m.step >= step


LAYOUTS_AUTO = ("layout W=2 EP=2 DP=1", "layout W=1 EP=1 DP=1", "layout W=3 EP=1 DP=3")
LAYOUTS_EP1 = ("layout W=2 EP=1 DP=2", "layout W=1 EP=1 DP=1", "layout W=3 EP=1 DP=3")


def sharded_ep1(cfg: TrainerConfig) -> TrainerConfig:
    """Optimizer state sharded, EP fixed at 1: the experts' DP goes 2, 1, 3 over the run (auto EP keeps DP at 1
    while W=2, so nothing of the experts' would be resharded)."""
    data = cfg.model_dump()
    data["optim"]["shard_state"] = True
    data["parallel"]["expert_parallel"] = 1
    return TrainerConfig.model_validate(data)


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["auto-ep", "sharded-state-ep1"])
def test_a_run_that_shrinks_after_a_hard_kill_and_grows_ends_where_an_uninterrupted_run_does(
    elastic_config: TrainerConfig, tmp_path: Path, variant: str
) -> None:
    import os

    cfg = sharded_ep1(elastic_config) if variant == "sharded-state-ep1" else elastic_config
    cluster = Cluster(tmp_path, cfg, {"DSTJ_CACHE": os.environ["DSTJ_CACHE"]})
    try:
        _shrink_and_grow(cluster, cfg, tmp_path, LAYOUTS_EP1 if variant == "sharded-state-ep1" else LAYOUTS_AUTO)
    finally:
        cluster.close()


def _shrink_and_grow(cluster: Cluster, cfg: TrainerConfig, tmp_path: Path, layouts: tuple[str, ...]) -> None:
    cluster.start("a")
    cluster.start("b")
    cluster.publish(["a", "b"])  # generation 0: W=2
    wait_for(lambda: marker_at(cfg, 0, 4), 90, "generation 0 to commit step 4")
    cluster.hard_kill("b")
    cluster.publish(["a"])  # generation 1: W=1, resumes from the last commit
    wait_for(lambda: marker_at(cfg, 1, 12), 90, "generation 1 to commit step 12")
    cluster.start("b")
    cluster.start("c")
    cluster.publish(["a", "b", "c"], handoff=True)  # generation 2: W=3, a planned resize
    codes = cluster.wait_all(180)
    assert codes == {"a": 0, "b": 0, "c": 0}, {n: cluster.log(n)[-2000:] for n in codes}
    logs = "".join(cluster.log(n) for n in codes)  # rank 0 of a generation may be any member
    for layout in layouts:
        assert layout in logs

    start, reference, ref_trainer = reference_run(cfg)
    assert relative_distance(final_params(cfg), reference, start) <= 1e-4

    # The planned resize handed off without losing a finished step.
    assert first_step(tmp_path, 2) == last_step(tmp_path, 1) + 1

    trajectory = committed_trajectory(tmp_path)
    expected = lambda step: ref_trainer.train_data.sample_ids(step - 1, cfg.train.global_batch)  # noqa: E731
    assert trajectory_errors(trajectory, expected, STEPS) == []


@pytest.mark.slow
def test_the_v3_tiny_model_with_mla_and_mtp_is_elastic_too(elastic_config: TrainerConfig, tmp_path: Path) -> None:
    import os

    data = elastic_config.model_dump()
    data["model"] = {"preset": "v3-tiny", "vocab_size": 256}
    cfg = TrainerConfig.model_validate(data)
    assert (cfg.model.attention, cfg.model.mtp_depth, cfg.model.moe.score_func) == ("mla", 1, "sigmoid")
    cluster = Cluster(tmp_path, cfg, {"DSTJ_CACHE": os.environ["DSTJ_CACHE"]})
    try:
        _shrink_and_grow(cluster, cfg, tmp_path, LAYOUTS_AUTO)
        assert "mtp-acc" in "".join(cluster.log(n) for n in ("a", "b", "c"))
    finally:
        cluster.close()


def test_the_trajectory_check_catches_a_planted_skipped_or_repeated_sample() -> None:
    expected = {1: [0, 1, 2, 3], 2: [4, 5, 6, 7]}
    assert trajectory_errors(expected, expected.__getitem__, 2) == []
    skipped = {1: [0, 1, 2], 2: [4, 5, 6, 7]}
    assert trajectory_errors(skipped, expected.__getitem__, 2) == ["step 1: missing [3], repeated [], unexpected []"]
    repeated = {1: [0, 1, 2, 3], 2: [4, 5, 6, 7, 7]}
    assert trajectory_errors(repeated, expected.__getitem__, 2) == ["step 2: missing [], repeated [7], unexpected []"]


def test_the_equivalence_measure_catches_one_planted_skipped_sample(
    elastic_config: TrainerConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = elastic_config.model_copy(update={"train": elastic_config.train.model_copy(update={"steps": 8})})
    start, reference, _ = reference_run(cfg)
    from moe_trainer.data.dataset import TokenDataset

    original = TokenDataset.sample_ids

    def skip_one(self: TokenDataset, step: int, global_batch: int) -> list[int]:
        ids = original(self, step, global_batch)
        return [ids[0], *ids[2:], ids[0]] if step == 3 else ids  # sample ids[1] skipped, ids[0] twice

    monkeypatch.setattr(TokenDataset, "sample_ids", skip_one)
    _, planted, _ = reference_run(cfg)
    assert relative_distance(planted, reference, start) > 1e-3


def _with(cfg: TrainerConfig, steps: int, interval: int, as_url: bool = False) -> TrainerConfig:
    data = cfg.model_dump()
    data["train"]["steps"] = steps
    data["checkpoint"]["interval"] = interval
    if as_url:  # the same directory through fsspec, the path object stores take
        data["checkpoint"]["dir"] = f"file://{data['checkpoint']['dir']}"
    return TrainerConfig.model_validate(data)


@pytest.mark.slow
@pytest.mark.parametrize("storage", ["dir", "fsspec-url"])
def test_a_graceful_preemption_loses_no_finished_step(elastic_config: TrainerConfig, tmp_path: Path,
                                                      storage: str) -> None:
    import os

    # No periodic save would rescue the steps.
    cfg = _with(elastic_config, steps=16, interval=50, as_url=storage == "fsspec-url")
    cluster = Cluster(tmp_path, cfg, {"DSTJ_CACHE": os.environ["DSTJ_CACHE"]})
    try:
        cluster.start("a")
        cluster.start("b")
        cluster.publish(["a", "b"])
        wait_for(lambda: any(s >= 3 for s in _steps(tmp_path, 0)), 90, "generation 0 to finish step 3")
        cluster.terminate("b")  # SIGTERM, as a preempted pod gets
        assert cluster.agents["b"].wait(60) == EXIT_STOPPED, cluster.log("b")[-2000:]
        stopped_at = last_step(tmp_path, 0)
        wait_for(lambda: marker_at(cfg, 0, stopped_at), 30, f"the stop checkpoint of step {stopped_at}")
        cluster.publish(["a"])
        assert cluster.agents["a"].wait(120) == 0, cluster.log("a")[-2000:]
        assert first_step(tmp_path, 1) == stopped_at + 1
    finally:
        cluster.close()


@pytest.mark.slow
def test_a_hard_kill_during_a_save_resumes_from_the_last_complete_checkpoint_never_the_torn_one(
    elastic_config: TrainerConfig, tmp_path: Path
) -> None:
    import os

    cfg = _with(elastic_config, steps=16, interval=3)
    ckpt_dir = Path(cfg.checkpoint.dir or "")
    cluster = Cluster(tmp_path, cfg, {"DSTJ_CACHE": os.environ["DSTJ_CACHE"]})
    try:
        cluster.start("a")
        cluster.start("b")
        cluster.publish(["a", "b"])

        torn: list[Path] = []

        def saving_after_the_first_commit() -> bool:  # a step directory without DCP's metadata yet
            if read_marker(ckpt_dir) is None:
                return False
            torn.extend(d for d in ckpt_dir.glob("step-*") if not (d / ".metadata").exists())
            return bool(torn)

        wait_for(saving_after_the_first_commit, 90, "a save in progress", interval=0.002)
        cluster.hard_kill("b")
        torn_step = int(torn[0].name.split("-")[1])
        marker = read_marker(ckpt_dir)
        assert marker is not None and (ckpt_dir / marker.path / ".metadata").exists()
        cluster.publish(["a"])
        assert cluster.agents["a"].wait(120) == 0, cluster.log("a")[-2000:]
        resumed_from = first_step(tmp_path, 1) - 1
        # The torn save is never loaded: the run resumes from the complete one before it. Saves are
        # asynchronous, so the steps run while the torn save was in flight are lost with it.
        assert f"resumed from step {resumed_from} (generation 0" in cluster.log("a")
        assert resumed_from == torn_step - cfg.checkpoint.interval
        in_flight = last_step(tmp_path, 0) - torn_step
        assert last_step(tmp_path, 0) - resumed_from <= cfg.checkpoint.interval + in_flight
        assert in_flight <= 1  # the kill lands within milliseconds of the save starting
    finally:
        cluster.close()


@pytest.mark.slow
def test_a_left_over_agent_of_an_old_generation_can_neither_join_nor_move_the_marker(
    elastic_config: TrainerConfig, tmp_path: Path
) -> None:
    import os
    import subprocess
    import sys

    cfg = _with(elastic_config, steps=12, interval=2)
    ckpt_dir = Path(cfg.checkpoint.dir or "")
    cluster = Cluster(tmp_path, cfg, {"DSTJ_CACHE": os.environ["DSTJ_CACHE"]})
    try:
        cluster.publish(["a", "b"])  # generation 0 never runs: b is gone; the operator moves on
        cluster.publish(["a"])
        cluster.start("a")
        # A stale torchrun agent of generation 0 tries to rendezvous, and a stale trainer of
        # generation 0 runs on and tries to commit checkpoints into the same directory.
        stale_agent = cluster._spawn("stale-agent", [
            sys.executable, "-m", "torch.distributed.run", "--nnodes=2", "--nproc-per-node=1",
            "--rdzv-backend=c10d", f"--rdzv-endpoint=127.0.0.1:{cluster.port}", "--rdzv-id=test-g0",
            "--rdzv-conf=is_host=false", "-m", "moe_trainer.train", "--config", str(cluster.config_path),
        ])
        stale_env = cluster.env | {"DSTJ_GENERATION": "0", ENV_MEMBERSHIP: f"file:{cluster.membership.path}",
                                   "DSTJ_DATA_LOG": str(tmp_path / "stale")}
        (tmp_path / "stale").mkdir()
        stale_trainer = subprocess.run(
            [sys.executable, "-m", "moe_trainer.train", "--config", str(cluster.config_path)],
            env=stale_env, capture_output=True, text=True, timeout=180,
        )
        assert "no longer published" in stale_trainer.stderr
        assert cluster.agents["a"].wait(120) == 0, cluster.log("a")[-2000:]
        marker = read_marker(ckpt_dir)
        assert marker is not None and (marker.generation, marker.step) == (1, 12)
        assert stale_agent.poll() is None, "the stale agent must still be waiting for its own round"
        assert "layout W=" not in cluster.log("stale-agent")
    finally:
        cluster.close()
