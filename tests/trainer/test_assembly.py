"""The one assembly path both trainers use: what a process keeps across generations and what each gets anew."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from dstj_api import TrainerConfig
from dstj_api.contract import ENV_PROGRESS
from moe_trainer.checkpoint.checkpointer import Checkpointer
from moe_trainer.runtime.assembly import Reporting, trainer_for
from moe_trainer.runtime.membership import FileProgressSink
from moe_trainer.training.trainer import single_process


def _restarts(reporting: Reporting) -> float:
    assert reporting.metrics is not None
    return next(s.value for m in reporting.metrics.registry.collect() for s in m.samples
                if s.name == "dstj_trainer_restarts_total")


def test_reporting_counts_every_earlier_generation_as_a_restart_once(tiny_config: TrainerConfig) -> None:
    reporting = Reporting(tiny_config)
    reporting.for_generation(2, rank=1)
    assert _restarts(reporting) == 2
    reporting.for_generation(5, rank=0)
    assert _restarts(reporting) == 5


def test_only_rank_0_gets_the_progress_sink_and_keeps_the_one_it_opened(
    tiny_config: TrainerConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENV_PROGRESS, f"file:{tmp_path / 'progress.json'}")
    reporting = Reporting(tiny_config)
    assert reporting.for_generation(0, rank=1)[1] is None
    first = reporting.for_generation(1, rank=0)[1]
    assert isinstance(first, FileProgressSink)
    assert reporting.for_generation(2, rank=0)[1] is first
    assert reporting.for_generation(3, rank=2)[1] is None


def test_a_trainer_in_memory_is_reused_only_when_a_checkpoint_will_be_loaded_into_it(
    tiny_config: TrainerConfig, tmp_path: Path
) -> None:
    cfg = tiny_config.model_copy(update={"checkpoint": tiny_config.checkpoint.model_copy(
        update={"dir": str(tmp_path / "ckpt")})})
    cpu = torch.device("cpu")
    first = trainer_for(cfg, single_process(), cpu, None)
    assert trainer_for(cfg, single_process(), cpu, first.data, previous=first) is not first  # nothing committed
    ckpt = Checkpointer(tmp_path / "ckpt", 1, 0, lambda final: True, 0, None)
    ckpt.save(first.checkpoint_state(), 0, asynchronous=False)
    ckpt.close()
    assert trainer_for(cfg, single_process(), cpu, first.data, previous=first) is first
