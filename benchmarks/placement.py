"""Group-aligned expert placement: all-to-all bytes per token at EP = 2 and 4, with and without
rank-limited (group-limited) routing.

64 routed experts, top-6, dim 256, 4096 tokens of random activations through a sigmoid router (the
`base` preset's routing). "limited": nGroups 8, topkGroups 2, and EP divides nGroups, so a token reaches
at most 2 EP ranks; "free": nGroups 1. Bytes are counted from the routing, fp32 rows both ways
(dispatch and combine), only rows that leave their rank (1 - 1/EP of a uniform spread):
- per assignment: what `model/expert_parallel.py` sends today, one row per (token, expert);
- per rank: one row per (token, destination rank), what a dispatch that sends a token once to each
  rank it needs (and combines there) would send. Not built yet: the limit's saving shows here only.
"""

from __future__ import annotations

from typing import Any

import torch

from dstj_api import MoEConfig
from moe_trainer.model.moe import Router

E, K, DIM, TOKENS = 64, 6, 256, 4096


def bytes_per_token(ep: int, limited: bool) -> dict[str, float]:
    """Off-rank bytes per token, both ways, per assignment and per rank; and the most ranks a token reached."""
    torch.manual_seed(0)
    cfg = MoEConfig(n_routed=E, top_k=K, score_func="sigmoid", n_groups=8 if limited else 1,
                    topk_groups=2 if limited else 1)
    with torch.no_grad():
        expert_TK = Router(DIM, cfg)(torch.randn(TOKENS, DIM)).expert_TK
    rank_TK = expert_TK // (E // ep)
    source_T = torch.arange(TOKENS) % ep  # tokens spread evenly over the EP group's ranks
    off_TK = rank_TK != source_T[:, None]
    per_assignment = int(off_TK.sum())
    pairs = [set(r.tolist()) - {int(s)} for r, s in zip(rank_TK, source_T, strict=True)]
    per_rank = sum(len(p) for p in pairs)
    row = DIM * 4 * 2
    reached = max(len(set(r.tolist())) for r in rank_TK)
    return {"per_assignment": per_assignment * row / TOKENS, "per_rank": per_rank * row / TOKENS,
            "max_ranks": reached}


def run() -> dict[str, Any]:
    """Print and return the table."""
    print(f"\n## All-to-all bytes per token, {E} experts top-{K}, dim {DIM}, fp32, dispatch + combine")
    print("| EP | routing | most ranks a token reaches | per assignment (today) | per rank (deduplicated) |")
    print("|---|---|---|---|---|")
    out = {}
    for ep in (2, 4):
        for limited in (False, True):
            b = bytes_per_token(ep, limited)
            out[(ep, limited)] = b
            name = "limited: 2 of 8 groups" if limited else "free"
            print(f"| {ep} | {name} | {b['max_ranks']} | {b['per_assignment']:,.0f} B | {b['per_rank']:,.0f} B |")
    return out


if __name__ == "__main__":
    run()
