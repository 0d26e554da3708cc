"""Expert-layer throughput: the grouped fast layer vs the naive reference vs a dense FFN.

Forward + backward at dim 256, expert_dim 128, top-6 of 64 (and 256) routed experts, 4096 tokens,
no shared experts. The dense SwiGLU has hidden = top_k * expert_dim: the same activated FLOPs per
token as the routed experts. The GEMM peak (one large fp32 matmul) gives the machine's scale.
"""

from __future__ import annotations

from typing import Any

import torch

from benchmarks.timing import median_seconds
from dstj_api import MoEConfig
from moe_trainer.model.experts import SwiGLU, grouped_mm_works
from moe_trainer.model.moe import MoE
from tests.trainer.reference_moe import naive_moe_forward

DIM, EXPERT_DIM, TOP_K, TOKENS = 256, 128, 6, 4096


def gemm_peak_gflops(n: int = 2048) -> float:
    """fp32 GFLOP/s of one n x n x n matmul on this machine."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    s = median_seconds({"mm": lambda: a @ b}, repeats=5)["mm"]
    return 2 * n**3 / s / 1e9


def _fwd_bwd(fn: Any, x: torch.Tensor) -> Any:
    def step() -> None:
        x.grad = None
        fn(x).sum().backward()

    return step


def measure(n_experts: int, repeats: int = 5) -> dict[str, float]:
    """tokens/s of fast, naive and dense layers at `n_experts` routed experts."""
    torch.manual_seed(0)
    moe = MoE(DIM, MoEConfig(expert_dim=EXPERT_DIM, n_routed=n_experts, n_shared=0, top_k=TOP_K,
                             bias_update_rate=0.0))
    dense = SwiGLU(DIM, TOP_K * EXPERT_DIM)
    x = torch.randn(TOKENS, DIM, requires_grad=True)
    fns = {
        "fast": _fwd_bwd(moe, x),
        "naive": _fwd_bwd(lambda t: naive_moe_forward(moe, t), x),
        "dense": _fwd_bwd(dense, x),
    }
    secs = median_seconds(fns, repeats=repeats, warmup=1)
    return {name: TOKENS / s for name, s in secs.items()}


def run() -> dict[str, Any]:
    """Print and return the expert-layer benchmark."""
    threads = torch.get_num_threads()
    peak = gemm_peak_gflops()
    print(f"\n## Expert layer (fwd+bwd, {TOKENS} tokens, dim {DIM}, expert_dim {EXPERT_DIM}, top-{TOP_K}, fp32)")
    print(f"torch {torch.__version__}, {threads} threads, grouped_mm on cpu: {grouped_mm_works('cpu', torch.float32)}")
    print(f"GEMM peak (2048^3 fp32 matmul): {peak:.1f} GFLOP/s")
    # Activated GEMM FLOPs per token, fwd+bwd (x3): 3 GEMMs of D x F per chosen expert.
    flops_per_token = 3 * 3 * 2 * DIM * EXPERT_DIM * TOP_K
    out: dict[str, Any] = {"gemm_peak_gflops": peak}
    print(f"{'experts':>8} {'fast tok/s':>11} {'naive tok/s':>12} {'dense tok/s':>12} "
          f"{'fast/naive':>10} {'fast/dense':>10} {'fast GFLOP/s':>12}")
    for n_experts in (64, 256):
        r = measure(n_experts)
        print(f"{n_experts:>8} {r['fast']:>11,.0f} {r['naive']:>12,.0f} {r['dense']:>12,.0f} "
              f"{r['fast'] / r['naive']:>9.1f}x {r['fast'] / r['dense']:>9.2f}x "
              f"{r['fast'] * flops_per_token / 1e9:>12.1f}")
        out[f"e{n_experts}"] = r
    print("goals: fast >= 10x naive, fast >= 0.75x dense")
    return out


if __name__ == "__main__":
    run()
