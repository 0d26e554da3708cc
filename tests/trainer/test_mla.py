"""Multi-head Latent Attention equals the paper's equations, computed token by token, and its absorbed form."""

from __future__ import annotations

import math

import pytest
import torch

from dstj_api import ModelConfig
from moe_trainer.model.attention import rope_tables
from moe_trainer.model.mla import MultiHeadLatentAttention, kv_cache_elements_per_token

THETA = 10000.0


def _config(q_lora_rank: int, window: int | None = None) -> ModelConfig:
    return ModelConfig(dim=32, n_heads=3, attention="mla", kv_lora_rank=8, q_lora_rank=q_lora_rank,
                       qk_nope_head_dim=6, qk_rope_head_dim=4, v_head_dim=5, sliding_window=window,
                       rope_theta=THETA)


def _rms(v: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    return v / torch.sqrt(v.pow(2).mean() + eps) * weight


def _rope(v: torch.Tensor, position: int) -> torch.Tensor:
    """RoPE as a complex rotation of consecutive pairs: pair f turns by position * theta^(-2f/P)."""
    P = v.shape[0]
    z = torch.complex(v[0::2], v[1::2])
    angle = position * THETA ** (-torch.arange(0, P, 2, dtype=v.dtype) / P)
    r = z * torch.polar(torch.ones_like(angle), angle)
    return torch.stack((r.real, r.imag), dim=-1).flatten()


def reference_mla(m: MultiHeadLatentAttention, x_SD: torch.Tensor, window: int | None) -> torch.Tensor:
    """DeepSeek-V2 eqs. 9-19, one token and one head at a time, from the module's weights."""
    S = x_SD.shape[0]
    H, N, P, V, R = m.n_heads, m.nope, m.rope, m.v_dim, m.kv_rank
    eps = m.kv_norm.eps or 1e-6
    w_dkv, w_kr = m.wkv_a.weight[:R], m.wkv_a.weight[R:]
    w_ukv = m.wkv_b.weight.view(H, N + V, R)
    c_kv = [_rms(w_dkv @ x_SD[t], m.kv_norm.weight, eps) for t in range(S)]  # eq. 9 (+ the norm of V3's code)
    k_r = [_rope(w_kr @ x_SD[t], t) for t in range(S)]                     # eq. 13
    out = []
    for t in range(S):
        if m.q_rank == 0:
            q_all = (m.wq.weight @ x_SD[t]).view(H, N + P)
        else:
            c_q = _rms(m.wq_a.weight @ x_SD[t], m.q_norm.weight, m.q_norm.eps or 1e-6)  # eq. 12
            q_all = (m.wq_b.weight @ c_q).view(H, N + P)
        heads = []
        for i in range(H):
            q_c, q_r = q_all[i, :N], _rope(q_all[i, N:], t)               # eqs. 13-14 (queries)
            seen = [j for j in range(t + 1) if window is None or t - j < window]
            scores = torch.stack([
                (q_c @ (w_ukv[i, :N] @ c_kv[j]) + q_r @ k_r[j]) / math.sqrt(N + P) for j in seen
            ])                                                                # eqs. 10, 14-15
            weights = scores.softmax(0)
            heads.append(sum(weights[n] * (w_ukv[i, N:] @ c_kv[j]) for n, j in enumerate(seen)))  # eqs. 11, 18
        out.append(m.wo.weight @ torch.cat(heads))                           # eq. 19
    return torch.stack(out)


@pytest.mark.parametrize(("q_lora_rank", "window"), [(0, None), (12, None), (12, 3)])
def test_mla_equals_the_papers_equations_and_its_absorbed_form(q_lora_rank: int, window: int | None) -> None:
    torch.manual_seed(0)
    cfg = _config(q_lora_rank, window)
    m = MultiHeadLatentAttention(cfg).double()
    cos, sin = (t.double() for t in rope_tables(cfg.qk_rope_head_dim, 16, THETA))
    x = torch.randn(2, 7, cfg.dim, dtype=torch.float64)
    naive = m(x, cos, sin)
    for b in range(2):  # the model's RoPE tables are fp32 (the reference's angles fp64): 1e-6
        torch.testing.assert_close(naive[b], reference_mla(m, x[b], window), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(m.forward_absorbed(x, cos, sin), naive, rtol=1e-9, atol=1e-9)


def test_the_kv_cache_per_token_is_the_latent_and_one_rotary_key() -> None:
    mla, mha = _config(0), ModelConfig(dim=32, n_heads=4)
    assert kv_cache_elements_per_token(mla) == 8 + 4
    assert kv_cache_elements_per_token(mha) == 2 * 32
