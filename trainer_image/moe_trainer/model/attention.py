"""Causal self-attention with rotary position embeddings (RoPE), optionally within a sliding window
(`window.py` computes only the window's blocks).

Shape legend: B batch, S sequence, D model dim, H heads, Dh head dim, F = Dh/2 rotary frequencies.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dstj_api import ModelConfig
from moe_trainer.model.window import windowed_attention


def rope_tables(head_dim: int, max_seq_len: int, theta: float) -> tuple[Tensor, Tensor]:
    """cos and sin tables `[S, Dh/2]` for rotary position embeddings."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
    angles_SF = torch.outer(torch.arange(max_seq_len, dtype=torch.float32), inv_freq)
    return angles_SF.cos(), angles_SF.sin()


def apply_rope(x_BHSD: Tensor, cos_SF: Tensor, sin_SF: Tensor) -> Tensor:
    """Rotate consecutive pairs of each head's features by position-dependent angles."""
    S = x_BHSD.shape[2]
    x1, x2 = x_BHSD.float().unflatten(-1, (-1, 2)).unbind(-1)
    cos, sin = cos_SF[:S], sin_SF[:S]
    out = torch.stack((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1).flatten(-2)
    return out.to(x_BHSD.dtype)


def causal_attention(q_BHSD: Tensor, k_BHSD: Tensor, v_BHSD: Tensor, window: int | None,
                     scale: float | None = None) -> Tensor:
    """Causal attention, over only the last `window` positions of each query when a window is set."""
    if window is None:
        return F.scaled_dot_product_attention(q_BHSD, k_BHSD, v_BHSD, is_causal=True, scale=scale)
    return windowed_attention(q_BHSD, k_BHSD, v_BHSD, window, scale=scale)


class Attention(nn.Module):
    """Causal multi-head self-attention with RoPE and an optional sliding window."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.n_heads, self.head_dim = cfg.n_heads, cfg.dim // cfg.n_heads
        self.window = cfg.sliding_window
        self.wqkv = nn.Linear(cfg.dim, 3 * cfg.dim, bias=False)
        self.wo = nn.Linear(cfg.dim, cfg.dim, bias=False)

    def forward(self, x_BSD: Tensor, cos_SF: Tensor, sin_SF: Tensor) -> Tensor:
        """Attend causally (within the window, if any) and project back to D."""
        B, S, D = x_BSD.shape
        qkv = self.wqkv(x_BSD).view(B, S, 3, self.n_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q_BHSD, k_BHSD, v_BHSD = qkv.unbind(0)
        q_BHSD, k_BHSD = apply_rope(q_BHSD, cos_SF, sin_SF), apply_rope(k_BHSD, cos_SF, sin_SF)
        o_BHSD = causal_attention(q_BHSD, k_BHSD, v_BHSD, self.window)
        return self.wo(o_BHSD.transpose(1, 2).reshape(B, S, D))
