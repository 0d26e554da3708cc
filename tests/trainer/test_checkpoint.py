"""Checkpoints: exact resume, atomic marker, fencing by generation, in a directory and at an fsspec URL.

Every test runs twice: with a plain directory, and with the same directory as a `file://` URL, which
takes the fsspec path (DCP's fsspec writer and reader, small files moved into place) that object
stores use; `memory://` stands in for an object store where only one process is involved.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from dstj_api import TrainerConfig
from moe_trainer.checkpoint.checkpointer import Checkpointer, check_locations, read_marker
from moe_trainer.misconfig import RunConfigError
from moe_trainer.training.trainer import Trainer


@pytest.fixture(params=["dir", "file-url"])
def root(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The checkpoint root: `tmp_path` itself, or `tmp_path` as a file:// URL (the fsspec path)."""
    return str(tmp_path) if request.param == "dir" else f"file://{tmp_path}"


def checkpointer(root: str, generation: int = 0, current: bool = True, keep: int = 2,
                 resume_from: str | None = None) -> Checkpointer:
    return Checkpointer(root, keep, generation, lambda final: current, rank=0, process_group=None,
                        resume_from=resume_from)


def params(trainer: Trainer) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}


def test_a_resumed_run_continues_exactly_like_an_uninterrupted_one(tiny_config: TrainerConfig, root: str) -> None:
    straight = Trainer(tiny_config)
    for _ in range(6):
        straight.train_step()

    first = Trainer(tiny_config)
    for _ in range(3):
        first.train_step()
    checkpointer(root).save(first.checkpoint_state(), first.step, asynchronous=False)

    resumed = Trainer(tiny_config)
    marker = checkpointer(root).load_latest(resumed.checkpoint_state())
    resumed.restored()
    assert marker is not None and resumed.step == 3
    for _ in range(3):
        resumed.train_step()
    for name, value in params(straight).items():
        torch.testing.assert_close(params(resumed)[name], value, rtol=0, atol=0, msg=name)


def test_an_asynchronous_save_captures_the_state_at_save_time(tiny_config: TrainerConfig, root: str) -> None:
    trainer = Trainer(tiny_config)
    trainer.train_step()
    saved = params(trainer)
    ckpt = checkpointer(root)
    trainer.before_update = ckpt.before_update
    ckpt.save(trainer.checkpoint_state(), trainer.step, asynchronous=True)
    trainer.train_step()  # runs while the copy is made, and changes the live tensors right after it
    ckpt.wait()
    fresh = Trainer(tiny_config)
    checkpointer(root).load_latest(fresh.checkpoint_state())
    for name, value in saved.items():
        torch.testing.assert_close(params(fresh)[name], value, rtol=0, atol=0, msg=name)


def test_a_torn_save_is_never_loaded(tiny_config: TrainerConfig, root: str, tmp_path: Path) -> None:
    trainer = Trainer(tiny_config)
    trainer.train_step()
    checkpointer(root).save(trainer.checkpoint_state(), 1, asynchronous=False)
    torn = tmp_path / "step-00000002-g0"  # a save killed half way: files but no marker update
    torn.mkdir()
    (torn / "__0_0.distcp").write_bytes(b"partial")
    marker = read_marker(root)
    assert marker is not None and marker.step == 1
    assert checkpointer(root).load_latest(Trainer(tiny_config).checkpoint_state()) == marker


def test_a_stale_generation_cannot_move_the_marker(tiny_config: TrainerConfig, root: str) -> None:
    trainer = Trainer(tiny_config)
    checkpointer(root, generation=1).save(trainer.checkpoint_state(), 1, asynchronous=False)
    checkpointer(root, generation=0, current=False).save(trainer.checkpoint_state(), 5, asynchronous=False)
    marker = read_marker(root)
    assert marker is not None and (marker.generation, marker.step) == (1, 1)


def test_an_older_generation_never_overwrites_a_newer_marker_whatever_its_step(
    tiny_config: TrainerConfig, root: str
) -> None:
    trainer = Trainer(tiny_config)
    checkpointer(root, generation=3).save(trainer.checkpoint_state(), 2, asynchronous=False)
    # Even if it still believes it is current, generation 2 with a higher step is refused.
    checkpointer(root, generation=2, current=True).save(trainer.checkpoint_state(), 9, asynchronous=False)
    marker = read_marker(root)
    assert marker is not None and (marker.generation, marker.step) == (3, 2)


def test_only_the_last_n_committed_checkpoints_are_kept(tiny_config: TrainerConfig, root: str, tmp_path: Path) -> None:
    trainer = Trainer(tiny_config)
    ckpt = checkpointer(root, keep=2)
    for step in (1, 2, 3):
        ckpt.save(trainer.checkpoint_state(), step, asynchronous=False)
    assert sorted(p.name for p in tmp_path.glob("step-*")) == ["step-00000002-g0", "step-00000003-g0"]
    assert json.loads((tmp_path / "latest.json").read_text())["kept"] == ["step-00000003-g0", "step-00000002-g0"]


def test_an_object_store_url_saves_loads_and_prunes(tiny_config: TrainerConfig) -> None:
    """`memory://` is an fsspec filesystem with no local directory behind it, as s3:// or gs:// would be."""
    root = f"memory://dstj-test-{id(tiny_config)}"
    trainer = Trainer(tiny_config)
    ckpt = checkpointer(root, keep=2)
    trainer.before_update = ckpt.before_update
    for _ in range(3):
        trainer.train_step()
        ckpt.save(trainer.checkpoint_state(), trainer.step, asynchronous=True)
    ckpt.close()
    marker = read_marker(root)
    assert marker is not None and marker.step == 3 and marker.kept == ("step-00000003-g0", "step-00000002-g0")
    resumed = Trainer(tiny_config)
    checkpointer(root).load_latest(resumed.checkpoint_state())
    resumed.restored()
    assert resumed.step == 3
    for name, value in params(trainer).items():
        torch.testing.assert_close(params(resumed)[name], value, rtol=0, atol=0, msg=name)


def test_resume_from_starts_a_new_run_from_another_runs_checkpoint(tiny_config: TrainerConfig, tmp_path: Path) -> None:
    source = Trainer(tiny_config)
    for _ in range(2):
        source.train_step()
    checkpointer(str(tmp_path / "old"), keep=3).save(source.checkpoint_state(), source.step, asynchronous=False)
    for where in (str(tmp_path / "old"), str(tmp_path / "old" / "step-00000002-g0")):  # a run's root, a checkpoint
        new = Trainer(tiny_config)
        ckpt = checkpointer(str(tmp_path / f"new-{len(where)}"), resume_from=where)
        marker = ckpt.load_latest(new.checkpoint_state())
        new.restored()
        assert marker is not None and marker.step == 2 and new.step == 2
        for name, value in params(source).items():
            torch.testing.assert_close(params(new)[name], value, rtol=0, atol=0, msg=name)


def test_the_runs_own_checkpoint_wins_over_resume_from(tiny_config: TrainerConfig, root: str, tmp_path: Path) -> None:
    trainer = Trainer(tiny_config)
    checkpointer(str(tmp_path / "old")).save(trainer.checkpoint_state(), 7, asynchronous=False)
    checkpointer(root).save(trainer.checkpoint_state(), 3, asynchronous=False)
    marker = checkpointer(root, resume_from=str(tmp_path / "old")).load_latest(Trainer(tiny_config).checkpoint_state())
    assert marker is not None and marker.step == 3


def test_resume_from_an_empty_place_names_the_field(tiny_config: TrainerConfig, tmp_path: Path) -> None:
    with pytest.raises(RunConfigError, match=r"checkpoint\.resumeFrom"):
        checkpointer(str(tmp_path / "new"), resume_from=str(tmp_path / "nothing")).load_latest(
            Trainer(tiny_config).checkpoint_state())


def test_an_empty_resume_from_is_found_before_training_but_only_while_the_run_has_nothing_committed(
        tiny_config: TrainerConfig, tmp_path: Path) -> None:
    root, nothing = str(tmp_path / "run"), str(tmp_path / "nothing")
    with pytest.raises(RunConfigError, match=r"spec\.checkpoint\.resumeFrom\) holds no checkpoint"):
        check_locations(root, nothing)
    checkpointer(root).save(Trainer(tiny_config).checkpoint_state(), 3, asynchronous=False)
    check_locations(root, nothing)  # its own checkpoint is what it resumes from now


def test_a_url_without_its_fsspec_backend_says_what_to_install() -> None:
    with pytest.raises(RunConfigError, match=r"checkpoint\.dir.*fsspec backend"):
        checkpointer("nosuchscheme://bucket/run")
