"""The expert-parallel (EP) x data-parallel (DP) layout of W ranks: a pure function both sides use.

The trainer lays its ranks out with it at each generation; the operator can ask it, without torch,
which world sizes a spec's `expertParallel` fits. Ranks are laid out EP-major: the EP group of rank r
is the EP consecutive ranks that contain it, and its DP group is the ranks with the same position in
their EP groups. Each rank holds E/EP experts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

DEFAULT_EP_CAP = 8
"""`auto` never picks EP above this: all-to-all cost grows with the group while experts per rank shrink."""


class LayoutError(ValueError):
    """No EP x DP layout fits the world size and expert count; the message says what would."""


@dataclass(slots=True, frozen=True)
class Layout:
    """EP x DP = world size."""

    world_size: int
    ep: int
    dp: int

    def ep_rank(self, rank: int) -> int:
        """Position of `rank` inside its EP group (selects its experts)."""
        return rank % self.ep

    def experts_of(self, rank: int, n_experts: int) -> range:
        """Global indices of the experts `rank` holds."""
        per = n_experts // self.ep
        start = self.ep_rank(rank) * per
        return range(start, start + per)


def plan_layout(world_size: int, n_routed_experts: int, policy: Literal["auto"] | int = "auto",
                cap: int = DEFAULT_EP_CAP) -> Layout:
    """EP and DP degrees for `world_size` ranks: EP divides both W and the expert count.

    `auto` picks the largest such EP not above `cap`; an int asks for that EP and fails if it does not fit.
    """
    if world_size < 1:
        raise LayoutError(f"world size must be >= 1, got {world_size}")
    if policy == "auto":
        ep = max(e for e in range(1, min(cap, world_size) + 1)
                 if world_size % e == 0 and n_routed_experts % e == 0)
        return Layout(world_size, ep, world_size // ep)
    ep = int(policy)
    if ep < 1 or world_size % ep or n_routed_experts % ep:
        fits = [e for e in range(1, world_size + 1) if world_size % e == 0 and n_routed_experts % e == 0]
        raise LayoutError(
            f"expertParallel={ep} does not divide both the world size ({world_size}) and the expert count "
            f"({n_routed_experts}); at this size choose one of {fits}, or use expertParallel=auto"
        )
    return Layout(world_size, ep, world_size // ep)
