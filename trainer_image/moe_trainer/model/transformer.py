"""A decoder-only transformer with DeepSeek-style MoE feed-forward layers.

Shape legend: B batch, S sequence, D model dim, H heads, Dh head dim, V vocab.

Blocks are pre-norm: `x + attn(norm(x))`, then `x + ffn(norm(x))`, where the first
`n_dense_layers` blocks use a dense SwiGLU and the rest `moe.MoE`. Attention is causal with RoPE,
multi-head (`attention.py`) or latent (`mla.py`), optionally restricted to a sliding window
(`window.py`). With `mtp_depth` D > 0, D Multi-Token Prediction modules (`mtp.py`) follow the main
model and share its embedding and head. The model is built from `dstj_api.ModelConfig`.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from dstj_api import ModelConfig
from moe_trainer.model.attention import Attention, rope_tables
from moe_trainer.model.balance import RoutingStats
from moe_trainer.model.experts import SwiGLU
from moe_trainer.model.mla import MultiHeadLatentAttention
from moe_trainer.model.moe import MoE, recomputing
from moe_trainer.model.mtp import MTPModule


class Block(nn.Module):
    """Pre-norm transformer block whose feed-forward is dense or MoE."""

    def __init__(self, cfg: ModelConfig, use_moe: bool) -> None:
        super().__init__()
        self.attn_norm = nn.RMSNorm(cfg.dim, eps=cfg.norm_eps)
        self.attn: nn.Module = MultiHeadLatentAttention(cfg) if cfg.attention == "mla" else Attention(cfg)
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
    mtp_logits: list[Tensor] = field(default_factory=list)
    """Module k's logits `[B, S-k, V]` for tokens t_{i+k+1} (k = 1..D), when MTP runs."""


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
        rope_dim = cfg.qk_rope_head_dim if cfg.attention == "mla" else cfg.dim // cfg.n_heads
        cos_SF, sin_SF = rope_tables(rope_dim, cfg.max_seq_len, cfg.rope_theta)
        self.rope_cos: Tensor
        self.rope_sin: Tensor
        self.register_buffer("rope_cos", cos_SF, persistent=False)
        self.register_buffer("rope_sin", sin_SF, persistent=False)
        nn.init.normal_(self.embed.weight, std=0.02)
        # Built last, so the main model's initialisation is the same with MTP on or off.
        use_moe = cfg.n_layers > cfg.n_dense_layers  # an MTP block is like the last main block
        self.mtp = nn.ModuleList(MTPModule(cfg, Block(cfg, use_moe)) for _ in range(cfg.mtp_depth))
        self.mtp_loss_weight = cfg.mtp_loss_weight

    def moe_layers(self) -> list[MoE]:
        """The MoE feed-forward layers, in depth order (the MTP modules' last)."""
        blocks = [*self.blocks, *(m.block for m in self.mtp_modules())]
        return [b.ffn for b in blocks if isinstance(b.ffn, MoE)]

    def mtp_modules(self) -> list[MTPModule]:
        """The MTP modules, depth 1 first."""
        return [m for m in self.mtp if isinstance(m, MTPModule)]

    def _block(self, block: nn.Module, x_BSD: Tensor) -> Tensor:
        if self.activation_checkpointing and self.training:
            out: Tensor = checkpoint(
                block, x_BSD, self.rope_cos, self.rope_sin, use_reentrant=False,
                context_fn=lambda: (nullcontext(), recomputing()),
            )
            return out
        out = block(x_BSD, self.rope_cos, self.rope_sin)
        return out

    def forward_hidden(self, tokens_BS: Tensor, emb_BSD: Tensor | None = None) -> Tensor:
        """The last block's output `[B, S, D]` (before the final norm): h^0 of the MTP modules."""
        x_BSD = self.embed(tokens_BS) if emb_BSD is None else emb_BSD
        for block in self.blocks:
            x_BSD = self._block(block, x_BSD)
        return x_BSD

    def forward(self, tokens_BS: Tensor, with_mtp: bool | None = None) -> ForwardOutput:
        """Logits for every position, the MoE balance-loss sum, and the MTP modules' logits.

        `with_mtp` defaults to training mode: evaluation and inference need only the main head.
        """
        emb_BSD = self.embed(tokens_BS)
        x_BSD = self.forward_hidden(tokens_BS, emb_BSD)
        logits_BSV = self.head(self.norm(x_BSD))
        mtp_logits = []
        if self.training if with_mtp is None else with_mtp:
            h_BSD = x_BSD
            for k, module in enumerate(self.mtp_modules(), start=1):
                # Position i of depth k: h^{k-1}_i with Emb(t_{i+k}), for i < S - k.
                h_BSD = self._block(module.block, module.combine(h_BSD[:, :-1], emb_BSD[:, k:]))
                mtp_logits.append(self.head(module.norm(h_BSD)))
        main_moe = [b.ffn for b in self.blocks if isinstance(b.ffn, MoE)]
        aux = [m.aux_loss_sum for m in main_moe if m.aux_loss_sum is not None]
        if mtp_logits:  # the MTP blocks' balance losses belong to the MTP objective, weighted like it
            aux += [self.mtp_loss_weight / len(self.mtp) * m.aux_loss_sum
                    for m in self.moe_layers()[len(main_moe):] if m.aux_loss_sum is not None]
        aux_sum = torch.stack(aux).sum() if aux else logits_BSV.new_zeros((), dtype=torch.float32)
        return ForwardOutput(logits_BSV, aux_sum, mtp_logits)

    def finish_step(self) -> list[RoutingStats]:
        """Per MoE layer: balancing-bias update from the step's global counts, and routing stats."""
        return [m.finish_step() for m in self.moe_layers()]
