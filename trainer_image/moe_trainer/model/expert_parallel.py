"""Expert parallelism: each token travels once to every rank holding one of its experts, and back, by all-to-all.

Shape legend: T local tokens, K experts chosen per token, D model dim, R ranks in the EP group, L experts
per rank (E = R * L), P (token, destination rank) pairs this rank sends, M pairs it receives,
C = min(K, L) slots per pair (a token picks at most K experts, at most L of them on one rank),
A assignments computed here (rows of the grouped GEMMs).

`dispatch_once_per_rank` steps:
    1. pair each token with every rank that holds one of its kept experts, sorted by rank then token, so
       each destination's pairs are contiguous; each pair carries its token's hidden state and C slots of
       routing metadata (the local expert ids, -1 when unused, and their gate weights);
    2. one all-to-all of pair counts sizes the receive; the hidden states and gates travel in one
       differentiable all-to-all (its backward is the reverse all-to-all, so every rank runs the same
       collectives in the same order), the expert ids in a plain one;
    3. the receiver expands its pairs to (pair, expert) assignments sorted by local expert, runs the
       grouped GEMMs, weights each output by its gate and sums a pair's outputs (the combine);
    4. the combined rows return by the reverse all-to-all and the sender adds each to its token.
So a token's hidden state crosses to a rank once however many of its experts live there: with group-
aligned placement (`topkGroups` of `nGroups`, groups never split) it reaches at most `topkGroups` ranks.
The math is the single-process layer's; only the order of the gated sum changes (by rank, then by expert
within a rank), a rounding-level difference.
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


@dataclass(slots=True)
class Pairs:
    """Step 1: the (token, destination rank) pairs this rank sends, with their routing metadata."""

    token_P: Tensor
    """Source token of each pair, pairs sorted by destination rank then token."""
    send_R: list[int]
    """Pairs per destination rank."""
    expert_PC: Tensor
    """Local expert id per slot at the destination, -1 for an unused slot (int32)."""
    gate_PC: Tensor
    """Gate weight per slot, zero for an unused slot."""


def pair_tokens(expert_TK: Tensor, gate_TK: Tensor, kept_TK: Tensor, R: int, L: int) -> Pairs:
    """Group each token's kept assignments by the rank holding their expert (slots by ascending expert)."""
    T, K = expert_TK.shape
    C, dev = min(K, L), expert_TK.device
    rank_TK = expert_TK // L
    hits_TR = torch.zeros(T, R, dtype=torch.int64, device=dev).scatter_add_(1, rank_TK, kept_TK.long())
    rank_P, token_P = (hits_TR > 0).t().nonzero(as_tuple=True)  # row-major over (rank, token)
    pair_TR = torch.full((T, R), -1, dtype=torch.int64, device=dev)
    pair_TR[token_P, rank_P] = torch.arange(len(token_P), device=dev)
    kept_t, kept_k = kept_TK.nonzero(as_tuple=True)
    local_A = expert_TK[kept_t, kept_k] % L
    pair_A = pair_TR[kept_t, rank_TK[kept_t, kept_k]]
    order_A = torch.argsort(pair_A * L + local_A)
    pair_A, local_A = pair_A[order_A], local_A[order_A]
    firsts_P = torch.searchsorted(pair_A, torch.arange(len(token_P), device=dev))
    slot_A = torch.arange(len(pair_A), device=dev) - firsts_P[pair_A]
    expert_PC = torch.full((len(token_P), C), -1, dtype=torch.int32, device=dev)
    expert_PC[pair_A, slot_A] = local_A.to(torch.int32)
    gate_PC = gate_TK.new_zeros(len(token_P), C)
    gate_PC = gate_PC.index_put((pair_A, slot_A), gate_TK[kept_t, kept_k][order_A])
    return Pairs(token_P, torch.bincount(rank_P, minlength=R).tolist(), expert_PC, gate_PC)


def _combine_here(experts: GroupedExperts, x_MD: Tensor, expert_MC: Tensor, gate_MC: Tensor) -> Tensor:
    """Step 3: every received pair's experts, gated and summed per pair."""
    pair_A, slot_A = (expert_MC >= 0).nonzero(as_tuple=True)
    local_A = expert_MC[pair_A, slot_A].long()
    order_A = torch.argsort(local_A, stable=True)  # expert-major for the grouped GEMMs
    pair_A, slot_A = pair_A[order_A], slot_A[order_A]
    counts_L = torch.bincount(local_A, minlength=experts.n_experts)
    y_AD = experts(x_MD.index_select(0, pair_A), counts_L)
    weight_A1 = gate_MC[pair_A, slot_A].unsqueeze(1).to(y_AD.dtype)
    return y_AD.new_zeros(x_MD.shape[0], y_AD.shape[1]).index_add_(0, pair_A, y_AD * weight_A1)


def dispatch_once_per_rank(
    experts: GroupedExperts, x_TD: Tensor, expert_TK: Tensor, gate_TK: Tensor, kept_TK: Tensor, shard: ExpertShard
) -> tuple[Tensor, int]:
    """The routed experts' gated sum per token, `[T, D]`, and the bytes this rank sent to other ranks.

    Bytes: the pair counts, the pairs' payload (hidden state and gates) and expert ids, and the combined rows
    returned, each only where it leaves this rank; the backward moves the payload and returns in reverse.
    """
    R, L, D = shard.size, experts.n_experts, x_TD.shape[1]
    pairs = pair_tokens(expert_TK, gate_TK, kept_TK, R, L)
    send = torch.tensor(pairs.send_R, dtype=torch.int64, device=x_TD.device)
    recv = torch.empty_like(send)
    dist.all_to_all_single(recv, send, group=shard.group)
    recv_R = recv.tolist()
    payload_PX = torch.cat([x_TD.index_select(0, pairs.token_P), pairs.gate_PC.to(x_TD.dtype)], dim=1)
    payload_MX = all_to_all(payload_PX, recv_R, pairs.send_R, shard.group)
    expert_MC = pairs.expert_PC.new_empty((sum(recv_R), pairs.expert_PC.shape[1]))
    dist.all_to_all_single(expert_MC, pairs.expert_PC, recv_R, pairs.send_R, group=shard.group)
    combined_MD = _combine_here(experts, payload_MX[:, :D], expert_MC, payload_MX[:, D:])
    back_PD = all_to_all(combined_MD, pairs.send_R, recv_R, shard.group)
    out_TD = back_PD.new_zeros(x_TD.shape[0], back_PD.shape[1]).index_add_(0, pairs.token_P, back_PD)
    away, returned = sum(pairs.send_R) - pairs.send_R[shard.rank], sum(recv_R) - recv_R[shard.rank]
    sent = (8 * (R - 1) + away * (payload_PX.shape[1] * payload_PX.element_size() + 4 * expert_MC.shape[1])
            + returned * D * combined_MD.element_size())
    return out_TD, sent
