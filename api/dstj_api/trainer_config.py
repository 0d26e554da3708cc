"""The trainer config: what a user writes to describe a training run (model, data, optimizer, steps).

Torch-free so that the operator's CRD can embed it. Field names are camelCase on the wire (the
Kubernetes convention) and snake_case in Python; both spellings are accepted. Unknown fields are
refused, so a typo never silently falls back to a default (a worker reading the operator's rendering
drops them instead: `load_trainer_config(..., lenient=True)`, see `lenient.py`). Cross-field rules raise errors that say
how to fix the config.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, ClassVar, Literal, Self

from pydantic import Field, ValidationError, model_validator
from pydantic.alias_generators import to_snake

from dstj_api.errors import ConfigError, format_validation_error
from dstj_api.lenient import read_lenient
from dstj_api.rules import Filled, IsInt, Not, Rule, all_of, enforce, f, implies
from dstj_api.wire import WireModel

_REACHABLE = f("topkGroups") * (f("nRouted") // f("nGroups"))
"""Experts a token can reach under group-limited routing."""


class MoEConfig(WireModel):
    """DeepSeek-style MoE feed-forward: fine-grained routed experts plus always-on shared experts."""

    n_routed: int = Field(8, ge=1, le=4096, description="Routed experts per MoE layer (E).")
    n_shared: int = Field(1, ge=0, le=64, description="Shared experts every token passes through.")
    top_k: int = Field(2, ge=1, le=64, description="Routed experts chosen per token (K).")
    expert_dim: int = Field(64, ge=1, description="Hidden size of each expert's SwiGLU (F).")
    score_func: Literal["softmax", "sigmoid"] = Field("softmax", description="Router score function.")
    temperature: float = Field(1.0, gt=0, description="Router logits are divided by this before scoring.")
    n_groups: int = Field(1, ge=1, description="Expert groups for group-limited routing (1 = off).")
    topk_groups: int = Field(
        1, ge=1, description="Groups a token may route into when n_groups > 1; with expert parallelism each rank holds "
        "whole groups, so a token's all-to-all reaches at most this many ranks.",
    )
    route_scale: float = Field(1.0, gt=0, description="Multiplier on the normalised gate weights.")
    bias_update_rate: float = Field(
        1e-3, ge=0, description="Aux-loss-free balancing: per-step bias change (gamma); 0 turns it off."
    )
    aux_loss_weight: float = Field(
        0.0, ge=0, description="Weight of the sequence-level balance loss (0 = off, as in DeepSeek-V3)."
    )
    capacity_factor: float | None = Field(
        None, gt=0, description="Tokens per expert allowed, as a multiple of the even share; null = no drop."
    )

    RULES: ClassVar[tuple[Rule, ...]] = (
        Rule("topK", f("topK") <= f("nRouted"), "topK ({topK}) must be <= nRouted ({nRouted}); lower topK"),
        Rule("nGroups", (f("nRouted") % f("nGroups")).eq(0),
             "nGroups ({nGroups}) must divide nRouted ({nRouted}); pick a divisor"),
        Rule("topkGroups", f("topkGroups") <= f("nGroups"),
             "topkGroups ({topkGroups}) must be <= nGroups ({nGroups}); lower topkGroups"),
        # Only where the rules above hold: a topK above nRouted is reported once, by the first rule.
        Rule("topK", implies(all_of(f("topK") <= f("nRouted"), (f("nRouted") % f("nGroups")).eq(0),
                                    f("topkGroups") <= f("nGroups")), f("topK") <= _REACHABLE),
             "topK ({topK}) exceeds the experts reachable in topkGroups groups ({reachable}); "
             "raise topkGroups or lower topK", {"reachable": _REACHABLE}),
    )

    @model_validator(mode="after")
    def _check_routing(self) -> Self:
        return enforce(self)


def _preset_schema(schema: dict[str, Any]) -> None:
    """`preset` is one of PRESETS in the schema. Not nullable there: the API server then drops a null preset,
    which means no preset, as here (a nullable enum would refuse null)."""
    schema.pop("anyOf", None)
    schema.update(type="string", enum=list(PRESETS))


class ModelConfig(WireModel):
    """Decoder-only transformer; the first `n_dense_layers` use a dense FFN, the rest MoE."""

    preset: str | None = Field(
        None, description="Start from a named preset; fields given override it.",
        json_schema_extra=lambda schema: _preset_schema(schema),
    )
    vocab_size: int = Field(512, ge=2, description="Vocabulary size (the BPE tokenizer is trained to it).")
    dim: int = Field(64, ge=8, description="Model width (D).")
    n_layers: int = Field(2, ge=1, le=256, description="Transformer blocks.")
    n_heads: int = Field(4, ge=1, description="Attention heads; must divide dim (attention: mha).")
    max_seq_len: int = Field(128, ge=2, description="Longest sequence the RoPE tables cover.")
    rope_theta: float = Field(10000.0, gt=0, description="RoPE base frequency.")
    norm_eps: float = Field(1e-6, gt=0, description="RMSNorm epsilon.")
    sliding_window: int | None = Field(
        None, ge=1, description="Local attention window in tokens (null = full causal attention)."
    )
    n_dense_layers: int = Field(1, ge=0, description="Leading blocks with a dense FFN instead of MoE.")
    dense_dim: int = Field(128, ge=1, description="Hidden size of the dense SwiGLU FFN.")
    moe: MoEConfig = Field(default_factory=lambda: MoEConfig(), description="MoE layer settings.")
    attention: Literal["mha", "mla"] = Field(
        "mha", description="mha: multi-head attention; mla: Multi-head Latent Attention (DeepSeek-V2/V3), keys and "
        "values from a low-rank latent per token with a decoupled RoPE key.",
    )
    kv_lora_rank: int = Field(32, ge=1, description="MLA: rank of the joint key-value latent (attention: mla).")
    q_lora_rank: int = Field(
        0, ge=0, description="MLA: rank of the query latent; 0 = queries straight from the input (attention: mla)."
    )
    qk_nope_head_dim: int = Field(
        16, ge=1, description="MLA: per-head query/key dims without position (attention: mla)."
    )
    qk_rope_head_dim: int = Field(
        8, ge=2, description="MLA: rotary query/key dims, the key part shared by all heads; even (attention: mla)."
    )
    v_head_dim: int = Field(16, ge=1, description="MLA: per-head value dims (attention: mla).")
    mtp_depth: int = Field(
        0, ge=0, le=8, description="Multi-Token Prediction modules (D, DeepSeek-V3): module k also predicts "
        "token t+1+k; 0 = off.",
    )
    mtp_loss_weight: float = Field(
        0.3, ge=0, description="MTP loss weight (lambda): the training loss adds lambda times the mean of the D "
        "modules' losses (mtpDepth > 0).",
    )

    @model_validator(mode="before")
    @classmethod
    def _expand_preset(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("preset") is not None:
            name = data["preset"]
            if name not in PRESETS:
                raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
            return _deep_merge(PRESETS[name], data)
        return data

    RULES: ClassVar[tuple[Rule, ...]] = (
        Rule("nHeads", implies(f("attention").eq("mha"),
                               all_of((f("dim") % f("nHeads")).eq(0), ((f("dim") // f("nHeads")) % 2).eq(0))),
             "nHeads ({nHeads}) must divide dim ({dim}) into an even head size (RoPE rotates pairs); "
             "change dim or nHeads"),
        Rule("nDenseLayers", f("nDenseLayers") <= f("nLayers"),
             "nDenseLayers ({nDenseLayers}) must be <= nLayers ({nLayers}); lower nDenseLayers or add layers"),
        Rule("qkRopeHeadDim", implies(f("attention").eq("mla"), (f("qkRopeHeadDim") % 2).eq(0)),
             "qkRopeHeadDim ({qkRopeHeadDim}) must be even (RoPE rotates pairs); change qkRopeHeadDim"),
        Rule("mtpDepth", f("mtpDepth") < f("nLayers"),
             "mtpDepth ({mtpDepth}) must be below nLayers ({nLayers}): each MTP module is one more block on top of "
             "the main model; lower mtpDepth or add layers"),
    )

    @model_validator(mode="after")
    def _check_shapes(self) -> Self:
        return enforce(self)


class OptimConfig(WireModel):
    """AdamW with linear warmup then cosine decay to `min_lr_ratio * lr`."""

    lr: float = Field(3e-3, gt=0, description="Peak learning rate.")
    min_lr_ratio: float = Field(0.1, ge=0, le=1, description="Final learning rate as a fraction of lr.")
    warmup_steps: int = Field(10, ge=0, description="Optimizer steps of linear warmup.")
    weight_decay: float = Field(0.1, ge=0, description="AdamW decoupled weight decay.")
    beta1: float = Field(0.9, ge=0, lt=1, description="AdamW beta1.")
    beta2: float = Field(0.95, ge=0, lt=1, description="AdamW beta2.")
    eps: float = Field(1e-8, gt=0, description="AdamW epsilon.")
    grad_clip: float | None = Field(1.0, gt=0, description="Clip the global gradient norm to this (null = off).")
    shard_state: bool = Field(
        False, description="ZeRO-1: each rank keeps AdamW state only for its share of the parameters (dense ones "
        "split over all ranks, each expert's over its data-parallel replicas) and the updated parameters are "
        "all-gathered after the step. Same update as unsharded; at one rank (or DP=1 for experts) nothing to split.",
    )
    grad_compression: Literal["none", "bf16", "int8"] = Field(
        "none", description="How gradients are summed over their replicas: none (fp32 all-reduce), bf16, or int8 "
        "with a scale per 256 values; compressed sums keep what rounding lost (error feedback) for the next step. "
        "A no-op at one rank (nothing is summed; said at start); int8 sends ~0.25x the bytes of fp32.",
    )


class DataConfig(WireModel):
    """Where text comes from and how it is cleaned, deduplicated, ordered and tokenized."""

    source: Literal["builtin", "path"] = Field(
        "builtin", description="builtin: prose shipped with Python itself; path: your own text files."
    )
    path: str | None = Field(None, description="A .txt/.jsonl file or a directory of them (source=path).")
    tokenizer: Literal["bpe", "bytes"] = Field("bpe", description="Byte-level BPE trained on the corpus, or bytes.")
    min_chars: int = Field(200, ge=0, description="Quality filter: drop documents shorter than this.")
    max_symbol_ratio: float = Field(
        0.3, ge=0, le=1, description="Quality filter: drop documents whose non-letter, non-space share exceeds this."
    )
    dedup: bool = Field(True, description="Remove exact and near-duplicate documents (MinHash LSH).")
    dedup_threshold: float = Field(
        0.8, gt=0, le=1, description="Jaccard similarity above which two documents are duplicates."
    )
    curriculum: bool = Field(False, description="Order the first passes from easy to hard (short, common text first).")
    holdout_fraction: float = Field(0.05, gt=0, lt=0.5, description="Share of documents kept for evaluation.")


class TrainConfig(WireModel):
    """The run: how many optimizer steps, over which global batch, at which precision."""

    steps: int = Field(100, ge=1, description="Optimizer steps to run.")
    global_batch: int = Field(16, ge=1, description="Sequences per optimizer step, whatever the world size.")
    micro_batch: int = Field(
        8, ge=1, description="Sequences per forward pass on one rank (accumulation makes up the rest)."
    )
    seq_len: int = Field(64, ge=2, description="Tokens per training sequence.")
    precision: Literal["fp32", "bf16", "fp8"] = Field(
        "fp32", description="bf16 runs matmuls under autocast; fp8 also runs the expert and dense GEMMs in e4m3 with "
        "per-tile scales (on a GPU with fp8; elsewhere only with precisionEmulation); master weights stay fp32."
    )
    precision_emulation: bool = Field(
        False, description="precision fp8 without fp8 hardware: quantise-dequantise in bf16, the numerics of fp8 "
        "without its speed (for CPU tests and older GPUs).",
    )
    activation_checkpointing: bool = Field(False, description="Recompute block activations in backward to save memory.")
    seed: int = Field(0, ge=0, description="Seeds initialisation and the data order.")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto picks cuda when present.")
    log_every: int = Field(10, ge=1, description="Print a progress line every this many steps.")
    eval_every: int = Field(0, ge=0, description="Evaluate held-out loss every this many steps (0 = only at the end).")
    eval_batches: int = Field(4, ge=1, description="Batches of held-out data per evaluation.")
    metrics_port: int | None = Field(
        None, ge=1, le=65535, description="Serve Prometheus metrics on this port + local rank (null = off)."
    )

    RULES: ClassVar[tuple[Rule, ...]] = (
        Rule("microBatch", (f("globalBatch") % f("microBatch")).eq(0),
             "microBatch ({microBatch}) must divide globalBatch ({globalBatch}); "
             "the global batch is split into whole micro-batches"),
    )

    @model_validator(mode="after")
    def _check_batch(self) -> Self:
        return enforce(self)


class CheckpointConfig(WireModel):
    """Where and how often the run saves its state."""

    dir: str | None = Field(None, description="Shared directory or fsspec URL for checkpoints (null = none).")
    interval: int = Field(50, ge=1, description="Save every this many optimizer steps.")
    keep: int = Field(3, ge=1, description="Completed checkpoints kept; older ones are deleted.")
    resume_from: str | None = Field(
        None, description="Until this run has committed a checkpoint of its own, start from this one: a checkpoint "
        "directory or URL, or another run's checkpoint root (its latest). Its step, data position and state carry on.",
    )


class ParallelConfig(WireModel):
    """How the world size is split into expert-parallel x data-parallel groups."""

    expert_parallel: Literal["auto"] | int = Field(
        "auto", description="EP degree: auto picks the largest that divides the world size and nRouted (and nGroups "
        "when > 1: groups are never split), up to epCap.",
    )
    ep_cap: int = Field(8, ge=1, description="Largest EP degree auto may pick.")

    RULES: ClassVar[tuple[Rule, ...]] = (
        Rule("expertParallel", implies(IsInt(f("expertParallel")), f("expertParallel") >= 1),
             "expertParallel must be auto or >= 1 (got {expertParallel})"),
        Rule("expertParallel", implies(Not(IsInt(f("expertParallel"))), f("expertParallel").eq("auto")),
             "expertParallel must be auto or an integer (got {expertParallel})"),
    )

    @model_validator(mode="after")
    def _check_ep(self) -> Self:
        return enforce(self)


class TrainerConfig(WireModel):
    """Everything the trainer needs; the operator renders it into the job's ConfigMap."""

    model: ModelConfig = Field(default_factory=lambda: ModelConfig(preset="tiny"))
    train: TrainConfig = Field(default_factory=lambda: TrainConfig())
    optim: OptimConfig = Field(default_factory=lambda: OptimConfig())
    data: DataConfig = Field(default_factory=lambda: DataConfig())
    checkpoint: CheckpointConfig = Field(default_factory=lambda: CheckpointConfig())
    parallel: ParallelConfig = Field(default_factory=lambda: ParallelConfig())

    RULES: ClassVar[tuple[Rule, ...]] = (
        Rule("train.seqLen", f("train.seqLen") <= f("model.maxSeqLen"),
             "train.seqLen ({train.seqLen}) exceeds model.maxSeqLen ({model.maxSeqLen}); "
             "raise model.maxSeqLen or shorten train.seqLen"),
        Rule("model.vocabSize", implies(f("data.tokenizer").eq("bytes"), f("model.vocabSize") >= 256),
             "data.tokenizer=bytes needs model.vocabSize >= 256 (got {model.vocabSize}); raise it or use bpe"),
        Rule("parallel.expertParallel",
             implies(all_of(IsInt(f("parallel.expertParallel")), f("parallel.expertParallel") >= 1),
                     (f("model.moe.nRouted") % f("parallel.expertParallel")).eq(0)),
             "parallel.expertParallel ({parallel.expertParallel}) must divide model.moe.nRouted "
             "({model.moe.nRouted}); pick a divisor or auto"),
        Rule("parallel.expertParallel",
             implies(all_of(IsInt(f("parallel.expertParallel")), f("parallel.expertParallel") >= 1,
                            f("model.moe.nGroups") > 1),
                     (f("model.moe.nGroups") % f("parallel.expertParallel")).eq(0)),
             "parallel.expertParallel ({parallel.expertParallel}) must divide model.moe.nGroups "
             "({model.moe.nGroups}): each rank holds whole expert groups, so topkGroups bounds the ranks a token "
             "reaches; pick a divisor or auto"),
        Rule("data.path", implies(f("data.source").eq("path"), Filled(f("data.path"))),
             "data.source=path needs data.path (a file or directory of .txt/.jsonl)"),
        Rule("model.mtpDepth", f("model.mtpDepth") + 2 <= f("train.seqLen"),
             "model.mtpDepth ({model.mtpDepth}) leaves no target in train.seqLen ({train.seqLen}) tokens; "
             "lower mtpDepth or lengthen seqLen"),
    )

    @model_validator(mode="after")
    def _check_cross(self) -> Self:
        return enforce(self)


def _deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """Overlay `over` on `base`; keys are compared in snake_case so camelCase overrides win."""
    out = dict(base)
    for raw_key, value in over.items():
        key = to_snake(raw_key)
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


# Presets are plain data so the CRD and docs can list them. `tiny` (and `v3-tiny`) train in seconds on 2 CPU cores;
# `small` in minutes; `base` and up are worth a GPU.
PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {
        "vocab_size": 512, "dim": 64, "n_layers": 2, "n_heads": 4, "max_seq_len": 128,
        "n_dense_layers": 1, "dense_dim": 128,
        "moe": {"n_routed": 8, "n_shared": 1, "top_k": 2, "expert_dim": 32},
    },
    # tiny with DeepSeek-V3's set: sigmoid group-limited routing, MLA (KV cache 40 elements per token and
    # layer against MHA's 128), one MTP module.
    "v3-tiny": {
        "vocab_size": 512, "dim": 64, "n_layers": 2, "n_heads": 4, "max_seq_len": 128,
        "n_dense_layers": 1, "dense_dim": 128,
        "attention": "mla", "kv_lora_rank": 32, "q_lora_rank": 48, "qk_nope_head_dim": 16, "qk_rope_head_dim": 8,
        "v_head_dim": 16, "mtp_depth": 1, "mtp_loss_weight": 0.3,
        "moe": {"n_routed": 8, "n_shared": 1, "top_k": 2, "expert_dim": 32, "score_func": "sigmoid",
                "n_groups": 4, "topk_groups": 2},
    },
    "small": {
        "vocab_size": 2048, "dim": 256, "n_layers": 4, "n_heads": 8, "max_seq_len": 256,
        "n_dense_layers": 1, "dense_dim": 512,
        "moe": {"n_routed": 16, "n_shared": 1, "top_k": 4, "expert_dim": 128},
    },
    "base": {
        "vocab_size": 32000, "dim": 1024, "n_layers": 12, "n_heads": 16, "max_seq_len": 2048,
        "n_dense_layers": 1, "dense_dim": 4096,
        "moe": {"n_routed": 64, "n_shared": 2, "top_k": 6, "expert_dim": 512, "score_func": "sigmoid",
                "n_groups": 8, "topk_groups": 4, "route_scale": 2.5},
    },
    "large": {
        "vocab_size": 32000, "dim": 2048, "n_layers": 24, "n_heads": 16, "max_seq_len": 4096,
        "n_dense_layers": 1, "dense_dim": 8192,
        "moe": {"n_routed": 160, "n_shared": 2, "top_k": 6, "expert_dim": 1024, "score_func": "sigmoid",
                "n_groups": 8, "topk_groups": 3, "route_scale": 2.5},
    },
}


def model_preset(name: str) -> ModelConfig:
    """The model config of a named preset."""
    return ModelConfig(preset=name)


def config_digest(text: str) -> str:
    """The digest a membership generation names its trainer config by: of the rendered JSON text, exactly as the
    operator writes it into the config ConfigMap and the worker reads it (file or API)."""
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def load_trainer_config(source: str | Path | dict[str, Any], *, lenient: bool = False) -> TrainerConfig:
    """Parse a trainer config from a JSON file path or a dict; raise ConfigError naming each bad field.

    `lenient`: the config was rendered by the operator (already validated against its own, possibly newer,
    model): fields this version does not know are dropped with a debug log instead of refused. A config a
    user wrote is read strictly, so a typo is never silently ignored.
    """
    if isinstance(source, dict):
        return _validate(source, "trainer config", lenient)
    try:
        text = Path(source).read_text()
    except FileNotFoundError as e:
        raise ConfigError(f"{source}: no such file; pass --config PATH to a JSON trainer config") from e
    return parse_trainer_config(text, str(source), lenient=lenient)


def parse_trainer_config(text: str, label: str, *, lenient: bool = False) -> TrainerConfig:
    """A trainer config from its JSON text (`label` names where it came from in errors); see load_trainer_config."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError(f"{label}: not valid JSON at line {e.lineno} column {e.colno}: {e.msg}") from e
    return _validate(data, label, lenient)


def _validate(data: Any, label: str, lenient: bool) -> TrainerConfig:
    try:
        return read_lenient(TrainerConfig, data, label) if lenient else TrainerConfig.model_validate(data)
    except ValidationError as e:
        raise ConfigError(format_validation_error(e, label)) from None
