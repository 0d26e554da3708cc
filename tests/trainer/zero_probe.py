"""Run under torchrun by test_zero: the same steps with the optimizer state sharded and unsharded.

    torchrun --nproc-per-node=W zero_probe.py CONFIG EP OUT.json CKPT_DIR

Rank 0 writes, per rank, the optimizer-state bytes (dense and expert) of each mode, whether the
parameters after the steps are bitwise equal, and whether a run saved sharded and resumed unsharded
(and the other way) ends where the uninterrupted one does.
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
from moe_trainer.parallel.groups import is_expert_param
from moe_trainer.training.trainer import Trainer

STEPS = 4


def with_sharding(cfg: TrainerConfig, on: bool) -> TrainerConfig:
    return cfg.model_copy(update={"optim": cfg.optim.model_copy(update={"shard_state": on})})


def params(trainer: Trainer) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}


def state_bytes(trainer: Trainer) -> dict[str, int]:
    out = {"dense": 0, "expert": 0}
    for piece in trainer.plan.owned:
        state = trainer.opt.state[piece.param]  # type: ignore[index]
        kind = "expert" if is_expert_param(piece.name) else "dense"
        out[kind] += sum(t.numel() * t.element_size() for t in state.values())
    return out


def resumed(cfg: TrainerConfig, ctx: DistContext, save_sharded: bool, root: Path,
            pg: dist.ProcessGroup | None) -> dict[str, torch.Tensor]:
    """STEPS/2 steps in one mode, a checkpoint, the rest in the other mode from it."""
    first = Trainer(with_sharding(cfg, save_sharded), ctx, torch.device("cpu"))
    for _ in range(STEPS // 2):
        first.train_step()
    Checkpointer(root, 1, 0, lambda final: True, ctx.rank, pg).save(first.checkpoint_state(), first.step,
                                                                    asynchronous=False)
    dist.barrier()  # rank 0 moves the marker after every rank's files are written
    second = Trainer(with_sharding(cfg, not save_sharded), ctx, torch.device("cpu"))
    assert Checkpointer(root, 1, 0, lambda final: True, ctx.rank, pg).load_latest(second.checkpoint_state())
    second.restored()
    for _ in range(STEPS - STEPS // 2):
        second.train_step()
    return params(second)


def main() -> None:
    config, ep, out, ckpt = sys.argv[1:]
    cfg = load_trainer_config(config)
    cfg = cfg.model_copy(update={"parallel": cfg.parallel.model_copy(update={"expert_parallel": int(ep)})})
    ctx = init_distributed(cfg, torch.device("cpu"))
    group = dist.new_group(backend="gloo")
    pg = group if isinstance(group, dist.ProcessGroup) else None
    final, memory = {}, {}
    for on in (False, True):
        trainer = Trainer(with_sharding(cfg, on), ctx, torch.device("cpu"))
        for _ in range(STEPS):
            trainer.train_step()
        final[on], memory[on] = params(trainer), state_bytes(trainer)
    same = all(torch.equal(final[True][k], v) for k, v in final[False].items())
    resumes = {f"saved-{'sharded' if s else 'unsharded'}": all(
        torch.equal(v, final[False][k]) for k, v in resumed(cfg, ctx, s, Path(ckpt) / str(s), pg).items())
        for s in (True, False)}
    gathered: list[object] = [None] * ctx.world_size
    dist.all_gather_object(gathered, {"unsharded": memory[False], "sharded": memory[True], "equal": same,
                                      "resumes": resumes})
    if ctx.rank == 0:
        Path(out).write_text(json.dumps(gathered))
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
