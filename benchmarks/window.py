"""Sliding-window attention: the banded computation against full causal and the dense masked form.

Forward + backward of one attention call (B=1, 4 heads of 32, fp32) at window 128 for sequence
lengths 256 to 4096. "masked" is what the window used to cost: a full score matrix under a band mask;
"full" is plain causal attention (the window off); "banded" computes only the window's blocks
(`moe_trainer.model.window`). Peak memory is the resident-set growth of one call in a fresh fork.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from benchmarks.memory import fresh_python_env, peak_mib
from benchmarks.timing import median_seconds
from moe_trainer.model.window import masked_window_attention, windowed_attention

HEADS, HEAD_DIM, WINDOW = 4, 32, 128
LENGTHS = (256, 512, 1024, 2048, 4096)


def _fwd_bwd(attend: Callable[..., torch.Tensor], S: int) -> Callable[[], None]:
    torch.manual_seed(0)
    q, k, v = (torch.randn(1, HEADS, S, HEAD_DIM, requires_grad=True) for _ in range(3))

    def step() -> None:
        attend(q, k, v).sum().backward()

    return step


VARIANTS: dict[str, Callable[..., torch.Tensor]] = {
    "full": lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True),
    "masked": lambda q, k, v: masked_window_attention(q, k, v, WINDOW),
    "banded": lambda q, k, v: windowed_attention(q, k, v, WINDOW),
}


def peak_memory(S: int) -> dict[str, float]:
    """Peak MiB of each variant at sequence length S, measured in a fresh interpreter."""
    out = subprocess.run([sys.executable, "-m", "benchmarks.window", "--memory", str(S)], env=fresh_python_env(),
                         check=True, capture_output=True, text=True).stdout
    result: dict[str, float] = json.loads(out)
    return result


def measure(S: int, repeats: int = 3) -> dict[str, dict[str, float]]:
    """Median milliseconds and peak MiB of each variant at sequence length S."""
    fns = {name: _fwd_bwd(fn, S) for name, fn in VARIANTS.items()}
    secs = median_seconds(fns, repeats=repeats, warmup=1)
    mib = peak_memory(S)
    return {name: {"ms": secs[name] * 1e3, "mib": mib[name]} for name in fns}


def run() -> dict[int, Any]:
    """Print and return the table."""
    print(f"\n## Sliding window (fwd+bwd, 1 x {HEADS} heads x {HEAD_DIM}, window {WINDOW}, fp32, "
          f"{torch.get_num_threads()} threads)")
    print("| seq len | full ms | masked ms | banded ms | full MiB | masked MiB | banded MiB | banded/masked time |")
    print("|---|---|---|---|---|---|---|---|")
    out = {}
    for S in LENGTHS:
        r = out[S] = measure(S)
        print(f"| {S} | {r['full']['ms']:.1f} | {r['masked']['ms']:.1f} | {r['banded']['ms']:.1f} | "
              f"{r['full']['mib']:.1f} | {r['masked']['mib']:.1f} | {r['banded']['mib']:.1f} | "
              f"{r['banded']['ms'] / r['masked']['ms']:.2f}x |", flush=True)
    return out


if __name__ == "__main__":
    if sys.argv[1:2] == ["--memory"]:
        length = int(sys.argv[2])
        print(json.dumps({name: peak_mib(_fwd_bwd(fn, length)) for name, fn in VARIANTS.items()}))
    else:
        run()
