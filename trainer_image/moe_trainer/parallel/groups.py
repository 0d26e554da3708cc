"""The process groups of an expert-parallel (EP) x data-parallel (DP) layout, and the gradient sync over them.

The layout itself (`plan_layout`, `Layout`) is torch-free and lives in `dstj_api.layout`: ranks are
laid out EP-major, each rank holds E/EP experts; dense parameters are replicated on all W ranks, each
expert on the DP replicas of its EP position.

Gradient sync sums (the loss is already normalised by the global token count): dense gradients
over all W ranks, expert gradients over the expert's DP group.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors

from dstj_api.layout import Layout


@dataclass(slots=True)
class ParallelGroups:
    """The process groups of this rank under a layout (None where the group is this rank alone)."""

    layout: Layout
    rank: int
    ep_group: dist.ProcessGroup | None
    dp_group: dist.ProcessGroup | None


def build_groups(layout: Layout, rank: int) -> ParallelGroups:
    """Create every EP and DP group (collectively, on all ranks) and keep this rank's."""
    ep_group = dp_group = None
    if layout.world_size > 1:
        # new_group is collective: every rank creates every group, in the same order.
        for d in range(layout.dp):
            ranks = list(range(d * layout.ep, (d + 1) * layout.ep))
            group = dist.new_group(ranks)
            if rank in ranks and isinstance(group, dist.ProcessGroup):
                ep_group = group
        for e in range(layout.ep):
            ranks = list(range(e, layout.world_size, layout.ep))
            group = dist.new_group(ranks)
            if rank in ranks and isinstance(group, dist.ProcessGroup):
                dp_group = group
    return ParallelGroups(layout, rank, ep_group if layout.ep > 1 else None, dp_group if layout.dp > 1 else None)


def is_expert_param(name: str) -> bool:
    """Expert weights are sharded over EP; everything else is replicated."""
    return ".experts." in name


def _sum_over(grads: list[torch.Tensor], group: dist.ProcessGroup | None) -> None:
    if not grads:
        return
    flat = _flatten_dense_tensors(grads)
    dist.all_reduce(flat, op=dist.ReduceOp.SUM, group=group)
    for g, synced in zip(grads, _unflatten_dense_tensors(flat, grads), strict=True):
        g.copy_(synced)


def sync_gradients(model: nn.Module, groups: ParallelGroups) -> None:
    """Sum dense gradients over all ranks and expert gradients over their DP replicas."""
    if groups.layout.world_size == 1:
        return
    dense: list[torch.Tensor] = []
    expert: list[torch.Tensor] = []
    for name, p in model.named_parameters():
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        (expert if is_expert_param(name) else dense).append(p.grad)
    _sum_over(dense, None)
    if groups.layout.dp > 1:
        _sum_over(expert, groups.dp_group)


def clip_global_norm(model: nn.Module, max_norm: float | None, groups: ParallelGroups) -> float:
    """Clip to the norm of the whole model's gradient, each expert counted once; return the norm."""
    params = [(n, p) for n, p in model.named_parameters() if p.grad is not None]
    device = params[0][1].device if params else torch.device("cpu")
    dense_sq = torch.zeros((), dtype=torch.float64, device=device)
    expert_sq = torch.zeros((), dtype=torch.float64, device=device)
    for name, p in params:
        sq = p.grad.detach().double().pow(2).sum()  # type: ignore[union-attr]
        if is_expert_param(name):
            expert_sq += sq
        else:
            dense_sq += sq
    if groups.ep_group is not None:
        dist.all_reduce(expert_sq, group=groups.ep_group)
    norm = float((dense_sq + expert_sq).sqrt())
    if max_norm is not None and norm > max_norm:
        coef = max_norm / (norm + 1e-6)
        for _, p in params:
            p.grad.detach().mul_(coef)  # type: ignore[union-attr]
    return norm
