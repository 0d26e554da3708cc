"""Run under torchrun by test_compression (EP=1, so every rank holds every parameter).

    torchrun --nproc-per-node=W compression_probe.py CONFIG OUT_DIR CKPT_DIR first|second

first (W=2): the gradient bytes of one step per mode -> bytes.json; the initial parameters -> start.pt;
    an uninterrupted int8 run -> w2.pt;
    the first half of a run, checkpointed in CKPT_DIR.
second (W=3): an uninterrupted int8 run -> w3.pt; the second half of the run from CKPT_DIR -> resized.pt.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist

from dstj_api import TrainerConfig, load_trainer_config
from moe_trainer.checkpoint.checkpointer import Checkpointer
from moe_trainer.parallel.context import DistContext, init_distributed
from moe_trainer.training.trainer import Trainer

STEPS = 8


def compressed(cfg: TrainerConfig, mode: str) -> TrainerConfig:
    return cfg.model_copy(update={"optim": cfg.optim.model_copy(update={"grad_compression": mode})})


def save_params(trainer: Trainer, path: Path) -> None:
    if trainer.ctx.rank == 0:
        torch.save({k: v.detach().clone() for k, v in trainer.model.state_dict().items()}, path)


def run(cfg: TrainerConfig, ctx: DistContext, steps: int, trainer: Trainer | None = None) -> Trainer:
    trainer = trainer or Trainer(cfg, ctx, torch.device("cpu"))
    for _ in range(steps):
        trainer.train_step()
    return trainer


def main() -> None:
    config, out_dir, ckpt_dir, phase = sys.argv[1:]
    out, cfg = Path(out_dir), load_trainer_config(config)
    ctx = init_distributed(cfg, torch.device("cpu"))
    group = dist.new_group(backend="gloo")
    ckpt = Checkpointer(ckpt_dir, 1, 0, lambda final: True, ctx.rank, group if isinstance(group, dist.ProcessGroup)
                        else None)
    int8 = compressed(cfg, "int8")
    if phase == "first":
        sent = {mode: Trainer(compressed(cfg, mode), ctx, torch.device("cpu")).train_step().grad_bytes
                for mode in ("none", "bf16", "int8")}
        if ctx.rank == 0:
            (out / "bytes.json").write_text(json.dumps(sent))
        save_params(run(int8, ctx, 0), out / "start.pt")
        save_params(run(int8, ctx, STEPS), out / "w2.pt")
        half = run(int8, ctx, STEPS // 2)
        ckpt.save(half.checkpoint_state(), half.step, asynchronous=False)
    else:
        save_params(run(int8, ctx, STEPS), out / "w3.pt")
        resumed = Trainer(int8, ctx, torch.device("cpu"))
        assert ckpt.load_latest(resumed.checkpoint_state()) is not None
        resumed.restored()
        save_params(run(int8, ctx, STEPS - resumed.step, resumed), out / "resized.pt")
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
