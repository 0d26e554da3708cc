"""The expert-parallel (EP) x data-parallel (DP) layout of W ranks: a pure function both sides use.

The trainer lays its ranks out with it at each generation; the operator can ask it, without torch,
which world sizes a spec's `expertParallel` fits. Ranks are laid out EP-major: the EP group of rank r
is the EP consecutive ranks that contain it, and its DP group is the ranks with the same position in
their EP groups. Each rank holds E/EP experts.

With group-limited routing (`nGroups` > 1) EP must also divide the group count: rank r holds the
consecutive experts [r*E/EP, (r+1)*E/EP), so each rank then holds whole groups, no group is split, and
a token routed into `topkGroups` groups reaches at most `topkGroups` EP ranks (DeepSeek-V3's node
limit) while the routing itself never looks at the layout, so a step's math stays the same at every W.
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
                cap: int = DEFAULT_EP_CAP, n_groups: int = 1) -> Layout:
    """EP and DP degrees for `world_size` ranks: EP divides W, the expert count and (when > 1) the group count.

    `auto` picks the largest such EP not above `cap`; an int asks for that EP and fails if it does not fit.
    """
    if world_size < 1:
        raise LayoutError(f"world size must be >= 1, got {world_size}")
    units = n_groups if n_groups > 1 else n_routed_experts  # groups divide the experts (a config rule)
    if policy == "auto":
        ep = max(e for e in range(1, min(cap, world_size) + 1) if world_size % e == 0 and units % e == 0)
        return Layout(world_size, ep, world_size // ep)
    ep = int(policy)
    if ep < 1 or world_size % ep or units % ep:
        fits = [e for e in range(1, world_size + 1) if world_size % e == 0 and units % e == 0]
        what = f"the expert group count ({n_groups}, groups are never split)" if n_groups > 1 else \
            f"the expert count ({n_routed_experts})"
        raise LayoutError(
            f"expertParallel={ep} does not divide both the world size ({world_size}) and {what}; at this size "
            f"choose one of {fits}, or use expertParallel=auto"
        )
    return Layout(world_size, ep, world_size // ep)
