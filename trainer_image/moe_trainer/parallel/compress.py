"""Gradient reduction, plain or compressed (bf16, or int8 with a scale per block) with error feedback.

`optim.gradCompression` picks how each group's gradients (dense over all W ranks, an expert's over its DP
replicas) are summed:

- `none`: one fp32 all-reduce of the flattened gradients (`groups.sync_gradients`).
- `bf16` / `int8`: a reduce-scatter built on `all_to_all_single` (an int8 sum would overflow and has no
  scale, so it cannot be an all-reduce), then an all-gather. Per group of n members, over the flat
  gradient x (this rank's, plus its residual):
      1. quantise x (int8: blocks of BLOCK values, scale = max|block| / 127; bf16: round); what was lost
         stays in this rank's residual (error feedback) and is added to its next step's gradient;
      2. all-to-all: member j receives every member's quantised chunk j (chunks are whole blocks);
      3. member j dequantises them, sums in fp32 in member order, requantises its summed chunk, and keeps
         that rounding error in its residual too (the next sum then carries it, as it carries step 1's);
      4. all-gather the requantised chunks: every member dequantises the same bytes, so replicas stay equal.

Bytes counted (`last_bytes`) are what this rank hands to collectives for other ranks: (n-1) chunks and
their scales in each of steps 2 and 4. The fp32 all-reduce is counted as a ring all-reduce moves it, the
least any all-reduce moves: 2 (n-1)/n of the gradient bytes.

The residual is training state. It is checkpointed per parameter name (global index for an expert slice)
as its SUM over the members of its group, which is what the next reduction would have added; a load, at
any world size or layout, gives that sum to the first member of each group and zero to the others, so
the next reduced gradient carries the same correction whatever the new W (resharded, not reset). Where
a group has one member (W=1, or DP=1 for experts) nothing is reduced or compressed and there is no
residual: a checkpoint taken there has none, and one loaded there drops it. A checkpoint without
residuals (saved uncompressed) starts them at zero.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.distributed as dist
from torch import nn
from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors

from moe_trainer.parallel.context import DistContext
from moe_trainer.parallel.groups import is_expert_param, sync_gradients

Mode = Literal["none", "bf16", "int8"]

BLOCK = 256
"""Values per int8 scale: 4 bytes of scale per 256 bytes of payload (1.6%), and one outlier spoils
only its own block."""
RESIDUAL_PREFIX = "comm.residual."
"""Checkpoint keys of the error-feedback residuals (absent from checkpoints of uncompressed runs)."""


def quantize(x: torch.Tensor, mode: Mode) -> tuple[torch.Tensor, torch.Tensor | None]:
    """`x` (fp32, a multiple of BLOCK long for int8) as (payload, scales or None)."""
    if mode == "bf16":
        return x.to(torch.bfloat16), None
    blocks = x.view(-1, BLOCK)
    scale = blocks.abs().amax(dim=1) / 127.0
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    return torch.round(blocks / scale[:, None]).clamp_(-127, 127).to(torch.int8).view(-1), scale


def dequantize(payload: torch.Tensor, scale: torch.Tensor | None) -> torch.Tensor:
    """The fp32 values a payload (and its block scales) stands for."""
    if scale is None:
        return payload.float()
    return (payload.float().view(-1, BLOCK) * scale[:, None]).view(-1)


@dataclass(slots=True, eq=False)
class _Slot:
    """One parameter (or one expert's slice of one) in a group's flat gradient."""

    key: str
    """Checkpoint name: the parameter's, with `.<global expert>` for an expert slice."""
    param: nn.Parameter
    local: int | None
    """Index in the local expert stack (None: the whole parameter)."""


class _Group:
    """The parameters one process group reduces together, with this rank's residual over them."""

    def __init__(self, params: list[tuple[str, nn.Parameter]], experts: range | None, members: int, me: int,
                 group: dist.ProcessGroup | None) -> None:
        self.params = [p for _, p in params]
        self.members, self.me, self.group = members, me, group
        self.slots: list[_Slot] = []
        for name, p in params:
            if experts is None:
                self.slots.append(_Slot(name, p, None))
            else:
                self.slots += [_Slot(f"{name}.{e}", p, i) for i, e in enumerate(experts)]
        self.numel = sum(p.numel() for p in self.params)
        self.residual = torch.zeros(self.numel, device=self.params[0].device) if self.params else torch.zeros(0)

    def views(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per slot, its part of a flat tensor laid out like this group's gradients."""
        shaped = dict(zip(self.params, _unflatten_dense_tensors(flat, self.params), strict=True))
        return {s.key: shaped[s.param] if s.local is None else shaped[s.param][s.local] for s in self.slots}

    def reduce(self, mode: Mode) -> int:
        """Sum the group's gradients in place, compressed; return the bytes this rank sent."""
        n = self.members
        grads = [p.grad for p in self.params]
        x = _flatten_dense_tensors(grads) + self.residual
        chunk = -(-self.numel // (n * BLOCK)) * BLOCK
        padded = torch.zeros(n * chunk, device=x.device)
        padded[: self.numel] = x
        payload, scale = quantize(padded, mode)
        lost = padded - dequantize(payload, scale)
        received = torch.empty_like(payload)
        dist.all_to_all_single(received, payload, group=self.group)
        rscale = None
        if scale is not None:
            rscale = torch.empty_like(scale)
            dist.all_to_all_single(rscale, scale, group=self.group)
        parts = [dequantize(received[i * chunk : (i + 1) * chunk],
                            None if rscale is None else rscale.view(n, -1)[i]) for i in range(n)]
        summed = parts[0]
        for part in parts[1:]:
            summed = summed + part
        out_payload, out_scale = quantize(summed, mode)
        mine = slice(self.me * chunk, (self.me + 1) * chunk)
        lost[mine] += summed - dequantize(out_payload, out_scale)
        self.residual = lost[: self.numel].clone()
        gathered = torch.empty_like(payload)
        dist.all_gather_into_tensor(gathered, out_payload, group=self.group)
        gscale = None
        if out_scale is not None and scale is not None:
            gscale = torch.empty_like(scale)
            dist.all_gather_into_tensor(gscale, out_scale, group=self.group)
        total = dequantize(gathered, gscale)[: self.numel]
        for g, value in zip(grads, _unflatten_dense_tensors(total, grads), strict=True):
            g.copy_(value)  # type: ignore[union-attr]
        scale_bytes = 0 if scale is None else (chunk // BLOCK) * 4
        return 2 * (n - 1) * (chunk * payload.element_size() + scale_bytes)


class GradReducer:
    """Sums this rank's gradients over their replicas each step, as `optim.gradCompression` says."""

    def __init__(self, model: nn.Module, ctx: DistContext, n_experts: int, mode: Mode) -> None:
        self.model, self.ctx, self.mode = model, ctx, mode
        layout = ctx.layout
        self.last_bytes = 0
        """Bytes this rank handed to collectives for other ranks in the last `sync`."""
        dense = [(n, p) for n, p in model.named_parameters() if not is_expert_param(n)]
        expert = [(n, p) for n, p in model.named_parameters() if is_expert_param(n)]
        self.groups: list[_Group] = []
        if mode != "none" and layout.world_size > 1:
            self.groups.append(_Group(dense, None, layout.world_size, ctx.rank, None))
            if expert and layout.dp > 1:
                self.groups.append(_Group(expert, layout.experts_of(ctx.rank, n_experts), layout.dp,
                                          ctx.rank // layout.ep, ctx.groups.dp_group))
        self._plain = {"dense": sum(p.numel() for _, p in dense), "expert": sum(p.numel() for _, p in expert)}
        self._loaded: dict[str, torch.Tensor] = {}

    def sync(self) -> int:
        """Sum the gradients over their replicas in place; return (and keep) the bytes this rank sent."""
        layout = self.ctx.layout
        if layout.world_size == 1:
            self.last_bytes = 0
            return 0
        if not self.groups:
            sync_gradients(self.model, self.ctx.groups)
            ring = 2 * (layout.world_size - 1) * self._plain["dense"] * 4 // layout.world_size
            ring += 2 * (layout.dp - 1) * self._plain["expert"] * 4 // layout.dp
            self.last_bytes = ring
            return ring
        for p in self.model.parameters():
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        self.last_bytes = sum(g.reduce(self.mode) for g in self.groups)
        return self.last_bytes

    def checkpoint_entries(self) -> dict[str, torch.Tensor]:
        """The residuals summed over each group, by name (collective over the groups: call on every rank).

        The same tensors are filled by a load; `adopt_loaded` then hands them to the first member."""
        out: dict[str, torch.Tensor] = {}
        for g in self.groups:
            total = g.residual.clone()
            dist.all_reduce(total, group=g.group)
            out.update({RESIDUAL_PREFIX + k: v for k, v in g.views(total).items()})
        self._loaded = out
        return out

    def adopt_loaded(self, present: set[str]) -> None:
        """After a load into `checkpoint_entries()`: the first member of each group takes the summed residual,
        the others start from zero; keys the checkpoint did not have (in `present` not) start at zero."""
        for g in self.groups:
            flat = torch.zeros_like(g.residual)
            if g.me == 0:
                views = g.views(flat)
                for k, view in views.items():
                    if RESIDUAL_PREFIX + k in present:
                        view.copy_(self._loaded[RESIDUAL_PREFIX + k])
            g.residual = flat
