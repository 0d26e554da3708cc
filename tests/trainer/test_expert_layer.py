"""The fast expert layer equals the naive reference and computes only routed rows."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from dstj_api import MoEConfig
from moe_trainer.model import experts
from moe_trainer.model.moe import MoE
from tests.trainer.reference_moe import naive_moe_forward

DIM, HIDDEN, E, K = 32, 16, 8, 2

CASES = [
    pytest.param(dict(score_func="softmax"), id="softmax"),
    pytest.param(dict(score_func="sigmoid"), id="sigmoid"),
    pytest.param(dict(score_func="softmax", n_shared=0), id="softmax-no-shared"),
    pytest.param(dict(score_func="sigmoid", n_shared=2), id="sigmoid-two-shared"),
    pytest.param(dict(score_func="softmax", capacity_factor=1.0), id="softmax-capacity-drops"),
    pytest.param(dict(score_func="sigmoid", capacity_factor=0.5, n_shared=0), id="sigmoid-tight-capacity"),
    pytest.param(dict(score_func="sigmoid", n_groups=4, topk_groups=2, route_scale=2.5), id="group-limited"),
    pytest.param(dict(score_func="softmax", temperature=0.5, top_k=3), id="temperature-top3"),
]


def make_moe(**overrides: Any) -> MoE:
    kw: dict[str, Any] = dict(n_shared=1, top_k=K) | overrides
    torch.manual_seed(0)
    moe = MoE(DIM, MoEConfig(expert_dim=HIDDEN, n_routed=E, **kw))
    with torch.no_grad():  # a skewed bias makes capacity bite and checks bias is selection-only
        moe.router.expert_bias_E.copy_(torch.linspace(-0.2, 0.2, E))
    return moe


@pytest.fixture(params=[True, False], ids=["grouped-mm", "loop"])
def expert_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> bool:
    if request.param and not experts.grouped_mm_works("cpu", torch.float32):
        pytest.skip("this torch build has no CPU torch._grouped_mm")
    monkeypatch.setattr(experts, "grouped_mm_works", lambda device, dtype: request.param)
    return bool(request.param)


@pytest.mark.parametrize("options", CASES)
def test_fast_layer_matches_naive_reference_in_output_and_every_gradient(
    options: dict[str, Any], expert_path: bool
) -> None:
    moe = make_moe(**options)
    x = torch.randn(3, 20, DIM, requires_grad=True)
    grad_out = torch.randn(3, 20, DIM)

    y_fast = moe(x)
    y_fast.backward(grad_out)
    fast_grads = {n: p.grad.clone() for n, p in moe.named_parameters() if p.grad is not None}
    fast_x_grad = x.grad.clone()
    moe.zero_grad()
    x.grad = None

    y_ref = naive_moe_forward(moe, x)
    y_ref.backward(grad_out)

    torch.testing.assert_close(y_fast, y_ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(fast_x_grad, x.grad, rtol=1e-5, atol=1e-6)
    for name, p in moe.named_parameters():
        assert p.grad is not None, name
        torch.testing.assert_close(fast_grads[name], p.grad, rtol=1e-5, atol=1e-6, msg=name)


def _grouped_mm_flops(a_shape: Any, b_shape: Any, *args: Any, out_shape: Any = None, **kwargs: Any) -> int:
    # FlopCounterMode has no formula for torch._grouped_mm: rows x in x out, times 2.
    return 2 * a_shape[0] * a_shape[1] * b_shape[-1]


@pytest.mark.parametrize("capacity_factor", [None, 1.0, 0.5], ids=["no-capacity", "cf1.0", "cf0.5"])
def test_expert_gemms_cover_exactly_the_routed_rows(capacity_factor: float | None, expert_path: bool) -> None:
    moe = make_moe(n_shared=0, capacity_factor=capacity_factor)
    T = 64
    x = torch.randn(T, DIM)
    with torch.no_grad():
        routing = moe.router(x)
    kept_rows = int(routing.kept_TK.sum())
    if capacity_factor is None:
        assert kept_rows == T * K
    else:
        assert kept_rows < T * K

    mapping = {torch.ops.aten._grouped_mm: _grouped_mm_flops}
    with FlopCounterMode(display=False, custom_mapping=mapping) as counter, torch.no_grad():
        moe(x)
    router_flops = 2 * T * DIM * E
    expert_flops = counter.get_total_flops() - router_flops
    # Three expert GEMMs (w1, w3: D->F; w2: F->D), each over exactly the kept rows.
    assert expert_flops == 3 * 2 * kept_rows * DIM * HIDDEN


def test_batched_input_is_flattened_to_tokens() -> None:
    moe = make_moe()
    x = torch.randn(2, 5, DIM)
    torch.testing.assert_close(moe(x).reshape(-1, DIM), moe(x.reshape(-1, DIM)))


def test_experts_that_receive_no_rows_stay_in_the_backward_graph() -> None:
    # An EP rank that receives no tokens must still run its backward all-to-all, or its peers wait forever.
    layer = experts.GroupedExperts(4, 64, 32)
    x_ND = torch.zeros(0, 64, requires_grad=True)
    y_ND = layer(x_ND, torch.zeros(4, dtype=torch.int64))
    assert y_ND.shape == (0, 64) and y_ND.grad_fn is not None
    y_ND.sum().backward()
    assert x_ND.grad is not None and x_ND.grad.shape == (0, 64)
