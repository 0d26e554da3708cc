"""Checkpoints: exact resume, atomic marker, fencing by generation."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from dstj_api import TrainerConfig
from moe_trainer.checkpoint import Checkpointer, read_marker
from moe_trainer.trainer import Trainer


def checkpointer(root: Path, generation: int = 0, current: bool = True, keep: int = 2) -> Checkpointer:
    return Checkpointer(root, keep, generation, lambda final: current, rank=0, process_group=None)


def params(trainer: Trainer) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}


def test_a_resumed_run_continues_exactly_like_an_uninterrupted_one(tiny_config: TrainerConfig, tmp_path: Path) -> None:
    straight = Trainer(tiny_config)
    for _ in range(6):
        straight.train_step()

    first = Trainer(tiny_config)
    for _ in range(3):
        first.train_step()
    checkpointer(tmp_path).save(first.checkpoint_state(), first.step, asynchronous=False)

    resumed = Trainer(tiny_config)
    marker = checkpointer(tmp_path).load_latest(resumed.checkpoint_state())
    resumed.restored()
    assert marker is not None and resumed.step == 3
    for _ in range(3):
        resumed.train_step()
    for name, value in params(straight).items():
        torch.testing.assert_close(params(resumed)[name], value, rtol=0, atol=0, msg=name)


def test_an_asynchronous_save_captures_the_state_at_save_time(tiny_config: TrainerConfig, tmp_path: Path) -> None:
    trainer = Trainer(tiny_config)
    trainer.train_step()
    saved = params(trainer)
    ckpt = checkpointer(tmp_path)
    trainer.before_update = ckpt.before_update
    ckpt.save(trainer.checkpoint_state(), trainer.step, asynchronous=True)
    trainer.train_step()  # runs while the copy is made, and changes the live tensors right after it
    ckpt.wait()
    fresh = Trainer(tiny_config)
    checkpointer(tmp_path).load_latest(fresh.checkpoint_state())
    for name, value in saved.items():
        torch.testing.assert_close(params(fresh)[name], value, rtol=0, atol=0, msg=name)


def test_a_torn_save_is_never_loaded(tiny_config: TrainerConfig, tmp_path: Path) -> None:
    trainer = Trainer(tiny_config)
    trainer.train_step()
    checkpointer(tmp_path).save(trainer.checkpoint_state(), 1, asynchronous=False)
    torn = tmp_path / "step-00000002-g0"  # a save killed half way: files but no marker update
    torn.mkdir()
    (torn / "__0_0.distcp").write_bytes(b"partial")
    marker = read_marker(tmp_path)
    assert marker is not None and marker.step == 1
    assert checkpointer(tmp_path).load_latest(Trainer(tiny_config).checkpoint_state()) == marker


def test_a_stale_generation_cannot_move_the_marker(tiny_config: TrainerConfig, tmp_path: Path) -> None:
    trainer = Trainer(tiny_config)
    checkpointer(tmp_path, generation=1).save(trainer.checkpoint_state(), 1, asynchronous=False)
    checkpointer(tmp_path, generation=0, current=False).save(trainer.checkpoint_state(), 5, asynchronous=False)
    marker = read_marker(tmp_path)
    assert marker is not None and (marker.generation, marker.step) == (1, 1)


def test_an_older_generation_never_overwrites_a_newer_marker_whatever_its_step(
    tiny_config: TrainerConfig, tmp_path: Path
) -> None:
    trainer = Trainer(tiny_config)
    checkpointer(tmp_path, generation=3).save(trainer.checkpoint_state(), 2, asynchronous=False)
    # Even if it still believes it is current, generation 2 with a higher step is refused.
    checkpointer(tmp_path, generation=2, current=True).save(trainer.checkpoint_state(), 9, asynchronous=False)
    marker = read_marker(tmp_path)
    assert marker is not None and (marker.generation, marker.step) == (3, 2)


def test_only_the_last_n_committed_checkpoints_are_kept(tiny_config: TrainerConfig, tmp_path: Path) -> None:
    trainer = Trainer(tiny_config)
    ckpt = checkpointer(tmp_path, keep=2)
    for step in (1, 2, 3):
        ckpt.save(trainer.checkpoint_state(), step, asynchronous=False)
    assert sorted(p.name for p in tmp_path.glob("step-*")) == ["step-00000002-g0", "step-00000003-g0"]
    assert json.loads((tmp_path / "latest.json").read_text())["kept"] == ["step-00000003-g0", "step-00000002-g0"]
