"""Compressed gradient reduction: bytes per step fp32 / bf16 / int8, and the loss curve against fp32.

Tiny preset on byte tokens, EP=1 (every gradient is reduced, dense over W and experts over DP=W), W=2
real gloo processes, gradient clipping at 0.3 (active on most steps), a few hundred steps per mode.
"""

from __future__ import annotations

import os
import statistics
import tempfile
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from dstj_api import TrainerConfig
from moe_trainer.data import build_datasets
from moe_trainer.parallel.context import make_context
from moe_trainer.training.trainer import Trainer

MODES = ("none", "bf16", "int8")
STEPS = 300
CLIP = 0.3


def _config(corpus: Path, mode: str) -> TrainerConfig:
    return TrainerConfig.model_validate({
        "model": {"preset": "tiny", "vocabSize": 256},
        "train": {"steps": STEPS, "globalBatch": 12, "microBatch": 2, "seqLen": 32},
        "optim": {"gradClip": CLIP, "gradCompression": mode},
        "data": {"source": "path", "path": str(corpus), "tokenizer": "bytes", "minChars": 100},
        "parallel": {"expertParallel": 1},
    })


def _worker(rank: int, world: int, store: str, corpus: Path, out: Any) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    for mode in MODES:
        cfg = _config(corpus, mode)
        trainer = Trainer(cfg, make_context(cfg, rank, world, torch.device("cpu")), torch.device("cpu"))
        curve, sent, clipped = [], [], 0
        for _ in range(STEPS):
            r = trainer.train_step()
            curve.append(r.loss)
            sent.append(r.grad_bytes)
            clipped += r.grad_norm > CLIP
        if rank == 0:
            out.put((mode, curve, statistics.median(sent), clipped / STEPS))
    dist.destroy_process_group()


def run(world: int = 2) -> dict[str, Any]:
    """Print and return bytes per step and the loss curves of each mode."""
    from pydoc_data.topics import topics

    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / "corpus.txt"
        corpus.write_text("\n\n".join(topics[k] for k in sorted(topics)))
        saved = os.environ.get("DSTJ_CACHE")
        os.environ["DSTJ_CACHE"] = str(Path(tmp) / "cache")  # the spawned workers inherit it
        try:
            build_datasets(_config(corpus, "none"))  # once, before the workers read it from the cache
            ctx = mp.get_context("spawn")
            out = ctx.Queue()
            procs = [ctx.Process(target=_worker, args=(r, world, str(Path(tmp) / "store"), corpus, out))
                     for r in range(world)]
            for p in procs:
                p.start()
            results = {mode: (curve, sent, clipped) for mode, curve, sent, clipped in (out.get() for _ in MODES)}
            for p in procs:
                p.join()
        finally:
            if saved is None:
                os.environ.pop("DSTJ_CACHE", None)
            else:
                os.environ["DSTJ_CACHE"] = saved
    base_curve, base_sent, _ = results["none"]
    print(f"\n## Compressed gradient reduction (tiny preset, EP=1, W={world}, {STEPS} steps, clip {CLIP})")
    print("| reduction | bytes sent per rank per step | vs fp32 | steps clipped | loss at 50 / 150 / 300 | "
          "mean abs loss gap to fp32, last 100 steps |")
    print("|---|---|---|---|---|---|")
    for mode in MODES:
        curve, sent, clipped = results[mode]
        gap = statistics.mean(abs(a - b) for a, b in zip(curve[-100:], base_curve[-100:], strict=True))
        marks = " / ".join(f"{curve[i - 1]:.3f}" for i in (50, 150, STEPS))
        print(f"| {'fp32 all-reduce' if mode == 'none' else mode} | {sent:,.0f} | {sent / base_sent:.2f}x | "
              f"{clipped:.0%} | {marks} | {gap:.4f} |")
    return results


if __name__ == "__main__":
    run()
