"""A decoder-only transformer with DeepSeek-style MoE feed-forward layers.

Shape legend: B batch, S sequence, D model dim, H heads, Dh head dim, V vocab.

Blocks are pre-norm: `x + attn(norm(x))`, then `x + ffn(norm(x))`, where the first
`n_dense_layers` blocks use a dense SwiGLU and the rest `moe.MoE`. Attention is causal with RoPE,
optionally restricted to a sliding window. The model is built from `dstj_api.ModelConfig`.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from dstj_api import ModelConfig
from moe_trainer.balance import RoutingStats
from moe_trainer.experts import SwiGLU
from moe_trainer.moe import MoE, recomputing


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
        if self.window is None or self.window >= S:
            o_BHSD = F.scaled_dot_product_attention(q_BHSD, k_BHSD, v_BHSD, is_causal=True)
        else:
            pos = torch.arange(S, device=x_BSD.device)
            dist_SS = pos[:, None] - pos[None, :]
            allowed_SS = (dist_SS >= 0) & (dist_SS < self.window)
            o_BHSD = F.scaled_dot_product_attention(q_BHSD, k_BHSD, v_BHSD, attn_mask=allowed_SS)
        return self.wo(o_BHSD.transpose(1, 2).reshape(B, S, D))


class Block(nn.Module):
    """Pre-norm transformer block whose feed-forward is dense or MoE."""

    def __init__(self, cfg: ModelConfig, use_moe: bool) -> None:
        super().__init__()
        self.attn_norm = nn.RMSNorm(cfg.dim, eps=cfg.norm_eps)
        self.attn = Attention(cfg)
        self.ffn_norm = nn.RMSNorm(cfg.dim, eps=cfg.norm_eps)
        m = cfg.moe
        self.ffn: nn.Module = (
            MoE(
                cfg.dim, m.expert_dim, m.n_routed, m.n_shared, m.top_k, score_func=m.score_func,
                temperature=m.temperature, n_groups=m.n_groups, topk_groups=m.topk_groups,
                route_scale=m.route_scale, capacity_factor=m.capacity_factor,
                bias_update_rate=m.bias_update_rate, aux_loss_weight=m.aux_loss_weight,
            )
            if use_moe
            else SwiGLU(cfg.dim, cfg.dense_dim)
        )

    def forward(self, x_BSD: Tensor, cos_SF: Tensor, sin_SF: Tensor) -> Tensor:
        """Residual attention then residual feed-forward."""
        x_BSD = x_BSD + self.attn(self.attn_norm(x_BSD), cos_SF, sin_SF)
        return x_BSD + self.ffn(self.ffn_norm(x_BSD))


@dataclass(slots=True)
class ForwardOutput:
    """Logits plus the summed sequence-level balance loss of all MoE layers (0 when off)."""

    logits_BSV: Tensor
    aux_loss_sum: Tensor


class Transformer(nn.Module):
    """Token embedding, N blocks, final RMSNorm and an untied output head."""

    def __init__(self, cfg: ModelConfig, activation_checkpointing: bool = False) -> None:
        super().__init__()
        self.cfg = cfg
        self.activation_checkpointing = activation_checkpointing
        self.embed = nn.Embedding(cfg.vocab_size, cfg.dim)
        self.blocks = nn.ModuleList(Block(cfg, use_moe=i >= cfg.n_dense_layers) for i in range(cfg.n_layers))
        self.norm = nn.RMSNorm(cfg.dim, eps=cfg.norm_eps)
        self.head = nn.Linear(cfg.dim, cfg.vocab_size, bias=False)
        cos_SF, sin_SF = rope_tables(cfg.dim // cfg.n_heads, cfg.max_seq_len, cfg.rope_theta)
        self.rope_cos: Tensor
        self.rope_sin: Tensor
        self.register_buffer("rope_cos", cos_SF, persistent=False)
        self.register_buffer("rope_sin", sin_SF, persistent=False)
        nn.init.normal_(self.embed.weight, std=0.02)

    def moe_layers(self) -> list[MoE]:
        """The MoE feed-forward layers, in depth order."""
        return [b.ffn for b in self.blocks if isinstance(b.ffn, MoE)]

    def forward(self, tokens_BS: Tensor) -> ForwardOutput:
        """Logits for every position, and the MoE balance-loss sum."""
        x_BSD = self.embed(tokens_BS)
        for block in self.blocks:
            if self.activation_checkpointing and self.training:
                x_BSD = checkpoint(
                    block, x_BSD, self.rope_cos, self.rope_sin, use_reentrant=False,
                    context_fn=lambda: (nullcontext(), recomputing()),
                )
            else:
                x_BSD = block(x_BSD, self.rope_cos, self.rope_sin)
        logits_BSV = self.head(self.norm(x_BSD))
        aux = [m.aux_loss_sum for m in self.moe_layers() if m.aux_loss_sum is not None]
        aux_sum = torch.stack(aux).sum() if aux else logits_BSV.new_zeros((), dtype=torch.float32)
        return ForwardOutput(logits_BSV, aux_sum)

    def finish_step(self) -> list[RoutingStats]:
        """Per MoE layer: balancing-bias update from the step's global counts, and routing stats."""
        return [m.finish_step() for m in self.moe_layers()]
