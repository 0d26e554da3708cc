"""Multi-head Latent Attention (DeepSeek-V2/V3): keys and values from one low-rank latent per token.

Shape legend: B batch, S sequence, D model dim, H heads, R kv latent rank (kvLoraRank), Q query
latent rank (qLoraRank), N per-head key/query dims without position (qkNopeHeadDim), P rotary dims
(qkRopeHeadDim, one key part shared by all heads), V per-head value dims (vHeadDim).

Equations (DeepSeek-V2 section 2.1, V3 section 2.1.1), per token t:
    c_KV = RMSNorm(W_DKV h)                      [R]   the only per-token state a KV cache keeps,
    k_R  = RoPE(W_KR h)                          [P]   with k_R (shared by the heads)
    k_C,i = W_UK,i c_KV ; v_i = W_UV,i c_KV      [N], [V] per head i
    c_Q  = RMSNorm(W_DQ h) (or h when qLoraRank = 0, no query compression)
    q_C,i = W_UQ,i c_Q ; q_R,i = RoPE(W_QR,i c_Q)
    o_i  = softmax([q_C,i; q_R,i] . [k_C,j; k_R,j] / sqrt(N + P)) over causal j, times v_j
    out  = W_O [o_1; ...; o_H]
`forward` computes it as written (the training form). `forward_absorbed` folds W_UK into the query
and W_UV into the output, so attention runs over the latents themselves (the inference form that
makes the small cache pay): scores q_C,i . W_UK,i c_KV = (W_UK,i^T q_C,i) . c_KV.
Weights are stored as DeepSeek-V3's reference code names them: wq (or wq_a, q_norm, wq_b), wkv_a
(W_DKV and W_KR stacked), kv_norm, wkv_b (W_UK and W_UV stacked per head), wo.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from dstj_api import ModelConfig
from moe_trainer.model.attention import apply_rope, causal_attention


def kv_cache_elements_per_token(cfg: ModelConfig) -> int:
    """Elements one layer caches per token at inference: MLA's latent and rotary key, MHA's keys and values."""
    if cfg.attention == "mla":
        return cfg.kv_lora_rank + cfg.qk_rope_head_dim
    return 2 * cfg.dim


class MultiHeadLatentAttention(nn.Module):
    """Causal MLA with decoupled RoPE keys, optionally within a sliding window."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.n_heads, self.window = cfg.n_heads, cfg.sliding_window
        self.nope, self.rope, self.v_dim = cfg.qk_nope_head_dim, cfg.qk_rope_head_dim, cfg.v_head_dim
        self.kv_rank, self.q_rank = cfg.kv_lora_rank, cfg.q_lora_rank
        qk = self.nope + self.rope
        self.scale = qk**-0.5
        H = self.n_heads
        if self.q_rank == 0:
            self.wq = nn.Linear(cfg.dim, H * qk, bias=False)
        else:
            self.wq_a = nn.Linear(cfg.dim, self.q_rank, bias=False)
            self.q_norm = nn.RMSNorm(self.q_rank, eps=cfg.norm_eps)
            self.wq_b = nn.Linear(self.q_rank, H * qk, bias=False)
        self.wkv_a = nn.Linear(cfg.dim, self.kv_rank + self.rope, bias=False)
        self.kv_norm = nn.RMSNorm(self.kv_rank, eps=cfg.norm_eps)
        self.wkv_b = nn.Linear(self.kv_rank, H * (self.nope + self.v_dim), bias=False)
        self.wo = nn.Linear(H * self.v_dim, cfg.dim, bias=False)

    def _queries(self, x_BSD: Tensor, cos_SF: Tensor, sin_SF: Tensor) -> tuple[Tensor, Tensor]:
        """q_C `[B, H, S, N]` and RoPE'd q_R `[B, H, S, P]`."""
        B, S, _ = x_BSD.shape
        q = self.wq(x_BSD) if self.q_rank == 0 else self.wq_b(self.q_norm(self.wq_a(x_BSD)))
        q_BHSK = q.view(B, S, self.n_heads, -1).transpose(1, 2)
        q_nope, q_rope = q_BHSK.split((self.nope, self.rope), dim=-1)
        return q_nope, apply_rope(q_rope, cos_SF, sin_SF)

    def _latents(self, x_BSD: Tensor, cos_SF: Tensor, sin_SF: Tensor) -> tuple[Tensor, Tensor]:
        """c_KV `[B, S, R]` (normalised) and RoPE'd k_R `[B, 1, S, P]`: what a KV cache holds."""
        c_kv, k_rope = self.wkv_a(x_BSD).split((self.kv_rank, self.rope), dim=-1)
        return self.kv_norm(c_kv), apply_rope(k_rope.unsqueeze(1), cos_SF, sin_SF)

    def forward(self, x_BSD: Tensor, cos_SF: Tensor, sin_SF: Tensor) -> Tensor:
        """The training form: expand the latents into per-head keys and values, then attend."""
        B, S, _ = x_BSD.shape
        q_nope, q_rope = self._queries(x_BSD, cos_SF, sin_SF)
        c_kv_BSR, k_rope_B1SP = self._latents(x_BSD, cos_SF, sin_SF)
        kv = self.wkv_b(c_kv_BSR).view(B, S, self.n_heads, self.nope + self.v_dim).transpose(1, 2)
        k_nope, v_BHSV = kv.split((self.nope, self.v_dim), dim=-1)
        q = torch.cat((q_nope, q_rope), dim=-1)
        k = torch.cat((k_nope, k_rope_B1SP.expand(B, self.n_heads, S, self.rope)), dim=-1)
        o_BHSV = causal_attention(q, k, v_BHSV, self.window, scale=self.scale)
        return self.wo(o_BHSV.transpose(1, 2).reshape(B, S, -1))

    def forward_absorbed(self, x_BSD: Tensor, cos_SF: Tensor, sin_SF: Tensor) -> Tensor:
        """The inference form: attend over the shared latents with W_UK in the query, W_UV after."""
        B, S, _ = x_BSD.shape
        H = self.n_heads
        q_nope_BHSN, q_rope = self._queries(x_BSD, cos_SF, sin_SF)
        c_kv_BSR, k_rope_B1SP = self._latents(x_BSD, cos_SF, sin_SF)
        w_HKR = self.wkv_b.weight.view(H, self.nope + self.v_dim, self.kv_rank)
        w_uk_HNR, w_uv_HVR = w_HKR.split((self.nope, self.v_dim), dim=1)
        q_lat_BHSR = q_nope_BHSN @ w_uk_HNR  # (W_UK,i^T q_C,i) for every head
        q = torch.cat((q_lat_BHSR, q_rope), dim=-1)
        k = torch.cat((c_kv_BSR.unsqueeze(1), k_rope_B1SP), dim=-1).expand(B, H, S, self.kv_rank + self.rope)
        v = c_kv_BSR.unsqueeze(1).expand(B, H, S, self.kv_rank)
        o_lat_BHSR = causal_attention(q, k, v, self.window, scale=self.scale)
        o_BHSV = o_lat_BHSR @ w_uv_HVR.transpose(1, 2)
        return self.wo(o_BHSV.transpose(1, 2).reshape(B, S, -1))

