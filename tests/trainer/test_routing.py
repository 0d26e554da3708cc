"""Router behaviour: capacity dropping, auxiliary-loss-free balancing, statistics, aux loss."""

from __future__ import annotations

import math

import torch

from dstj_api import MoEConfig
from moe_trainer.model.balance import capacity
from moe_trainer.model.moe import MoE


def test_capacity_keeps_exactly_the_capacity_of_highest_gated_assignments_per_expert() -> None:
    torch.manual_seed(1)
    E, K, T, cf = 8, 2, 96, 1.25
    moe = MoE(16, MoEConfig(expert_dim=8, n_routed=E, n_shared=0, top_k=K, capacity_factor=cf))
    with torch.no_grad():
        moe.router.expert_bias_E[:2] = 5.0  # experts 0 and 1 are chosen by every token
        x = torch.randn(T, 16)
        routing = moe.router(x)
        moe.router.capacity_factor = None
        full_gate_TK = moe.router(x).gate_TK
    cap = capacity(T, K, E, cf)
    assert cap == math.ceil(cf * T * K / E)
    for e in range(E):
        mine = routing.expert_TK == e
        assigned, kept = int(mine.sum()), int((mine & routing.kept_TK).sum())
        assert kept == min(assigned, cap), f"expert {e}: {assigned} assigned, {kept} kept, capacity {cap}"
        if assigned > cap:  # the kept assignments are those with the highest (pre-drop) gates
            kept_min = full_gate_TK[mine & routing.kept_TK].min()
            dropped_max = full_gate_TK[mine & ~routing.kept_TK].max()
            assert kept_min >= dropped_max
            assert (routing.gate_TK[mine & ~routing.kept_TK] == 0).all()
    assert int((~routing.kept_TK).sum()) == sum(
        max(0, int((routing.expert_TK == e).sum()) - cap) for e in range(E)
    )


def test_dropped_fraction_is_reported_in_the_step_statistics() -> None:
    torch.manual_seed(2)
    moe = MoE(16, MoEConfig(expert_dim=8, n_routed=4, n_shared=0, top_k=1, capacity_factor=1.0))
    with torch.no_grad():
        moe.router.expert_bias_E[0] = 10.0  # everything wants expert 0; capacity allows a quarter
        moe(torch.randn(40, 16))
    stats = moe.finish_step()
    assert stats.tokens_per_expert == [40, 0, 0, 0]
    assert stats.dropped_fraction == 30 / 40
    assert stats.max_violation == 40 / 10 - 1


def test_bias_balancing_reduces_max_violation_of_a_skewed_router_over_steps() -> None:
    torch.manual_seed(3)
    D, E = 32, 16
    moe = MoE(D, MoEConfig(expert_dim=16, n_routed=E, n_shared=0, top_k=2, score_func="sigmoid", bias_update_rate=0.02))
    direction = torch.randn(D)
    with torch.no_grad():  # four experts align with the data's mean direction: a badly skewed router
        moe.router.weight_ED[:4] += 0.8 * direction / direction.norm()
    violations = []
    for _ in range(120):
        with torch.no_grad():
            moe(torch.randn(256, D) + direction)
        violations.append(moe.finish_step().max_violation)
    assert violations[0] > 2.0, violations[0]
    assert sum(violations[-10:]) / 10 < 0.35 * violations[0], (violations[0], violations[-10:])


def test_balancing_bias_changes_selection_but_never_the_gate_values() -> None:
    torch.manual_seed(4)
    # K = E: every expert is chosen
    moe = MoE(16, MoEConfig(expert_dim=8, n_routed=8, n_shared=0, top_k=8, score_func="softmax"))
    x = torch.randn(10, 16)
    with torch.no_grad():
        before = moe.router(x).gate_TK.sort(dim=-1).values
        moe.router.expert_bias_E.copy_(torch.randn(8))
        after = moe.router(x).gate_TK.sort(dim=-1).values
    torch.testing.assert_close(before, after)


def test_router_entropy_is_maximal_for_a_uniform_router() -> None:
    moe = MoE(16, MoEConfig(expert_dim=8, n_routed=8, n_shared=0, top_k=2))
    with torch.no_grad():
        moe.router.weight_ED.zero_()
        moe(torch.randn(12, 16))
    assert abs(moe.finish_step().router_entropy - math.log(8)) < 1e-6


def test_sequence_aux_loss_is_off_by_default_and_trains_the_router_when_on() -> None:
    torch.manual_seed(5)
    off = MoE(16, MoEConfig(expert_dim=8, n_routed=8, n_shared=0, top_k=2))
    off(torch.randn(2, 6, 16))
    assert off.aux_loss_sum is None
    on = MoE(16, MoEConfig(expert_dim=8, n_routed=8, n_shared=0, top_k=2, aux_loss_weight=0.01))
    on(torch.randn(2, 6, 16))
    assert on.aux_loss_sum is not None
    on.aux_loss_sum.backward()
    assert on.router.weight_ED.grad is not None and on.router.weight_ED.grad.abs().sum() > 0
