"""Run under torchrun by test_resharding: save a checkpoint at this layout, or load others and evaluate.

    torchrun --nproc-per-node=W layout_probe.py CONFIG EP save DIR
    torchrun --nproc-per-node=W layout_probe.py CONFIG EP load OUT.json DIR [DIR ...]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist

from dstj_api import load_trainer_config
from moe_trainer.checkpoint.checkpointer import Checkpointer
from moe_trainer.parallel.context import init_distributed
from moe_trainer.training.trainer import Trainer


def main() -> None:
    config, ep, action, *paths = sys.argv[1:]
    cfg = load_trainer_config(config)
    cfg = cfg.model_copy(update={"parallel": cfg.parallel.model_copy(update={"expert_parallel": int(ep)})})
    ctx = init_distributed(cfg, torch.device("cpu"))
    pg = dist.new_group(backend="gloo") if ctx.is_distributed else None
    results = {}
    targets = paths if action == "save" else paths[1:]
    for target in targets:
        trainer = Trainer(cfg, ctx, torch.device("cpu"))
        ckpt = Checkpointer(Path(target), 1, 0, lambda final: True, ctx.rank,
                            pg if isinstance(pg, dist.ProcessGroup) else None)
        if action == "save":
            for _ in range(2):
                trainer.train_step()
            ckpt.save(trainer.checkpoint_state(), trainer.step, asynchronous=False)
        else:
            assert ckpt.load_latest(trainer.checkpoint_state()) is not None
            trainer.restored()
            results[target] = {"step": trainer.step, "heldout_loss": trainer.evaluate(),
                               "train_loss": trainer.train_step().loss}
    if action == "load" and ctx.rank == 0:
        Path(paths[0]).write_text(json.dumps(results))
    if dist.is_initialized():
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
