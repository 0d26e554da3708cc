"""Every routing decision made from token counts, in one place.

Shape legend: E routed experts.

The MoE layer records what its router decided (assignments per expert, dropped assignments,
router entropy) into an `ExpertLoad`; at the optimizer step boundary `finish_step` combines the
counts over all ranks with one small reduction (`reduce`, identity in one process, an all-reduce
in the elastic runtime), updates the auxiliary-loss-free balancing bias from the global load, and
returns the step's routing statistics. Because the bias update and the statistics see the counts
of the whole global batch, they do not depend on how many ranks shared it.

Capacity is decided per routing group (one forward call: a fixed micro-batch of whole sequences),
which is also independent of the world size; `capacity` is the one formula for it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

CountReducer = Callable[[Tensor], Tensor]
"""Sums a float64 tensor over every rank that shares the global batch (identity in one process)."""


def local_counts(t: Tensor) -> Tensor:
    """The reducer of a single process: its counts are already global."""
    return t


def capacity(n_tokens: int, top_k: int, n_experts: int, capacity_factor: float) -> int:
    """Assignments one expert may take in a routing group of `n_tokens` tokens."""
    return math.ceil(capacity_factor * n_tokens * top_k / n_experts)


@dataclass(slots=True, frozen=True)
class RoutingStats:
    """One optimizer step of one MoE layer, over the global batch."""

    tokens_per_expert: list[int]
    max_violation: float
    """max load / mean load - 1: 0 is perfect balance."""
    dropped_fraction: float
    """Share of (token, expert) assignments dropped by the capacity limit."""
    router_entropy: float
    """Mean entropy (nats) of the normalised router scores per token."""


class ExpertLoad:
    """Accumulates one MoE layer's routing counts over a step and applies the balancing-bias update."""

    def __init__(self, n_experts: int, bias_update_rate: float, reduce: CountReducer = local_counts) -> None:
        self.n_experts = n_experts
        self.bias_update_rate = bias_update_rate
        self.reduce = reduce
        # [assignments per expert (E) | dropped | entropy sum | tokens], float64 so sums stay exact.
        self._acc = torch.zeros(n_experts + 3, dtype=torch.float64)

    def record(self, assigned_E: Tensor, dropped: Tensor, entropy_sum: Tensor, n_tokens: int) -> None:
        """Add one routing group's counts (called by the MoE forward, never during recomputation)."""
        acc = self._acc
        acc[: self.n_experts] += assigned_E.detach().to(acc.device, torch.float64)
        acc[self.n_experts] += float(dropped)
        acc[self.n_experts + 1] += float(entropy_sum)
        acc[self.n_experts + 2] += n_tokens

    def reset(self) -> None:
        """Forget counts recorded since the last step (e.g. by an evaluation pass)."""
        self._acc.zero_()

    def finish_step(self, bias_E: Tensor) -> RoutingStats:
        """Reduce the step's counts over all ranks, nudge `bias_E` toward balance, reset, report."""
        total = self.reduce(self._acc.clone())
        self._acc.zero_()
        load_E = total[: self.n_experts]
        assigned = float(load_E.sum())
        mean = assigned / self.n_experts
        if self.bias_update_rate > 0 and assigned > 0:
            # DeepSeek-V3: raise the bias of under-loaded experts, lower over-loaded ones, by sign only.
            err_E = (mean - load_E).sign().to(bias_E.device, bias_E.dtype)
            with torch.no_grad():
                bias_E.add_(self.bias_update_rate * err_E)
        n_tokens = float(total[self.n_experts + 2])
        return RoutingStats(
            tokens_per_expert=[int(v) for v in load_E.tolist()],
            max_violation=float(load_E.max()) / mean - 1.0 if mean > 0 else 0.0,
            dropped_fraction=float(total[self.n_experts]) / assigned if assigned > 0 else 0.0,
            router_entropy=float(total[self.n_experts + 1]) / n_tokens if n_tokens > 0 else 0.0,
        )
