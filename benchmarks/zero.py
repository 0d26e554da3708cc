"""Optimizer-state sharding (ZeRO-1): parameter and optimizer memory per rank at W = 1, 2, 4, sharded and not,
and gloo's reduce-scatter against its all-reduce (why gradients are still all-reduced whole).

The `small` preset (16 experts) with auto EP (W=2: EP=2 DP=1; W=4: EP=4 DP=1) and with EP=1 (experts on
every rank, DP=W). The state is what AdamW holds after its first step; every rank is a real gloo process.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from benchmarks.timing import median_seconds
from dstj_api import TrainerConfig
from dstj_api.layout import plan_layout
from moe_trainer.model.transformer import Transformer
from moe_trainer.parallel.context import DistContext
from moe_trainer.parallel.groups import build_groups
from moe_trainer.parallel.zero import StatePlan, state_bytes
from moe_trainer.training.optim import build_optimizer
from moe_trainer.training.trainer import expert_shard

WORLDS = (1, 2, 4)
MIB = 2**20


def _config(shard: bool, ep: int | str) -> TrainerConfig:
    return TrainerConfig.model_validate({"model": {"preset": "small"}, "optim": {"shardState": shard},
                                         "parallel": {"expertParallel": ep}})


def _memory(rank: int, world: int, store: str, ep: int | str, out: Any) -> None:
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    for shard in (False, True):
        cfg = _config(shard, ep)
        layout = plan_layout(world, cfg.model.moe.n_routed, cfg.parallel.expert_parallel)
        ctx = DistContext(rank, world, build_groups(layout, rank))
        torch.manual_seed(0)
        model = Transformer(cfg.model)
        sharding = expert_shard(ctx)
        for moe in model.moe_layers():
            if sharding is not None:
                moe.shard_experts(sharding)
        plan = StatePlan(model, ctx, cfg.model.moe.n_routed, shard)
        opt = build_optimizer(plan, cfg.optim)
        for p in model.parameters():
            p.grad = torch.zeros_like(p)
        plan.attach_grads()
        opt.step()  # AdamW makes its state on the first step
        plan.gather_updated()
        params = sum(p.numel() * p.element_size() for p in model.parameters())
        out.put((shard, rank, params, state_bytes(opt)))
    dist.destroy_process_group()


def _collectives(rank: int, world: int, store: str, n: int, out: Any) -> None:
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    x, part = torch.randn(n), torch.empty(n // world)
    secs = median_seconds({"all_reduce": lambda: dist.all_reduce(x),
                           "reduce_scatter": lambda: dist.reduce_scatter_tensor(part, x)}, repeats=7, warmup=2)
    if rank == 0:
        out.put(secs)
    dist.destroy_process_group()


def _spawn(fn: Any, world: int, *args: Any) -> list[Any]:
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    with tempfile.TemporaryDirectory() as tmp:
        store = os.path.join(tmp, "store")
        procs = [ctx.Process(target=fn, args=(r, world, store, *args, out)) for r in range(world)]
        for p in procs:
            p.start()
        for p in procs:
            p.join()
        results = []
        while not out.empty():
            results.append(out.get())
        return results


def memory_per_rank(world: int, ep: int | str) -> dict[bool, tuple[int, int]]:
    """{sharded: (parameter bytes, optimizer-state bytes)}, each the largest over the ranks."""
    rows = _spawn(_memory, world, ep)
    return {shard: (max(r[2] for r in rows if r[0] == shard), max(r[3] for r in rows if r[0] == shard))
            for shard in (False, True)}


def run() -> dict[str, Any]:
    """Print and return the memory table and the collective timings."""
    print("\n## Optimizer-state sharding (ZeRO-1), `small` preset, fp32 AdamW, largest rank")
    print("| W | EP x DP | params MiB | optimizer state MiB, unsharded | sharded | sharded / unsharded |")
    print("|---|---|---|---|---|---|")
    table = {}
    for ep in ("auto", 1):
        for world in WORLDS:
            if ep == 1 and world == 1:
                continue
            mem = memory_per_rank(world, ep)
            layout = plan_layout(world, 16, ep)
            (params, full), (_, sharded) = mem[False], mem[True]
            table[(world, ep)] = mem
            print(f"| {world} | {layout.ep} x {layout.dp} | {params / MIB:.1f} | {full / MIB:.1f} | "
                  f"{sharded / MIB:.1f} | {sharded / full:.2f} |")
    n = 1 << 22
    print(f"\ngloo on {n * 4 // MIB} MiB of fp32 gradients, median ms: reduce-scatter (each rank keeps 1/W) "
          "against all-reduce (each rank gets all)")
    timings = {}
    for world in (2, 4):
        secs = _spawn(_collectives, world, n)[0]
        timings[world] = secs
        print(f"W={world}: all-reduce {secs['all_reduce'] * 1e3:.1f} ms, reduce-scatter "
              f"{secs['reduce_scatter'] * 1e3:.1f} ms ({secs['reduce_scatter'] / secs['all_reduce']:.2f}x)")
    return {"memory": table, "collectives": timings}


if __name__ == "__main__":
    run()
