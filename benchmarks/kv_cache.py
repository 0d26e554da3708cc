"""KV cache per token: Multi-head Latent Attention against multi-head attention (counted, not timed).

A cache holds, per token and layer, MHA's keys and values (2 x dim elements) or MLA's latent and
shared rotary key (kvLoraRank + qkRopeHeadDim). Bytes at bf16 (2 per element).
"""

from __future__ import annotations

from dstj_api import ModelConfig
from moe_trainer.model.mla import kv_cache_elements_per_token

CASES: dict[str, ModelConfig] = {
    "tiny": ModelConfig(preset="tiny"),
    "v3-tiny": ModelConfig(preset="v3-tiny"),
    "base (mha, dim 1024)": ModelConfig(preset="base"),
    "base with mla (kvLoraRank 256, qkRopeHeadDim 32)": ModelConfig(
        preset="base", attention="mla", kv_lora_rank=256, qk_rope_head_dim=32, qk_nope_head_dim=64, v_head_dim=64
    ),
    "DeepSeek-V3's shape (128 heads of 128, kvLoraRank 512, qkRopeHeadDim 64)": ModelConfig(
        dim=7168, n_heads=128, attention="mla", kv_lora_rank=512, qk_rope_head_dim=64, qk_nope_head_dim=128,
        v_head_dim=128,
    ),
}


def run() -> dict[str, int]:
    """Print the elements and bf16 bytes per token and layer of each case, with MHA's for the same heads
    (MHA caching every head's key and value at the MLA model's head dims)."""
    print("\n## KV cache per token and layer (elements; bf16 bytes)")
    print("| model | attention | cached elements | bytes | MHA of the same heads | MLA / MHA |")
    print("|---|---|---|---|---|---|")
    out = {}
    for name, cfg in CASES.items():
        n = out[name] = kv_cache_elements_per_token(cfg)
        heads = cfg.n_heads * (cfg.qk_nope_head_dim + cfg.qk_rope_head_dim + cfg.v_head_dim)
        mha = heads if cfg.attention == "mla" else 2 * cfg.dim
        print(f"| {name} | {cfg.attention} | {n} | {2 * n} | {mha} | {n / mha:.3f} |")
    return out


if __name__ == "__main__":
    run()
