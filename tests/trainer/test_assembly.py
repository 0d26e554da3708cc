"""The one assembly path both trainers use: what a process keeps across generations and what each gets anew."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dstj_api import TrainerConfig
from dstj_api.contract import ENV_PROGRESS
from moe_trainer.checkpoint.checkpointer import Checkpointer
from moe_trainer.runtime.assembly import Reporting, trainer_for
from moe_trainer.runtime.membership import FileProgressSink
from moe_trainer.training.trainer import Trainer, build_model, single_process


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


def test_a_trainer_on_a_model_built_ahead_starts_where_one_that_builds_its_own_does(tiny_config: TrainerConfig) -> None:
    ahead = build_model(tiny_config)
    torch.manual_seed(12345)  # whatever ran in between must not matter
    taken = Trainer(tiny_config, model=ahead)
    taken_rng = torch.get_rng_state()
    built = Trainer(tiny_config)
    assert taken.model is ahead.model
    assert torch.equal(taken_rng, torch.get_rng_state())
    for name, value in built.model.state_dict().items():
        torch.testing.assert_close(taken.model.state_dict()[name], value, rtol=0, atol=0, msg=name)


def test_a_worker_ready_to_join_has_imported_what_its_trainer_needs_and_not_what_only_a_group_needs(
    tiny_config: TrainerConfig, tmp_path: Path
) -> None:
    """What a newcomer does before its readiness file (elastic.py) leaves nothing for a trainer to import; DCP and the
    Kubernetes client it imports after, while the running members stop."""
    (tmp_path / "config.json").write_text(tiny_config.model_dump_json(by_alias=True))
    code = """if True:
        import json, sys
        import torch
        from dstj_api import load_trainer_config
        from moe_trainer.runtime.assembly import prepare
        from moe_trainer.runtime.config_source import config_source
        from moe_trainer.runtime.membership import membership_source
        from moe_trainer.training.optim import warm_up_optimizer
        from moe_trainer.training.trainer import Trainer, build_model, single_process
        import moe_trainer.launch
        membership_source("k8s:ns/job"), config_source("k8s:ns/job-config", "unused")
        cfg = load_trainer_config("config.json")
        data, model = prepare(cfg), build_model(cfg)
        warm_up_optimizer()
        ready = set(sys.modules)
        Trainer(cfg, single_process(), torch.device("cpu"), data, model)
        print(json.dumps({"group only": [m for m in ("torch.distributed.checkpoint", "kubernetes.client")
                                         if m in ready],
                          "trainer imported": sorted(set(sys.modules) - ready)}))
    """
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {"group only": [], "trainer imported": []}
