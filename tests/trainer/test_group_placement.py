"""Group-aligned expert placement: EP divides nGroups, so topkGroups bounds the EP ranks a token reaches,
with routing that never looks at the layout."""

from __future__ import annotations

import pytest
import torch

from dstj_api import ConfigError, MoEConfig, load_trainer_config
from dstj_api.layout import Layout, LayoutError, plan_layout
from moe_trainer.model.moe import Router

E, G, K, D = 16, 4, 4, 32


def ranks_reached(world: int, topk_groups: int, ep: int | str = "auto") -> tuple[torch.Tensor, torch.Tensor]:
    """(EP ranks each of 512 tokens reaches, the experts chosen) at `world` ranks."""
    torch.manual_seed(0)
    layout = plan_layout(world, E, ep, n_groups=G) if ep == "auto" else Layout(world, int(ep), world // int(ep))
    router = Router(D, MoEConfig(n_routed=E, top_k=K, n_groups=G, topk_groups=topk_groups, score_func="sigmoid"))
    with torch.no_grad():
        expert_TK = router(torch.randn(512, D)).expert_TK
    rank_TK = expert_TK // (E // layout.ep)
    return torch.tensor([len(set(row.tolist())) for row in rank_TK]), expert_TK


@pytest.mark.parametrize("world", [2, 4, 8])
@pytest.mark.parametrize("topk_groups", [1, 2])
def test_a_token_reaches_at_most_topk_groups_ranks_at_every_world_size(world: int, topk_groups: int) -> None:
    reached, _ = ranks_reached(world, topk_groups)
    assert int(reached.max()) <= topk_groups


def test_routing_is_the_same_at_every_world_size() -> None:
    chosen = [ranks_reached(w, 2)[1] for w in (1, 2, 4, 8)]
    assert all(torch.equal(c, chosen[0]) for c in chosen)


def test_a_layout_that_split_groups_would_break_the_bound() -> None:
    """The check above has teeth: 8 ranks for 4 groups split each group in two, and tokens reach more ranks."""
    reached, _ = ranks_reached(8, 1, ep=8)
    assert int(reached.max()) > 1


def test_auto_never_splits_a_group_and_a_fixed_ep_that_would_is_refused() -> None:
    assert plan_layout(8, E, n_groups=G) == Layout(8, 4, 2)  # 8 would divide the experts, not the groups
    with pytest.raises(LayoutError, match=r"expertParallel=8 .* expert group count \(4, groups are never split\)"):
        plan_layout(8, E, 8, n_groups=G)
    with pytest.raises(ConfigError, match=r"parallel\.expertParallel \(8\) must divide model\.moe\.nGroups \(4\)"):
        load_trainer_config({"model": {"preset": "tiny", "moe": {"nRouted": E, "nGroups": G}},
                             "parallel": {"expertParallel": 8}})
