"""The naive MoE reference, kept in the test suite only: every expert over every token, gated.

For each expert e: its SwiGLU over all T tokens as plain GEMMs, times the gate column for e
(zero off the top-K and for dropped assignments), summed over experts. It shares the fast
layer's parameters and router, so any difference is in how the experts are computed.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from moe_trainer.model.moe import MoE


def naive_moe_forward(moe: MoE, x: Tensor) -> Tensor:
    """Dense-over-all-experts computation of `moe(x)`."""
    x_TD = x.reshape(-1, moe.dim)
    routing = moe.router(x_TD)
    gate_TE = torch.zeros(x_TD.shape[0], moe.n_routed, dtype=routing.gate_TK.dtype)
    gate_TE = gate_TE.scatter_add(1, routing.expert_TK, routing.gate_TK)
    ex = moe.experts
    out_TD = torch.zeros_like(x_TD)
    for e in range(moe.n_routed):
        h_TF = F.silu(x_TD @ ex.w1_EDF[e]) * (x_TD @ ex.w3_EDF[e])
        out_TD = out_TD + gate_TE[:, e : e + 1] * (h_TF @ ex.w2_EFD[e])
    if moe.shared is not None:
        out_TD = out_TD + moe.shared(x_TD)
    return out_TD.view(x.shape)
