"""A checkpoint saved at any EP x DP layout (and optimizer sharding) loads at any other and gives the same outputs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dstj_api import TrainerConfig
from moe_trainer.checkpoint.checkpointer import Checkpointer
from moe_trainer.training.trainer import Trainer
from tests.trainer.elastic_harness import torchrun

LAYOUTS = [(1, 1), (2, 1), (2, 2), (4, 1), (4, 2), (4, 4)]  # (W, EP) for the 8-expert tiny preset
PROBE = Path(__file__).with_name("layout_probe.py")


@pytest.mark.slow
def test_a_checkpoint_saved_at_any_layout_loads_at_every_other_with_identical_outputs(
    tiny_config: TrainerConfig, tmp_path: Path
) -> None:
    data = tiny_config.model_dump()
    data["train"] |= {"global_batch": 8, "micro_batch": 2}
    cfg = TrainerConfig.model_validate(data)
    config = tmp_path / "config.json"
    config.write_text(cfg.model_dump_json())
    saved = {layout: tmp_path / f"w{layout[0]}-ep{layout[1]}" for layout in LAYOUTS}
    for (world, ep), target in saved.items():
        torchrun(PROBE, world, str(config), str(ep), "save", str(target))

    # What every checkpoint gives when loaded in one process: the reference outputs.
    reference = {}
    for target in saved.values():
        trainer = Trainer(cfg)
        Checkpointer(target, 1, 0, lambda final: True, 0, None).load_latest(trainer.checkpoint_state())
        trainer.restored()
        reference[str(target)] = (trainer.evaluate(), trainer.train_step().loss)

    for world, ep in LAYOUTS:
        out = tmp_path / f"loaded-at-w{world}-ep{ep}.json"
        torchrun(PROBE, world, str(config), str(ep), "load", str(out), *map(str, saved.values()))
        for source, got in json.loads(out.read_text()).items():
            assert got["step"] == 2
            want_eval, want_train = reference[source]
            assert got["heldout_loss"] == pytest.approx(want_eval, rel=1e-6), (source, world, ep)
            assert got["train_loss"] == pytest.approx(want_train, rel=1e-6), (source, world, ep)
