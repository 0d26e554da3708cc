"""Expert parallelism: tokens travel to the rank holding their expert and back, by all-to-all.

Shape legend: N local assignments sorted by global expert, M assignments received, D model dim,
R ranks in the EP group, L experts per rank (E = R * L).

Because assignments are sorted by global expert and rank r holds experts [r*L, (r+1)*L), the rows
for each destination rank are already contiguous. One all-to-all of counts tells each rank how
many rows per local expert it receives from each source; the rows follow with a variable-split
all-to-all (differentiable: its backward is the reverse all-to-all), are regrouped expert-major for
the grouped GEMMs, and return by the reverse all-to-all in the order they came.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

from moe_trainer.model.experts import GroupedExperts


@dataclass(slots=True, frozen=True)
class ExpertShard:
    """Which slice of the experts this rank holds and the EP group that shares the rest."""

    rank: int
    """Position in the EP group."""
    size: int
    """EP degree (R)."""
    group: dist.ProcessGroup | None


class _AllToAll(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: Tensor, out_splits: list[int], in_splits: list[int], group: Any) -> Tensor:
        ctx.splits, ctx.group = (out_splits, in_splits), group
        out = x.new_empty((sum(out_splits), *x.shape[1:]))
        dist.all_to_all_single(out, x.contiguous(), out_splits, in_splits, group=group)
        return out

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        out_splits, in_splits = ctx.splits
        back = grad.new_empty((sum(in_splits), *grad.shape[1:]))
        dist.all_to_all_single(back, grad.contiguous(), in_splits, out_splits, group=ctx.group)
        return back, None, None, None


def all_to_all(x: Tensor, out_splits: list[int], in_splits: list[int], group: dist.ProcessGroup | None) -> Tensor:
    """Differentiable variable-split all-to-all over the first dimension."""
    out: Tensor = _AllToAll.apply(x, out_splits, in_splits, group)
    return out


def run_sharded_experts(experts: GroupedExperts, x_ND: Tensor, counts_E: Tensor, shard: ExpertShard) -> Tensor:
    """Send rows to their experts' ranks, compute there, bring the outputs back in the same order."""
    R, L = shard.size, experts.n_experts
    counts_RL = counts_E.view(R, L)
    recv_RL = torch.empty_like(counts_RL)
    dist.all_to_all_single(recv_RL, counts_RL.contiguous(), group=shard.group)
    send_R, recv_R = counts_RL.sum(1).tolist(), recv_RL.sum(1).tolist()
    x_MD = all_to_all(x_ND, recv_R, send_R, shard.group)
    # Rows arrive source-major, each source's block sorted by local expert: regroup expert-major.
    local_expert_M = torch.repeat_interleave(torch.arange(L, device=x_ND.device).repeat(R), recv_RL.reshape(-1))
    order_M = torch.argsort(local_expert_M, stable=True)
    y_sorted = experts(x_MD.index_select(0, order_M), recv_RL.sum(0))
    y_MD = torch.empty_like(y_sorted).index_copy(0, order_M, y_sorted)
    return all_to_all(y_MD, send_R, recv_R, shard.group)
