"""Once-per-rank expert dispatch: a token's hidden state crosses to each rank holding its experts once, the
layer's math stays the one-process layer's, and with group-aligned placement the bytes fall."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from moe_trainer.model.expert_parallel import pair_tokens
from moe_trainer.model.moe import MoE
from tests.trainer.dispatch_probe import CASES, D, E, K, T, config, tokens
from tests.trainer.elastic_harness import torchrun

PROBE = Path(__file__).with_name("dispatch_probe.py")


def test_a_token_is_paired_once_with_each_rank_holding_its_experts_and_carries_their_ids_and_gates() -> None:
    # 2 ranks of 4 experts: token 0 picks experts 1, 2 (rank 0) and 5 (rank 1); token 1 picks 6 and 4
    # (rank 1) and 0, whose assignment the capacity limit dropped.
    expert_TK = torch.tensor([[2, 5, 1], [6, 0, 4]])
    gate_TK = torch.tensor([[0.2, 0.5, 0.3], [0.6, 0.0, 0.4]])
    kept_TK = torch.tensor([[True, True, True], [True, False, True]])
    pairs = pair_tokens(expert_TK, gate_TK, kept_TK, R=2, L=4)
    assert pairs.token_P.tolist() == [0, 0, 1]  # rank 0: token 0; rank 1: tokens 0 and 1
    assert pairs.send_R == [1, 2]
    assert pairs.expert_PC.tolist() == [[1, 2, -1], [1, -1, -1], [0, 2, -1]]  # local ids, ascending
    assert torch.equal(pairs.gate_PC, torch.tensor([[0.3, 0.2, 0.0], [0.5, 0.0, 0.0], [0.4, 0.6, 0.0]]))


def routed(ep: int, n_groups: int, topk_groups: int) -> torch.Tensor:
    """The experts the probe's layer picks for its EP x T tokens (same seed, same tokens)."""
    torch.manual_seed(0)
    moe = MoE(D, config(n_groups, topk_groups))
    with torch.no_grad():
        return moe.router(tokens(ep)).expert_TK


def expected_bytes(expert_TK: torch.Tensor, world: int) -> tuple[list[int], list[int]]:
    """Per source rank: what once-per-rank dispatch sends (pair counts, hidden state + gates + expert ids out,
    combined rows back), and what one row per (token, expert) each way would send."""
    L, C = E // world, min(K, E // world)
    per_rank, per_assignment = [], []
    for src in range(world):
        mine = expert_TK[src * T : (src + 1) * T] // L
        away = sum(len(set(row.tolist()) - {src}) for row in mine)
        received = sum(int(((expert_TK[o * T : (o + 1) * T] // L) == src).any(1).sum())
                       for o in range(world) if o != src)
        per_rank.append(8 * (world - 1) + away * (4 * (D + C) + 4 * C) + received * 4 * D)
        per_assignment.append(2 * int((mine != src).sum()) * 4 * D)
    return per_rank, per_assignment


@pytest.mark.slow
def test_the_expert_parallel_layer_equals_the_one_process_layer_and_sends_each_token_once_per_rank(
    tmp_path: Path,
) -> None:
    out = tmp_path / "probe.json"
    torchrun(PROBE, 4, str(out))
    for case, got in json.loads(out.read_text()).items():
        ep, n_groups, topk_groups = CASES[case]
        diffs = got["max_abs_diff"]
        assert diffs["output"] <= 1e-6 and diffs["x.grad"] <= 1e-6, (case, diffs)  # only the sum's order differs
        assert all(v <= 1e-4 for v in diffs.values()), (case, diffs)

        expert_TK = routed(ep, n_groups, topk_groups)
        per_rank, per_assignment = expected_bytes(expert_TK, ep)
        assert got["bytes_sent"] == per_rank, case
        if n_groups > 1:
            reached = torch.tensor([len(set(row.tolist())) for row in (expert_TK // (E // ep))])
            assert int(reached.max()) <= topk_groups  # the routing limit, on the layer's own routing
            assert sum(per_rank) < 0.75 * sum(per_assignment), (per_rank, per_assignment)
