"""Compute to reach a loss: the MoE against a dense model of the same activated FLOPs, MLA, MTP.

Every variant trains on the built-in corpus (the same BPE tokens, the same sample order per seed, the
same schedule), 3 seeds each, and records the held-out loss every `EVAL_EVERY` steps against the
training FLOPs and wall seconds spent so far. Variants (all 4 layers, width 64, 4 heads, seqLen 64,
globalBatch 16):
    moe    layer 0 a dense SwiGLU of 96, layers 1-3 MoE: 8 routed experts of 32, top-2, 1 shared
           (96 activated hidden), sigmoid routing;
    dense  the same model with every layer a dense SwiGLU of 96: same width, depth, attention and
           activated FFN FLOPs per token (the MoE's router adds 0.7%), a third of its FFN parameters;
    mla    moe with attention: mla (kvLoraRank 32, qkNope 16 + qkRope 8, vHead 16);
    mtp    moe with one MTP module (lambda 0.3); its FLOPs count the module's block and head.

FLOP convention: training FLOPs = 6 x (activated matmul parameters per token) x tokens, i.e. forward
2 and backward 4 FLOPs per parameter per token (Kaplan et al. 2020), counting every nn.Linear and
expert GEMM a token passes through (routed experts: only its top-k, plus the shared ones and the
router), the output head included and the embedding lookup excluded; plus attention's own products,
6 x layers x seqLen x (query-key + value dims) per token (no causal halving; the same in every
variant but mla's). Wall time is this machine's (2 shared cores): read FLOPs first.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from dstj_api import ModelConfig, TrainerConfig
from moe_trainer.model.experts import GroupedExperts
from moe_trainer.model.moe import MoE
from moe_trainer.model.transformer import Transformer
from moe_trainer.training.trainer import Trainer

STEPS, EVAL_EVERY, SEEDS = 300, 20, (0, 1, 2)
OUT = Path(__file__).parent / "compute_to_loss"
BASE: dict[str, Any] = {
    "vocab_size": 512, "dim": 64, "n_layers": 4, "n_heads": 4, "max_seq_len": 64, "n_dense_layers": 1,
    "dense_dim": 96,
    "moe": {"n_routed": 8, "n_shared": 1, "top_k": 2, "expert_dim": 32, "score_func": "sigmoid"},
}
VARIANTS: dict[str, dict[str, Any]] = {
    "moe": {},
    "dense": {"n_dense_layers": 4},
    "mla": {"attention": "mla", "kv_lora_rank": 32, "qk_nope_head_dim": 16, "qk_rope_head_dim": 8,
            "v_head_dim": 16},
    "mtp": {"mtp_depth": 1, "mtp_loss_weight": 0.3},
}


def activated_params_per_token(model: Transformer) -> int:
    """Matmul parameters one token's forward passes through (routed experts: its top-k only)."""
    n = 0
    for module in model.modules():
        if isinstance(module, torch.nn.Linear):
            n += module.weight.numel()
        elif isinstance(module, GroupedExperts):
            per_expert = sum(w[0].numel() for w in (module.w1_EDF, module.w3_EDF, module.w2_EFD))
            moe = next(m for m in model.moe_layers() if m.experts is module)
            n += moe.top_k * per_expert
        elif isinstance(module, MoE):
            n += module.router.weight_ED.numel()
    return n


def train_flops_per_token(cfg: ModelConfig, seq_len: int) -> float:
    """6 x activated parameters + attention's products (see the module docstring)."""
    model = Transformer(cfg)
    if cfg.attention == "mla":
        qk, v = cfg.n_heads * (cfg.qk_nope_head_dim + cfg.qk_rope_head_dim), cfg.n_heads * cfg.v_head_dim
    else:
        qk = v = cfg.dim
    blocks = cfg.n_layers + cfg.mtp_depth
    return 6 * activated_params_per_token(model) + 6 * blocks * seq_len * (qk + v)


def config(variant: str, seed: int, steps: int = STEPS) -> TrainerConfig:
    model = BASE | VARIANTS[variant] | {"moe": BASE["moe"]}
    return TrainerConfig.model_validate({
        "model": model,
        "train": {"steps": steps, "global_batch": 16, "micro_batch": 16, "seq_len": 64, "seed": seed,
                  "eval_batches": 4},
        "optim": {"lr": 3e-3, "warmup_steps": 20},
    })


def run_one(variant: str, seed: int, steps: int = STEPS) -> dict[str, Any]:
    """One training run: held-out loss against FLOPs and wall seconds."""
    cfg = config(variant, seed, steps)
    per_token = train_flops_per_token(cfg.model, cfg.train.seq_len)
    trainer = Trainer(cfg)
    tokens_per_step = cfg.train.global_batch * cfg.train.seq_len
    points = [{"step": 0, "flops": 0.0, "seconds": 0.0, "loss": trainer.evaluate()}]
    wall = 0.0
    for step in range(1, steps + 1):
        start = time.perf_counter()
        trainer.train_step()
        wall += time.perf_counter() - start
        if step % EVAL_EVERY == 0:
            points.append({"step": step, "flops": per_token * tokens_per_step * step, "seconds": wall,
                           "loss": trainer.evaluate()})
    return {"variant": variant, "seed": seed, "flops_per_token": per_token, "points": points}


def summarise(runs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per variant: the mean held-out loss curve over seeds, FLOPs per token, seconds per step."""
    out: dict[str, dict[str, Any]] = {}
    for variant in VARIANTS:
        mine = [r for r in runs if r["variant"] == variant]
        if not mine:
            continue
        curves = [[p["loss"] for p in r["points"]] for r in mine]
        out[variant] = {
            "flops_per_token": mine[0]["flops_per_token"],
            "flops": [p["flops"] for p in mine[0]["points"]],
            "seconds": [statistics.mean(r["points"][i]["seconds"] for r in mine) for i in range(len(curves[0]))],
            "loss": [statistics.mean(c[i] for c in curves) for i in range(len(curves[0]))],
            "loss_spread": [max(c[i] for c in curves) - min(c[i] for c in curves) for i in range(len(curves[0]))],
        }
    return out


def flops_to_reach(curve: dict[str, Any], target: float) -> float | None:
    """FLOPs at which the mean curve first reaches `target` (linear between evaluations), None if never."""
    f, loss = curve["flops"], curve["loss"]
    for i in range(1, len(loss)):
        if loss[i] <= target:
            a = (loss[i - 1] - target) / (loss[i - 1] - loss[i]) if loss[i - 1] != loss[i] else 1.0
            return f[i - 1] + a * (f[i] - f[i - 1])
    return None


def plot(summary: dict[str, dict[str, Any]], path: Path, n_seeds: int) -> None:
    """Held-out loss against training FLOPs and against wall seconds, one line per variant."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (by_flops, by_time) = plt.subplots(1, 2, figsize=(11, 4))
    for variant, s in summary.items():
        by_flops.plot(s["flops"][1:], s["loss"][1:], marker=".", label=variant)
        by_time.plot(s["seconds"][1:], s["loss"][1:], marker=".", label=variant)
    by_flops.set(xlabel="training FLOPs (6 x activated params x tokens + attention)", ylabel="held-out loss (nats)",
                 xscale="log", title=f"loss against compute (mean of {n_seeds} seeds)")
    by_time.set(xlabel="wall seconds (2 shared CPU cores)", ylabel="held-out loss (nats)",
                title="loss against wall time")
    for ax in (by_flops, by_time):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def run(variants: tuple[str, ...] = tuple(VARIANTS), steps: int = STEPS) -> dict[str, dict[str, Any]]:
    """Train every variant and seed, print the table, write the plot and the raw curves."""
    print(f"\n## Compute to reach a loss ({steps} steps x {len(SEEDS)} seeds per variant, built-in corpus)")
    runs = []
    OUT.mkdir(exist_ok=True)
    for seed in SEEDS:  # seed-major, so an interrupted run still has every variant
        for variant in variants:
            runs.append(run_one(variant, seed, steps))
            last = runs[-1]["points"][-1]
            print(f"  {variant} seed {seed}: held-out {last['loss']:.4f} after {last['seconds']:.0f} s", flush=True)
            (OUT / "runs.json").write_text(json.dumps(runs))
    return report(runs, steps)


def report(runs: list[dict[str, Any]], steps: int) -> dict[str, dict[str, Any]]:
    """The table and the plot of finished runs."""
    summary = summarise(runs)
    seeds = sorted({r["seed"] for r in runs})
    print(f"seeds {seeds}")
    plot(summary, OUT / "loss_vs_compute.png", len(seeds))
    target = max(s["loss"][-1] for s in summary.values())  # the loss every variant reaches
    base = flops_to_reach(summary["moe"], target) if "moe" in summary else None
    print(f"target held-out loss {target:.4f} (the worst variant's final mean loss)")
    print("| variant | training FLOPs per token | GFLOPs to the target | vs moe | final loss (seed spread) | s/step |")
    print("|---|---|---|---|---|---|")
    for variant, s in summary.items():
        reach = flops_to_reach(s, target)
        ratio = f"{reach / base:.2f}x" if reach and base else "-"
        print(f"| {variant} | {s['flops_per_token'] / 1e6:.2f} MFLOP/token | "
              f"{reach / 1e9 if reach else float('nan'):.1f} | {ratio} | {s['loss'][-1]:.4f} "
              f"({s['loss_spread'][-1]:.3f}) | {s['seconds'][-1] / steps:.3f} |")
    print(f"plot: {OUT / 'loss_vs_compute.png'}")
    return summary


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("variants", nargs="*", choices=[*VARIANTS, []], help="default: all")
    parser.add_argument("--steps", type=int, default=STEPS)
    parser.add_argument("--report", action="store_true", help="only print the table and plot of the saved runs")
    args = parser.parse_args()
    if args.report:
        saved = json.loads((OUT / "runs.json").read_text())
        report(saved, len(saved[0]["points"]) and saved[0]["points"][-1]["step"])
    else:
        run(tuple(args.variants) or tuple(VARIANTS), args.steps)
