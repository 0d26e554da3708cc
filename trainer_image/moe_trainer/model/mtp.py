"""Multi-Token Prediction (DeepSeek-V3 section 2.2): D sequential modules that predict further ahead.

Shape legend: B batch, S sequence, D model dim, k module index (1..D).

Module k combines, at each position i, the previous depth's representation h^{k-1}_i (h^0: the main
model's last hidden state) with the embedding of token t_{i+k}, and one transformer block turns
that into h^k_i, from which the shared output head predicts token t_{i+k+1}:
    h'^k_i = M_k [RMSNorm(h^{k-1}_i); RMSNorm(Emb(t_{i+k}))]
    h^k_{1:S-k} = TRM_k(h'^k_{1:S-k})
    P^k_{i+k+1} = OutHead(RMSNorm(h^k_i))
The embedding and the output head are the main model's (shared, not copied). Each module keeps the
causal chain of predictions: depth k sees only what depth k-1 saw plus one more true token. The
training loss adds lambda / D times the sum of the modules' cross-entropies; at inference the
modules can be dropped (or used for speculative decoding).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from dstj_api import ModelConfig


class MTPModule(nn.Module):
    """One depth: project [norm(h); norm(emb)] to D, run one block, normalise for the shared head."""

    def __init__(self, cfg: ModelConfig, block: nn.Module) -> None:
        super().__init__()
        self.hidden_norm = nn.RMSNorm(cfg.dim, eps=cfg.norm_eps)
        self.embed_norm = nn.RMSNorm(cfg.dim, eps=cfg.norm_eps)
        self.proj = nn.Linear(2 * cfg.dim, cfg.dim, bias=False)
        self.block = block
        self.norm = nn.RMSNorm(cfg.dim, eps=cfg.norm_eps)

    def combine(self, h_prev_BSD: Tensor, emb_BSD: Tensor) -> Tensor:
        """M_k [RMSNorm(h^{k-1}); RMSNorm(Emb(t_{i+k}))], the block's input."""
        return self.proj(torch.cat((self.hidden_norm(h_prev_BSD), self.embed_norm(emb_BSD)), dim=-1))
