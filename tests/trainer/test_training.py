"""The single-process training loop: it learns, and a step's math does not depend on how it is split."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dstj_api import TrainerConfig
from dstj_api.contract import ENV_PROGRESS
from moe_trainer.training.trainer import Trainer
from tests.trainer.elastic_harness import relative_distance


def with_train(cfg: TrainerConfig, **train: object) -> TrainerConfig:
    return TrainerConfig.model_validate(cfg.model_dump() | {"train": cfg.train.model_dump() | train})


def params_after_steps(cfg: TrainerConfig, steps: int) -> dict[str, torch.Tensor]:
    trainer = Trainer(cfg)
    for _ in range(steps):
        trainer.train_step()
    return {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}


def test_training_lowers_the_loss(tiny_config: TrainerConfig) -> None:
    trainer = Trainer(tiny_config)
    before = trainer.evaluate()
    losses = [trainer.train_step().loss for _ in range(30)]
    assert sum(losses[-5:]) / 5 < losses[0] - 0.5, losses
    assert trainer.evaluate() < before - 0.5


def test_a_step_is_the_same_whatever_the_micro_batch_split(tiny_config: TrainerConfig) -> None:
    start = params_after_steps(tiny_config, 0)
    whole = params_after_steps(with_train(tiny_config, micro_batch=8), 3)
    split = params_after_steps(with_train(tiny_config, micro_batch=2), 3)
    # Only fp32 summation order differs (Adam amplifies it on tiny gradients): far below 1e-4.
    assert relative_distance(split, whole, start) < 1e-4
    # A planted difference in the data is far above it: the measure can fail.
    shifted = params_after_steps(with_train(tiny_config, seed=1), 3)
    assert relative_distance(shifted, whole, start) > 1e-2


def test_activation_checkpointing_changes_nothing_but_memory(tiny_config: TrainerConfig) -> None:
    plain = Trainer(tiny_config)
    ckpt = Trainer(with_train(tiny_config, activation_checkpointing=True))
    a, b = plain.train_step(), ckpt.train_step()
    assert a.loss == b.loss
    # Recomputation in backward must not count the routing twice.
    assert [r.tokens_per_expert for r in a.routing] == [r.tokens_per_expert for r in b.routing]
    assert sum(a.routing[0].tokens_per_expert) == 8 * 32 * tiny_config.model.moe.top_k
    for (name, p), q in zip(plain.model.named_parameters(), ckpt.model.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6, msg=name)


def test_bf16_autocast_trains_close_to_fp32(tiny_config: TrainerConfig) -> None:
    fp32 = Trainer(tiny_config).train_step().loss
    bf16 = Trainer(with_train(tiny_config, precision="bf16")).train_step().loss
    assert abs(bf16 - fp32) < 0.05 * fp32


def test_the_balancing_bias_moves_after_each_optimizer_step(tiny_config: TrainerConfig) -> None:
    trainer = Trainer(tiny_config)
    bias = trainer.model.moe_layers()[0].router.expert_bias_E
    assert bias.abs().sum() == 0
    trainer.train_step()
    assert torch.allclose(bias.abs(), torch.full_like(bias, 0.01))


def test_cli_refuses_a_bad_config_naming_the_field(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"train": {"globalBatch": 0}}))
    proc = subprocess.run(
        [sys.executable, "-m", "moe_trainer.train", "--config", str(bad)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 2
    assert "train.globalBatch: Input should be greater than or equal to 1" in proc.stderr


def test_a_run_serves_prometheus_metrics_and_writes_its_progress_report(
    tiny_config: TrainerConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import urllib.request

    from dstj_api import ProgressReport
    from moe_trainer.train import run
    from tests.trainer.elastic_harness import free_port

    port = free_port()
    monkeypatch.setenv(ENV_PROGRESS, f"file:{tmp_path / 'progress.json'}")
    cfg = with_train(tiny_config, steps=6, log_every=2, metrics_port=port)
    summary = run(cfg)
    assert summary["steps"] == 6
    page = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    assert 'dstj_trainer_step{rank="0"} 6.0' in page
    assert "dstj_trainer_expert_max_violation" in page and "dstj_trainer_loss" in page
    report = ProgressReport.model_validate_json((tmp_path / "progress.json").read_text())
    assert (report.step, report.total_steps, report.state, report.world_size) == (6, 6, "finished", 1)
    assert report.generation_start_step == 0
    assert report.steady_tokens_per_second is not None and report.steady_tokens_per_second > 0, "after the warm-up"


def test_the_progress_report_says_which_step_a_resumed_run_started_from(
    tiny_config: TrainerConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dstj_api import ProgressReport
    from moe_trainer.train import run

    monkeypatch.setenv(ENV_PROGRESS, f"file:{tmp_path / 'progress.json'}")
    cfg = with_train(tiny_config, steps=3, log_every=1)
    cfg = cfg.model_copy(update={"checkpoint": cfg.checkpoint.model_copy(update={"dir": str(tmp_path / "ckpt")})})
    run(cfg)
    run(with_train(cfg, steps=5))
    report = ProgressReport.model_validate_json((tmp_path / "progress.json").read_text())
    assert (report.generation_start_step, report.step) == (3, 5)  # steps 4 and 5 ran in the resumed run


def test_sharding_and_compression_at_one_rank_are_said_to_be_no_ops_naming_their_fields(
    tiny_config: TrainerConfig, capsys: pytest.CaptureFixture[str]
) -> None:
    from moe_trainer.train import run

    cfg = with_train(tiny_config, steps=1)
    cfg = cfg.model_copy(update={"optim": cfg.optim.model_copy(update={"shard_state": True,
                                                                          "grad_compression": "int8"})})
    assert run(cfg)["steps"] == 1
    out = capsys.readouterr().out
    assert "optim.shardState: one rank holds all optimizer state" in out
    assert "optim.gradCompression=int8: a no-op at one rank" in out
