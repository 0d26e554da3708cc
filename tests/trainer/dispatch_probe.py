"""Run under torchrun by test_dispatch: the expert-parallel layer against the one-process layer.

    torchrun --nproc-per-node=4 dispatch_probe.py OUT.json

Two cases, in one job of 4 ranks: EP=4 with routing limited to 2 of 4 expert groups, and EP=2 (ranks
{0, 1} and {2, 3}, each pair an EP group) with free routing. In each EP group every rank builds the same MoE
(E experts) and the same EP x T tokens; rank r feeds its T through its sharded copy, the one-process copy takes
all EP x T. Rank 0 writes, per case, the largest differences of the outputs and every gradient (the router's
and shared expert's summed over the group) and the bytes each rank of its group sent.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from dstj_api import MoEConfig
from moe_trainer.model.expert_parallel import ExpertShard
from moe_trainer.model.moe import MoE

E, K, D, F, T = 16, 4, 32, 16, 96
CASES = {"ep4-two-of-four-groups": (4, 4, 2), "ep2-free-routing": (2, 1, 1)}
"""name: (EP, nGroups, topkGroups)."""


def config(n_groups: int, topk_groups: int) -> MoEConfig:
    return MoEConfig(n_routed=E, top_k=K, expert_dim=F, n_shared=1, score_func="sigmoid", n_groups=n_groups,
                     topk_groups=topk_groups)


def tokens(ep: int) -> torch.Tensor:
    """The EP x T tokens of a group, drawn apart from the layers' initialisation."""
    return torch.randn(ep * T, D, generator=torch.Generator().manual_seed(1))


def compare(ep: int, n_groups: int, topk_groups: int, group: Any) -> dict[str, Any]:
    rank = dist.get_rank(group)
    torch.manual_seed(0)
    full = MoE(D, config(n_groups, topk_groups))
    sharded = MoE(D, config(n_groups, topk_groups))
    sharded.load_state_dict(full.state_dict())
    sharded.shard_experts(ExpertShard(rank, ep, group))
    x_all, g_all = tokens(ep), torch.randn(ep * T, D)
    mine = slice(rank * T, (rank + 1) * T)

    x_full = x_all.clone().requires_grad_()
    y_full = full(x_full)
    (y_full * g_all).sum().backward()
    x_mine = x_all[mine].clone().requires_grad_()
    y_mine = sharded(x_mine)
    (y_mine * g_all[mine]).sum().backward()

    per = E // ep
    diffs = {"output": (y_mine - y_full[mine]).abs().max(), "x.grad": (x_mine.grad - x_full.grad[mine]).abs().max()}
    for name, p in sharded.named_parameters():
        want = dict(full.named_parameters())[name].grad
        assert p.grad is not None and want is not None, name
        got = p.grad.clone()
        if name.startswith("experts."):
            want = want[rank * per : (rank + 1) * per]
        else:  # replicated: each rank's grad covers its own tokens only
            dist.all_reduce(got, group=group)
        diffs[name] = (got - want).abs().max()
    sent = [torch.zeros(1, dtype=torch.int64) for _ in range(ep)]
    dist.all_gather(sent, torch.tensor([sharded.last_a2a_bytes]), group=group)
    return {"max_abs_diff": {k: float(v) for k, v in diffs.items()}, "bytes_sent": [int(s) for s in sent]}


def main() -> None:
    out = Path(sys.argv[1])
    dist.init_process_group("gloo")
    world = dist.get_world_size()
    results = {}
    for name, (ep, n_groups, topk_groups) in CASES.items():
        groups = [dist.new_group(list(range(g, g + ep))) for g in range(0, world, ep)]
        results[name] = compare(ep, n_groups, topk_groups, groups[dist.get_rank() // ep])
    if dist.get_rank() == 0:
        out.write_text(json.dumps(results))
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
