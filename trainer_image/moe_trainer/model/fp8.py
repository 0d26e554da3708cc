"""fp8 GEMMs with fine-grained online scaling (DeepSeek-V3 section 3.3), and their CPU emulation.

Shape legend: N rows, K inner (contracted) dim, M output features, E experts.

Each GEMM operand is scaled per tile before the cast to e4m3, with the scale computed online from
the tile's own absolute maximum: activations per 1 x 128 tile (one row, 128 consecutive inner
elements), weights per 128 x 128 block. An outlier then costs precision only in its own tile, not in
the whole tensor. Scales live only inside the GEMM: master weights, optimizer state and
checkpoints stay fp32, so a checkpoint carries no fp8 state and loads at any precision.

`quantise` returns the dequantised tensor, the numerics of e4m3 with those scales. Where the GPU has
fp8 (`torch._scaled_mm` runs: compute capability 8.9 and up) the dense GEMMs run it on the e4m3
operands with the tile scales folded in; elsewhere (CPU, older GPUs) the emulation multiplies the
dequantised operands in the compute dtype (`train.precisionEmulation`). Gradients pass straight through
the quantisation (the backward GEMMs take the quantised operands; the output gradient itself stays
in the compute dtype, where V3 quantises it too).
"""

from __future__ import annotations

import functools
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

E4M3_MAX = 448.0
"""The largest finite float8_e4m3fn value: a tile's absolute maximum is scaled to it."""
TILE = 128
"""Tile edge: activations 1 x TILE, weights TILE x TILE (DeepSeek-V3's choice)."""


def _tile_scaled(x: Tensor, rows: int) -> Tensor:
    """Quantise-dequantise the last two dims of `x` in tiles of `rows` x TILE (padded to whole tiles)."""
    R, K = x.shape[-2:]
    pr, pk = (-R) % rows, (-K) % TILE
    xp = F.pad(x.float(), (0, pk, 0, pr))
    tiles = xp.unflatten(-1, (-1, TILE)).unflatten(-3, (-1, rows))  # [..., R/rows, rows, K/TILE, TILE]
    amax = tiles.abs().amax(dim=(-3, -1), keepdim=True).clamp_min(1e-12)
    scale = E4M3_MAX / amax
    q = (tiles * scale).to(torch.float8_e4m3fn).float() / scale
    return q.flatten(-2).flatten(-3, -2)[..., :R, :K].to(x.dtype)


def quantise_activation(x_NK: Tensor) -> Tensor:
    """e4m3 numerics of an activation, scaled per 1 x 128 tile along the inner dim."""
    return _tile_scaled(x_NK.reshape(-1, x_NK.shape[-1]), 1).view(x_NK.shape)


def quantise_weight(w: Tensor) -> Tensor:
    """e4m3 numerics of a weight (`[M, K]`, or `[E, K, M]` stacked experts), scaled per 128 x 128 block."""
    return _tile_scaled(w, TILE)


class _StraightThrough(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: Tensor, quantised: Tensor) -> Tensor:
        return quantised

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        return grad, None


def straight_through(x: Tensor, quantised: Tensor) -> Tensor:
    """`quantised` in the forward pass, identity for the gradient."""
    out: Tensor = _StraightThrough.apply(x, quantised.detach())
    return out


def fp8_operands(x: Tensor, w: Tensor) -> tuple[Tensor, Tensor]:
    """Both GEMM operands with e4m3 numerics; gradients flow straight through to the originals."""
    xq = straight_through(x, quantise_activation(x.detach()))
    wq = straight_through(w, quantise_weight(w.detach()))
    return xq, wq


@functools.cache
def scaled_mm_works(device_type: str) -> bool:
    """Whether `torch._scaled_mm` runs e4m3 GEMMs here (a GPU of compute capability 8.9 or newer)."""
    if device_type != "cuda" or not torch.cuda.is_available() or not hasattr(torch, "_scaled_mm"):
        return False
    try:
        a = torch.zeros(16, 32, device="cuda").to(torch.float8_e4m3fn)
        b = torch.zeros(16, 32, device="cuda").to(torch.float8_e4m3fn).t()
        one = torch.ones((), device="cuda")
        torch._scaled_mm(a, b, scale_a=one, scale_b=one, out_dtype=torch.bfloat16)
        return True
    except (RuntimeError, NotImplementedError):
        return False


class _ScaledMM(torch.autograd.Function):
    """y = x w^T on the GPU's fp8 units: e4m3 operands with per-row (x) and per-output (w) scales; each row
    of x and of w is first quantise-dequantised in its 1 x 128 / 128 x 128 tiles, so the numerics are the
    tiled ones and the hardware scale carries each row's range. The backward GEMMs run in bf16 on the
    quantised operands (straight through, as in the emulation)."""

    @staticmethod
    def forward(ctx: Any, x_NK: Tensor, w_MK: Tensor) -> Tensor:
        xq, wq = quantise_activation(x_NK.detach()), quantise_weight(w_MK.detach())
        ctx.save_for_backward(xq, wq)
        sx = (xq.abs().amax(-1, keepdim=True).float().clamp_min(1e-12) / E4M3_MAX)
        sw = (wq.abs().amax(-1, keepdim=True).float().clamp_min(1e-12) / E4M3_MAX)
        a = (xq.float() / sx).to(torch.float8_e4m3fn)
        b = (wq.float() / sw).to(torch.float8_e4m3fn)
        y: Tensor = torch._scaled_mm(a, b.t(), scale_a=sx, scale_b=sw.t(), out_dtype=torch.bfloat16)
        return y

    @staticmethod
    def backward(ctx: Any, grad_NM: Tensor) -> tuple[Tensor, Tensor]:
        xq, wq = ctx.saved_tensors
        g = grad_NM.to(torch.bfloat16)
        return (g @ wq.to(torch.bfloat16)).to(xq.dtype), (g.t() @ xq.to(torch.bfloat16)).to(wq.dtype)


class Fp8Linear(nn.Linear):
    """A bias-free nn.Linear whose GEMM runs with e4m3 operands (the same parameter, the same state-dict key)."""

    def forward(self, x: Tensor) -> Tensor:
        if scaled_mm_works(x.device.type) and x.shape[-1] % 16 == 0 and self.out_features % 16 == 0:
            flat = x.reshape(-1, x.shape[-1]).to(torch.bfloat16)
            y: Tensor = _ScaledMM.apply(flat, self.weight)
            return y.view(*x.shape[:-1], self.out_features)
        dtype = torch.get_autocast_dtype(x.device.type) if torch.is_autocast_enabled(x.device.type) else x.dtype
        xq, wq = fp8_operands(x.to(dtype), self.weight.to(dtype))
        return F.linear(xq, wq)


def use_fp8(model: nn.Module, skip: tuple[str, ...] = ("head", "router")) -> int:
    """Run the model's dense GEMMs (bias-free nn.Linear outside `skip`) and expert GEMMs in fp8; return how many.

    The embedding, the output head, the router, the norms and attention's own products stay in the
    compute dtype, as in DeepSeek-V3. Parameters are kept as they are (only the modules' class changes
    to one that quantises in forward), so state dicts and checkpoints are unchanged.
    """
    n = 0
    for name, module in model.named_modules():
        if any(part in skip for part in name.split(".")):
            continue
        if type(module) is nn.Linear and module.bias is None:
            module.__class__ = Fp8Linear
            n += 1
        elif hasattr(module, "fp8"):  # GroupedExperts (which imports this module)
            module.fp8 = True
            n += 1
    return n
