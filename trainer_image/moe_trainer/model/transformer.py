"""A decoder-only transformer with DeepSeek-style MoE feed-forward layers.

Shape legend: B batch, S sequence, D model dim, H heads, Dh head dim, V vocab.

Blocks are pre-norm: `x + attn(norm(x))`, then `x + ffn(norm(x))`, where the first
`n_dense_layers` blocks use a dense SwiGLU and the rest `moe.MoE`. Attention is causal with RoPE,
optionally restricted to a sliding window (`attention.py`). The model is built from `dstj_api.ModelConfig`.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from dstj_api import ModelConfig
from moe_trainer.model.attention import Attention, rope_tables
from moe_trainer.model.balance import RoutingStats
from moe_trainer.model.experts import SwiGLU
from moe_trainer.model.moe import MoE, recomputing


class Block(nn.Module):
    """Pre-norm transformer block whose feed-forward is dense or MoE."""

    def __init__(self, cfg: ModelConfig, use_moe: bool) -> None:
        super().__init__()
        self.attn_norm = nn.RMSNorm(cfg.dim, eps=cfg.norm_eps)
        self.attn = Attention(cfg)
        self.ffn_norm = nn.RMSNorm(cfg.dim, eps=cfg.norm_eps)
        self.ffn: nn.Module = MoE(cfg.dim, cfg.moe) if use_moe else SwiGLU(cfg.dim, cfg.dense_dim)

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
