"""DeepSeek-style Mixture-of-Experts feed-forward layer.

Shape legend:
    B sequences, S tokens per sequence, T = B*S tokens, D model dim, E routed experts,
    K experts chosen per token, F expert hidden dim, G expert groups, N kept assignments (<= T*K).

`MoE.forward` steps:
    1. the router scores every token against every routed expert: softmax or sigmoid of
       logits / temperature;
    2. selection adds the per-expert balancing bias (selection only, never the gate), keeps the
       top groups when group-limited, then picks the top K experts;
    3. gate weights are the unbiased scores of the chosen experts, normalised over the K, scaled;
    4. with a capacity factor, each expert keeps its highest-scored assignments up to capacity and
       drops the rest (their gate is zero and nothing is computed for them);
    5. assignments are sorted by expert and each expert runs one GEMM over its own tokens
       (`GroupedExperts`), outputs are weighted by the gate and summed back per token; with expert
       parallelism a token goes once to each rank holding some of its experts, which sums them there
       (`expert_parallel.dispatch_once_per_rank`);
    6. shared experts, applied to every token, are added.
The counts behind balancing, capacity and the statistics go through `balance.ExpertLoad`.

References: DeepSeekMoE (arXiv:2401.06066), DeepSeek-V3 (arXiv:2412.19437) for the sigmoid
router, group-limited routing and auxiliary-loss-free balancing.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dstj_api import MoEConfig
from moe_trainer.model.balance import ExpertLoad, RoutingStats, capacity
from moe_trainer.model.expert_parallel import ExpertShard, dispatch_once_per_rank
from moe_trainer.model.experts import GroupedExperts, SwiGLU

_RECOMPUTING: contextvars.ContextVar[bool] = contextvars.ContextVar("moe_recomputing", default=False)


@contextlib.contextmanager
def recomputing() -> Iterator[None]:
    """Mark an activation-checkpoint recomputation so routing counts are not recorded twice."""
    token = _RECOMPUTING.set(True)
    try:
        yield
    finally:
        _RECOMPUTING.reset(token)


@dataclass(slots=True)
class Routing:
    """What the router decided for T tokens."""

    expert_TK: Tensor
    """Chosen expert per token and slot (int64)."""
    gate_TK: Tensor
    """Gate weight per token and slot; zero where the assignment was dropped."""
    kept_TK: Tensor
    """False where the capacity limit dropped the assignment."""
    probs_TE: Tensor
    """Normalised router scores (sum to 1 per token), for the aux loss and the entropy."""


class Router(nn.Module):
    """Top-K router with a selection-only balancing bias and optional group-limited routing."""

    def __init__(self, dim: int, cfg: MoEConfig) -> None:
        super().__init__()
        self.n_routed, self.top_k = cfg.n_routed, cfg.top_k
        self.score_func, self.temperature = cfg.score_func, cfg.temperature
        self.n_groups, self.topk_groups = cfg.n_groups, cfg.topk_groups
        self.route_scale, self.capacity_factor = cfg.route_scale, cfg.capacity_factor
        self.weight_ED = nn.Parameter(torch.empty(cfg.n_routed, dim))
        nn.init.normal_(self.weight_ED, std=dim**-0.5)
        # Not trained by the optimizer: moved by ExpertLoad.finish_step after each step.
        self.expert_bias_E: Tensor
        self.register_buffer("expert_bias_E", torch.zeros(cfg.n_routed), persistent=True)

    def forward(self, x_TD: Tensor) -> Routing:
        """Route T tokens: choose K experts each, with gate weights and capacity drops."""
        logits_TE = F.linear(x_TD.float(), self.weight_ED.float()) / self.temperature
        scores_TE = logits_TE.softmax(dim=-1) if self.score_func == "softmax" else logits_TE.sigmoid()
        select_TE = scores_TE.detach() + self.expert_bias_E
        if self.n_groups > 1:
            select_TE = self._limit_groups(select_TE)
        expert_TK = select_TE.topk(self.top_k, dim=-1).indices
        gate_TK = scores_TE.gather(1, expert_TK)
        gate_TK = gate_TK / gate_TK.sum(dim=-1, keepdim=True).clamp_min(1e-20) * self.route_scale
        kept_TK = self._within_capacity(expert_TK, gate_TK.detach())
        probs_TE = scores_TE / scores_TE.sum(dim=-1, keepdim=True).clamp_min(1e-20)
        return Routing(expert_TK, gate_TK * kept_TK, kept_TK, probs_TE)

    def _limit_groups(self, select_TE: Tensor) -> Tensor:
        T = select_TE.shape[0]
        grouped_TGe = select_TE.view(T, self.n_groups, -1)
        if self.score_func == "sigmoid":  # DeepSeek-V3: a group scores the sum of its top-2 experts
            group_TG = grouped_TGe.topk(min(2, grouped_TGe.shape[-1]), dim=-1).values.sum(-1)
        else:  # DeepSeek-V2: a group scores its best expert
            group_TG = grouped_TGe.amax(dim=-1)
        top_groups = group_TG.topk(self.topk_groups, dim=-1).indices
        allowed_TG = torch.zeros_like(group_TG, dtype=torch.bool).scatter_(1, top_groups, True)
        return grouped_TGe.masked_fill(~allowed_TG.unsqueeze(-1), float("-inf")).view(T, -1)

    def _within_capacity(self, expert_TK: Tensor, gate_TK: Tensor) -> Tensor:
        """Keep each expert's highest-gated assignments up to its capacity (ties: earlier token)."""
        if self.capacity_factor is None:
            return torch.ones_like(expert_TK, dtype=torch.bool)
        T, K = expert_TK.shape
        cap = capacity(T, K, self.n_routed, self.capacity_factor)
        flat_expert = expert_TK.reshape(-1)
        by_gate = torch.argsort(-gate_TK.reshape(-1), stable=True)
        order = by_gate[torch.argsort(flat_expert[by_gate], stable=True)]
        counts_E = torch.bincount(flat_expert, minlength=self.n_routed)
        starts_E = torch.cumsum(counts_E, 0) - counts_E
        rank_in_expert = torch.arange(T * K, device=expert_TK.device) - starts_E[flat_expert[order]]
        kept = torch.empty(T * K, dtype=torch.bool, device=expert_TK.device)
        kept[order] = rank_in_expert < cap
        return kept.view(T, K)


class MoE(nn.Module):
    """`[tokens, dim] -> [tokens, dim]` DeepSeek-style MoE (batched `[B, S, dim]` is flattened).

    Built from the user's `dstj_api.MoEConfig` as it is (validated there: K <= E, groups divide E, ...),
    so a new routing setting is one field in the API and one read here, never a keyword threaded through.
    """

    def __init__(self, dim: int, cfg: MoEConfig) -> None:
        super().__init__()
        self.dim, self.n_routed, self.top_k = dim, cfg.n_routed, cfg.top_k
        self.aux_loss_weight = cfg.aux_loss_weight
        self.router = Router(dim, cfg)
        self.experts = GroupedExperts(cfg.n_routed, dim, cfg.expert_dim)
        self.shard: ExpertShard | None = None
        self.last_a2a_bytes = 0
        """Bytes the last forward's expert-parallel dispatch and combine sent to other ranks (0 without EP)."""
        self.shared = SwiGLU(dim, cfg.expert_dim * cfg.n_shared) if cfg.n_shared > 0 else None
        self.load = ExpertLoad(cfg.n_routed, cfg.bias_update_rate)
        self.aux_loss_sum: Tensor | None = None
        """Sum over this call's sequences of the weighted sequence-level balance loss (or None)."""

    def forward(self, x: Tensor) -> Tensor:
        """Route, compute the chosen experts on just their tokens, add the shared experts."""
        shape = x.shape
        x_TD = x.reshape(-1, self.dim)
        T = x_TD.shape[0]
        routing = self.router(x_TD)
        flat_expert = routing.expert_TK.reshape(-1)
        if self.shard is None:
            out_TD = self._run_local(x_TD, routing, flat_expert)
        else:
            out_TD, self.last_a2a_bytes = dispatch_once_per_rank(
                self.experts, x_TD, routing.expert_TK, routing.gate_TK, routing.kept_TK, self.shard
            )
        if self.shared is not None:
            out_TD = out_TD + self.shared(x_TD)
        self._account(routing, flat_expert, T, shape)
        return out_TD.to(x.dtype).view(shape)

    def _run_local(self, x_TD: Tensor, routing: Routing, flat_expert: Tensor) -> Tensor:
        """Step 5 on one rank holding every expert: the gated sum of each token's experts, `[T, D]`."""
        K = self.top_k
        # Sort kept assignments by expert; token of assignment a is a // K.
        kept_idx = routing.kept_TK.reshape(-1).nonzero().squeeze(1)
        order = kept_idx[torch.argsort(flat_expert[kept_idx], stable=True)]
        counts_E = torch.bincount(flat_expert[order], minlength=self.n_routed)
        token_N = order // K
        x_ND = x_TD.index_select(0, token_N)  # backward: index_add, cheaper than index_put
        y_ND = self.experts(x_ND, counts_E)
        weight_N1 = routing.gate_TK.reshape(-1)[order].unsqueeze(1).to(y_ND.dtype)
        return torch.zeros_like(x_TD, dtype=y_ND.dtype).index_add_(0, token_N, y_ND * weight_N1)

    def shard_experts(self, shard: ExpertShard) -> None:
        """Keep only this rank's E/R experts (global indices [rank*E/R, (rank+1)*E/R)); peers hold the rest."""
        per = self.n_routed // shard.size
        full = self.experts
        local = GroupedExperts(per, self.dim, full.w1_EDF.shape[-1]).to(full.w1_EDF.device)
        local.fp8 = full.fp8
        with torch.no_grad():
            for name in ("w1_EDF", "w3_EDF", "w2_EFD"):
                getattr(local, name).copy_(getattr(full, name)[shard.rank * per : (shard.rank + 1) * per])
        self.experts, self.shard = local, shard

    def seat_experts(self, shard: ExpertShard | None) -> None:
        """Hold the slice `shard` names (all experts when None) for a new layout, values left to a load.

        The module is reused when the slice has the same size (only its values change), else reallocated.
        """
        per = self.n_routed // (shard.size if shard else 1)
        current = self.experts.w1_EDF
        if self.experts.n_experts != per:
            fp8 = self.experts.fp8
            self.experts = GroupedExperts(per, self.dim, current.shape[-1]).to(current.device)
            self.experts.fp8 = fp8
        self.shard = shard

    def _account(self, routing: Routing, flat_expert: Tensor, T: int, shape: torch.Size) -> None:
        assigned_E = torch.bincount(flat_expert, minlength=self.n_routed)
        if not _RECOMPUTING.get():
            with torch.no_grad():  # statistics only: saves nothing for backward
                probs_TE = routing.probs_TE.detach()
                entropy_T = -(probs_TE * probs_TE.clamp_min(1e-20).log()).sum(-1)
                self.load.record(assigned_E, (~routing.kept_TK).sum(), entropy_T.sum(), T)
        self.aux_loss_sum = None
        if self.aux_loss_weight > 0:
            n_seq = shape[0] if len(shape) == 3 else 1
            self.aux_loss_sum = self.aux_loss_weight * sequence_balance_loss(
                routing.expert_TK.view(n_seq, -1, self.top_k), routing.probs_TE.view(n_seq, -1, self.n_routed)
            )

    def finish_step(self) -> RoutingStats:
        """At the optimizer-step boundary: update the balancing bias from global counts; return stats."""
        return self.load.finish_step(self.router.expert_bias_E)


def sequence_balance_loss(expert_BSK: Tensor, probs_BSE: Tensor) -> Tensor:
    """DeepSeek-V3 sequence-wise balance loss, summed over sequences: sum_i f_i * P_i per sequence.

    f_i = E / (K * S) * (tokens of the sequence routed to expert i); P_i = mean score of expert i.
    """
    B, S, K = expert_BSK.shape
    E = probs_BSE.shape[-1]
    counts_BE = torch.zeros(B, E, device=probs_BSE.device).scatter_add_(
        1, expert_BSK.reshape(B, -1), torch.ones(B, S * K, device=probs_BSE.device)
    )
    f_BE = counts_BE * (E / (K * S))
    p_BE = probs_BSE.mean(dim=1)
    return (f_BE * p_BE).sum()
