"""Routed experts computed as grouped GEMMs over only the tokens routed to each expert.

Shape legend: N routed (token, slot) rows sorted by expert, D model dim, F expert hidden dim,
E experts held by this module.

`GroupedExperts` never multiplies an expert with a token it was not routed to: rows arrive sorted
by expert with a count per expert, and each expert runs one GEMM over its own rows, through
`torch._grouped_mm` where this build runs it for the device and dtype, else a loop over the
non-empty experts. This module does no routing; see `moe.py`.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from moe_trainer.model.fp8 import fp8_operands


@functools.cache
def grouped_mm_works(device_type: str, dtype: torch.dtype) -> bool:
    """Whether `torch._grouped_mm` runs forward and backward here (probed once per device and dtype)."""
    if not hasattr(torch, "_grouped_mm"):
        return False
    try:
        x_ND = torch.randn(16, 16, device=device_type, dtype=dtype, requires_grad=True)
        w_EDF = torch.randn(2, 16, 16, device=device_type, dtype=dtype, requires_grad=True)
        offs = torch.tensor([0, 16], device=device_type, dtype=torch.int32)  # one empty group
        y_NF = torch._grouped_mm(x_ND, w_EDF, offs=offs)
        y_NF.backward(torch.ones_like(y_NF))
        return True
    except (RuntimeError, NotImplementedError):
        return False


def grouped_matmul(x_ND: Tensor, w_EDF: Tensor, counts_E: Tensor, counts_list: list[int]) -> Tensor:
    """Rows of expert e (a contiguous run of `counts_E[e]` rows) times `w_EDF[e]`."""
    if grouped_mm_works(x_ND.device.type, x_ND.dtype):
        offs_E = torch.cumsum(counts_E, dim=0, dtype=torch.int32)
        y_NF = torch._grouped_mm(x_ND, w_EDF, offs=offs_E)
        if y_NF.requires_grad:  # its backward rejects broadcast (stride-0) gradients, e.g. from .sum()
            y_NF.register_hook(lambda g: g.contiguous())
        return y_NF
    pieces = [
        chunk @ w_EDF[e] for e, chunk in enumerate(torch.split(x_ND, counts_list)) if counts_list[e] > 0
    ]
    if not pieces:
        return x_ND.new_zeros(0, w_EDF.shape[-1])
    return torch.cat(pieces)


class GroupedExperts(nn.Module):
    """E SwiGLU experts `w2(silu(w1 x) * w3 x)`, stored as stacked weights for grouped GEMMs."""

    def __init__(self, n_experts: int, dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.n_experts = n_experts
        self.fp8 = False
        """Run the GEMMs with e4m3 operands (`fp8.use_fp8`); the parameters stay as they are."""
        self.w1_EDF = nn.Parameter(torch.empty(n_experts, dim, hidden_dim))
        self.w3_EDF = nn.Parameter(torch.empty(n_experts, dim, hidden_dim))
        self.w2_EFD = nn.Parameter(torch.empty(n_experts, hidden_dim, dim))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Initialise like nn.Linear of the same shapes, per expert."""
        for w in (self.w1_EDF, self.w3_EDF, self.w2_EFD):
            bound = 1.0 / math.sqrt(w.shape[1])
            nn.init.uniform_(w, -bound, bound)

    def forward(self, x_ND: Tensor, counts_E: Tensor) -> Tensor:
        """Apply expert e to its run of rows; rows must be sorted by expert, `counts_E` summing to N."""
        counts_list = counts_E.tolist()
        # Autocast does not cover torch._grouped_mm: cast inputs and weights to its dtype ourselves.
        device = x_ND.device.type
        dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else x_ND.dtype
        x_ND = x_ND.to(dtype)
        w1, w3, w2 = (w.to(dtype) for w in (self.w1_EDF, self.w3_EDF, self.w2_EFD))
        if x_ND.shape[0] == 0:
            # No rows (an EP rank that received none): torch._grouped_mm's backward rejects empty inputs,
            # and the output must stay in the graph so this rank's backward all-to-all still runs.
            return (F.silu(x_ND @ w1[0]) * (x_ND @ w3[0])) @ w2[0]
        if self.fp8:
            x_ND, w1 = fp8_operands(x_ND, w1)
            w3 = fp8_operands(x_ND, w3)[1]
        h_NF = F.silu(grouped_matmul(x_ND, w1, counts_E, counts_list))
        h_NF = h_NF * grouped_matmul(x_ND, w3, counts_E, counts_list)
        if self.fp8:
            h_NF, w2 = fp8_operands(h_NF, w2)
        return grouped_matmul(h_NF, w2, counts_E, counts_list)


class SwiGLU(nn.Module):
    """A dense SwiGLU feed-forward block: the dense layers and the shared experts use it."""

    def __init__(self, dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.w1 = nn.Linear(dim, hidden_dim, bias=False)
        self.w3 = nn.Linear(dim, hidden_dim, bias=False)
        self.w2 = nn.Linear(hidden_dim, dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        """SwiGLU over the last dimension."""
        return self.w2(F.silu(self.w1(x)) * self.w3(x))
