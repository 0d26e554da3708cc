"""Run under torchrun by test_dispatch: the expert-parallel layer against the one-process layer.

    torchrun --nproc-per-node=R dispatch_probe.py N_GROUPS TOPK_GROUPS OUT.json

Every rank builds the same MoE (E experts, EP = R) and the same R x T tokens; rank r feeds its T through its
sharded copy, the one-process copy takes all R x T. Rank 0 writes the largest differences of the outputs
and every gradient (the router's and shared expert's summed over ranks), and each rank's bytes sent.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist

from dstj_api import MoEConfig
from moe_trainer.model.expert_parallel import ExpertShard
from moe_trainer.model.moe import MoE

E, K, D, F, T = 16, 4, 32, 16, 96


def tokens(world: int) -> torch.Tensor:
    """The R x T tokens, drawn apart from the layers' initialisation."""
    return torch.randn(world * T, D, generator=torch.Generator().manual_seed(1))


def main() -> None:
    n_groups, topk_groups, out = int(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3])
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    cfg = MoEConfig(n_routed=E, top_k=K, expert_dim=F, n_shared=1, score_func="sigmoid", n_groups=n_groups,
                    topk_groups=topk_groups)
    torch.manual_seed(0)
    full = MoE(D, cfg)
    sharded = MoE(D, cfg)
    sharded.load_state_dict(full.state_dict())
    sharded.shard_experts(ExpertShard(rank, world, None))
    x_all, g_all = tokens(world), torch.randn(world * T, D)
    mine = slice(rank * T, (rank + 1) * T)

    x_full = x_all.clone().requires_grad_()
    y_full = full(x_full)
    (y_full * g_all).sum().backward()
    x_mine = x_all[mine].clone().requires_grad_()
    y_mine = sharded(x_mine)
    (y_mine * g_all[mine]).sum().backward()

    per = E // world
    diffs = {"output": (y_mine - y_full[mine]).abs().max(), "x.grad": (x_mine.grad - x_full.grad[mine]).abs().max()}
    for name, p in sharded.named_parameters():
        want = dict(full.named_parameters())[name].grad
        assert p.grad is not None and want is not None, name
        got = p.grad.clone()
        if name.startswith("experts."):
            want = want[rank * per : (rank + 1) * per]
        else:  # replicated: each rank's grad covers its own tokens only
            dist.all_reduce(got)
        diffs[name] = (got - want).abs().max()
    sent = [torch.zeros(1, dtype=torch.int64) for _ in range(world)]
    dist.all_gather(sent, torch.tensor([sharded.last_a2a_bytes]))
    if rank == 0:
        out.write_text(json.dumps({"max_abs_diff": {k: float(v) for k, v in diffs.items()},
                                   "bytes_sent": [int(s) for s in sent]}))
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
