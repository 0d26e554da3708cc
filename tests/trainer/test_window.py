"""The sliding window computed over its band only equals the dense masked computation."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from moe_trainer.model.window import masked_window_attention, windowed_attention


def _qkv(S: int, seed: int = 0) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(2, 3, S, 8, generator=g, dtype=torch.float64, requires_grad=True) for _ in range(3))


CASES = [(40, 7, None), (40, 1, None), (33, 8, 7), (64, 16, 64), (50, 30, None)]


@pytest.mark.parametrize(("S", "window", "chunk"), CASES)
def test_the_banded_computation_equals_the_masked_one_forward_and_backward(S: int, window: int,
                                                                           chunk: int | None) -> None:
    q, k, v = _qkv(S)
    dense = masked_window_attention(q, k, v, window)
    banded = windowed_attention(q, k, v, window, chunk)
    torch.testing.assert_close(banded, dense, rtol=1e-10, atol=1e-10)
    g_dense = torch.autograd.grad(dense.square().sum(), (q, k, v))
    g_banded = torch.autograd.grad(banded.square().sum(), (q, k, v))
    for a, b in zip(g_banded, g_dense, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("window", [32, 100])
def test_a_window_as_long_as_the_sequence_is_plain_causal_attention(window: int) -> None:
    q, k, v = _qkv(32, seed=1)
    causal = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    torch.testing.assert_close(windowed_attention(q, k, v, window), causal, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(masked_window_attention(q, k, v, window), causal, rtol=1e-10, atol=1e-10)


def test_values_may_have_their_own_head_dim() -> None:
    q, k, _ = _qkv(20, seed=2)
    v = torch.randn(2, 3, 20, 5, dtype=torch.float64)
    torch.testing.assert_close(windowed_attention(q, k, v, 6), masked_window_attention(q, k, v, 6))


def test_a_chunk_shorter_than_the_window_is_refused() -> None:
    q, k, v = _qkv(40)
    with pytest.raises(ValueError, match="chunk"):
        windowed_attention(q, k, v, 10, chunk=8)
