"""Optimizer-state sharding (ZeRO-1) over this generation's own process groups.

The optimizer never steps the model's parameters directly: it steps *pieces*, leaf tensors that alias
the parameters' storage, one per checkpoint unit: a dense parameter whole, or one expert's slice of a
stacked expert weight (stored under its global expert index). Every piece has one owner:

- a dense piece (replicated on all W ranks) is owned by one of the W ranks;
- an expert piece (replicated on the DP ranks of its EP position) by one rank of that DP group.

Owners are assigned greedily, largest piece first, to the least-loaded member, so each rank holds about
1/W of the dense optimizer state and 1/DP of its experts'. Only the owner keeps AdamW state for a piece and
steps it; afterwards each group all-gathers the updated pieces from their owners (`gather_updated`).
Gradients are still all-reduced whole (`groups.sync_gradients`): gloo's reduce-scatter measured no cheaper
than its all-reduce (benchmarks/README.md), and clipping needs the global norm anyway.

Because a piece is a whole checkpoint unit, the checkpoint stores optimizer state per parameter name
(and global expert index) at any sharding: the owner writes it, a load at another sharding or layout
reads each piece into its new owner. Unsharded, every rank owns every piece it holds: the same code.

The plan is rebuilt for each generation (`Trainer.reconfigure`), with that generation's groups.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors

from moe_trainer.parallel.context import DistContext
from moe_trainer.parallel.groups import is_expert_param


@dataclass(slots=True, eq=False)
class Piece:
    """One unit of optimizer state: a dense parameter, or one expert's slice of an expert weight."""

    name: str
    """The parameter's name in the model."""
    expert: int | None
    """Global expert index of this slice (None: a dense parameter)."""
    view: torch.Tensor
    """The piece's values in the parameter's storage (what the all-gather writes)."""
    source: nn.Parameter
    """The model parameter it belongs to (its gradient is the piece's gradient source)."""
    local: int | None
    """Index of the slice in the local expert stack (None: dense)."""
    owner: int
    """Member index, in its group, of the rank that keeps this piece's optimizer state."""
    param: nn.Parameter | None = None
    """The leaf the optimizer steps (aliases `view`), made on the owner only."""

    @property
    def key(self) -> str:
        """The checkpoint name of this piece's optimizer state (`<name>` or `<name>.<global expert>`)."""
        return self.name if self.expert is None else f"{self.name}.{self.expert}"

    def grad(self) -> torch.Tensor | None:
        """The piece's slice of the parameter's (synchronised) gradient."""
        g = self.source.grad
        return g if g is None or self.local is None else g[self.local]


def _assign(pieces: list[tuple[int, int]], members: int) -> dict[int, int]:
    """Owner per piece index: largest first to the least-loaded member (ties: lowest index, then member)."""
    load = [0] * members
    owners: dict[int, int] = {}
    for index, numel in sorted(pieces, key=lambda p: (-p[1], p[0])):
        m = min(range(members), key=lambda i: (load[i], i))
        owners[index] = m
        load[m] += numel
    return owners


@dataclass(slots=True)
class _Group:
    """The pieces one process group shares, and this rank's member index in it."""

    pieces: list[Piece]
    members: int
    me: int
    group: dist.ProcessGroup | None


class StatePlan:
    """Which pieces this rank holds, which it owns, and the all-gather that spreads the owners' updates."""

    def __init__(self, model: nn.Module, ctx: DistContext, n_experts: int, shard: bool) -> None:
        layout = ctx.layout
        experts = layout.experts_of(ctx.rank, n_experts)
        dense: list[Piece] = []
        expert: list[Piece] = []
        for name, p in model.named_parameters():
            if not p.requires_grad:
                continue
            if is_expert_param(name):
                expert += [Piece(name, e, p.data[i], p, i, 0) for i, e in enumerate(experts)]
            else:
                dense.append(Piece(name, None, p.data, p, None, 0))
        w, dp = (layout.world_size, layout.dp) if shard else (1, 1)
        self.groups = [_Group(dense, w, ctx.rank if shard else 0, None),
                       _Group(expert, dp, ctx.rank // layout.ep if shard else 0, ctx.groups.dp_group)]
        for g in self.groups:
            owners = _assign([(i, p.view.numel()) for i, p in enumerate(g.pieces)], g.members)
            for i, piece in enumerate(g.pieces):
                piece.owner = owners[i]
                if piece.owner == g.me:
                    piece.param = nn.Parameter(piece.view, requires_grad=True)  # aliases the storage

    @property
    def pieces(self) -> list[Piece]:
        """Every piece this rank holds parameters for."""
        return [p for g in self.groups for p in g.pieces]

    @property
    def owned(self) -> list[Piece]:
        """The pieces whose optimizer state this rank keeps."""
        return [p for p in self.pieces if p.param is not None]

    def attach_grads(self) -> None:
        """Point each owned piece's gradient at its slice of the parameter's gradient (call before stepping)."""
        for p in self.owned:
            assert p.param is not None
            p.param.grad = p.grad()

    @torch.no_grad()
    def gather_updated(self) -> None:
        """Copy every piece's updated values from its owner to the other members (collective per group)."""
        for g in self.groups:
            if g.members == 1:
                continue
            by_member: list[list[torch.Tensor]] = [[] for _ in range(g.members)]
            for p in g.pieces:
                by_member[p.owner].append(p.view)
            sizes = [sum(t.numel() for t in ts) for ts in by_member]
            longest = max(sizes)
            ref = g.pieces[0].view
            mine = by_member[g.me]
            send = torch.zeros(longest, dtype=ref.dtype, device=ref.device)
            if mine:
                send[: sizes[g.me]] = _flatten_dense_tensors(mine)
            received = [torch.empty_like(send) for _ in range(g.members)]
            dist.all_gather(received, send, group=g.group)
            for m, views in enumerate(by_member):
                if m == g.me or not views:
                    continue
                for view, value in zip(views, _unflatten_dense_tensors(received[m][: sizes[m]], views), strict=True):
                    view.copy_(value)


def state_bytes(opt: torch.optim.Optimizer) -> int:
    """Bytes of optimizer state this rank holds (AdamW's moments and step counters)."""
    return sum(t.numel() * t.element_size() for s in opt.state.values() for t in s.values()
               if isinstance(t, torch.Tensor))
