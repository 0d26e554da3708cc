"""One rank's trainer: model, optimizer and data, and the optimizer step over the global batch.

The global batch of step s (`train.globalBatch` sequences, chosen by `(seed, s)`) is cut into
micro-batches of `train.microBatch` whole sequences; micro-batch c goes to rank c mod W. The loss
of every micro-batch is its summed token cross-entropy over the *global* token count, and gradients
are summed over ranks, so a step computes the same update at any world size (up to fp32 summation
order). Micro-batches are also the MoE capacity groups, so token dropping is W-independent too.
With EP > 1 every rank of an EP group must run the same number of forward passes (they exchange
tokens), so a rank short of micro-batches runs empty ones.

With Multi-Token Prediction (`model.mtpDepth` D > 0) module k predicts token t+1+k; its
cross-entropy is summed like the main one and normalised by its own global token count
(globalBatch * (seqLen - k)), and the loss adds `mtpLossWeight / D` times their sum: W-independent too.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from dstj_api import ConfigError, TrainerConfig
from moe_trainer.checkpoint.checkpointer import flat_state
from moe_trainer.data import TokenDataset, build_datasets
from moe_trainer.data.dataset import DataInfo
from moe_trainer.misconfig import RunConfigError
from moe_trainer.model.balance import RoutingStats, local_counts
from moe_trainer.model.expert_parallel import ExpertShard
from moe_trainer.model.fp8 import scaled_mm_works, use_fp8
from moe_trainer.model.transformer import Transformer
from moe_trainer.parallel.compress import RESIDUAL_PREFIX, GradReducer
from moe_trainer.parallel.context import DistContext
from moe_trainer.parallel.groups import clip_global_norm
from moe_trainer.parallel.zero import StatePlan
from moe_trainer.training.optim import build_optimizer, lr_at, set_lr

Datasets = tuple[TokenDataset, TokenDataset, DataInfo]
"""Train and held-out data with their statistics, as `build_datasets` returns them."""


@dataclass(slots=True, kw_only=True)
class StepResult:
    """What one optimizer step measured (global over all ranks)."""

    step: int
    loss: float
    """Mean token cross-entropy over the global batch (nats)."""
    lr: float
    grad_norm: float
    sample_ids: list[int]
    """The samples this rank trained on in this step (for the data log)."""
    grad_bytes: int = 0
    """Bytes this rank sent to reduce the gradients (see `parallel/compress.py` for how they are counted)."""
    stop_requested: bool = False
    """Some rank asked to stop (SIGTERM or a new generation); all ranks agree at this boundary."""
    routing: list[RoutingStats] = field(default_factory=list)
    mtp_loss: float | None = None
    """Mean over the MTP modules of their token cross-entropy (None without MTP)."""
    mtp_accuracy: float | None = None
    """Share of the global batch's extra tokens (t+2) the first MTP module predicted right (None without MTP)."""

    @property
    def max_violation(self) -> float:
        """Worst expert imbalance over the MoE layers."""
        return max((r.max_violation for r in self.routing), default=0.0)


@dataclass(slots=True)
class LossSums:
    """One micro-batch's summed losses (tensors in the graph) and the first MTP module's right guesses."""

    ce: torch.Tensor
    aux: torch.Tensor
    mtp_ce: list[torch.Tensor] = field(default_factory=list)
    """Per MTP module k = 1..D: summed cross-entropy of its predictions of t_{i+k+1}."""
    mtp_correct: float = 0.0


def pick_device(cfg: TrainerConfig) -> torch.device:
    """cuda when asked or available under `auto`, else cpu; a missing GPU is an error only when asked."""
    want = cfg.train.device
    if want == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device=cuda but no CUDA device is visible; use auto or cpu")
    return torch.device("cuda" if want == "cuda" or (want == "auto" and torch.cuda.is_available()) else "cpu")


def check_fp8(cfg: TrainerConfig, device: torch.device) -> None:
    """fp8 runs on hardware that has it, or emulated where the config says so; otherwise refuse at start."""
    if not scaled_mm_works(device.type) and not cfg.train.precision_emulation:
        where = "this GPU has no fp8 GEMMs (compute capability 8.9 or newer)" if device.type == "cuda" else \
            "the trainer runs on CPU"
        raise RunConfigError(f"train.precision=fp8 but {where}; set train.precisionEmulation: true to emulate it "
                             "(fp8 numerics, no speed-up) or use bf16")


@dataclass(slots=True)
class SeededModel:
    """The full model as every rank builds it from the seed (`build_model`), with the generator's state right after,
    so that it can be built before the group that trains it forms (a newcomer does so before it says it is ready)."""

    model: Transformer
    rng_after: torch.Tensor
    """`torch.get_rng_state()` once the model was built."""


def build_model(cfg: TrainerConfig) -> SeededModel:
    """The whole model from `train.seed`, on the CPU (every expert: a trainer keeps its own slice of them)."""
    torch.manual_seed(cfg.train.seed)
    model = Transformer(cfg.model, cfg.train.activation_checkpointing)
    return SeededModel(model, torch.get_rng_state())


def single_process() -> DistContext:
    """The context of a run in one process (W=1)."""
    from dstj_api.layout import plan_layout
    from moe_trainer.parallel.groups import build_groups

    return DistContext(0, 1, build_groups(plan_layout(1, 1), 0))


def expert_shard(ctx: DistContext) -> ExpertShard | None:
    """This rank's slice of the experts under its layout, with the EP group holding the rest (None: all of them)."""
    layout = ctx.layout
    return ExpertShard(layout.ep_rank(ctx.rank), layout.ep, ctx.groups.ep_group) if layout.ep > 1 else None


class Trainer:
    """Owns one rank's model shard, optimizer and data, and runs optimizer steps."""

    def __init__(self, cfg: TrainerConfig, ctx: DistContext | None = None, device: torch.device | None = None,
                 data: Datasets | None = None, model: SeededModel | None = None) -> None:
        """`model`: `build_model(cfg)` made ahead of time (taken over, not copied); None builds it here."""
        self.cfg = cfg
        self.ctx = ctx or single_process()
        self.device = device or pick_device(cfg)
        self.train_data, self.eval_data, self.data_info = data or build_datasets(cfg)
        # Every rank builds the full model from the same seed, then keeps its experts: identical to W=1. The
        # generator is left where building it leaves it, whenever that happened.
        seeded = model or build_model(cfg)
        self.model = seeded.model
        torch.set_rng_state(seeded.rng_after)
        if cfg.train.precision == "fp8":
            check_fp8(cfg, self.device)
            use_fp8(self.model)
        shard = expert_shard(self.ctx)
        for moe in self.model.moe_layers():
            if shard is not None:
                moe.shard_experts(shard)
            if self.ctx.is_distributed:
                moe.load.reduce = self.ctx.reduce_counts
        self.model.to(self.device)
        self.plan, self.opt, self.reducer = self._per_generation()
        self._state: dict[str, Any] = {}
        self.step = 0
        self._meta = {"step": torch.zeros((), dtype=torch.int64)}
        self.stop_flag = False
        """Set (e.g. by a SIGTERM handler) to stop at the next step boundary."""
        self.should_stop: Callable[[], bool] = lambda: False
        """Asked at each step boundary, e.g. whether a newer membership generation is published."""
        self.before_update: Callable[[], None] = lambda: None
        """Called just before the optimizer changes the parameters (an async checkpoint copies them until then)."""

    @property
    def data(self) -> Datasets:
        """The datasets, to hand to the next generation's trainer instead of building them again."""
        return self.train_data, self.eval_data, self.data_info

    def reconfigure(self, ctx: DistContext) -> None:
        """Adopt a new generation's groups and layout in place; the state must be loaded next.

        Dense modules and the data stay; the expert slices are re-seated for the new EP position
        (reallocated only when their count changes) and the optimizer is rebuilt over them. Their
        values are stale until a checkpoint is loaded into `checkpoint_state()`.
        """
        self.ctx = ctx
        shard = expert_shard(ctx)
        for moe in self.model.moe_layers():
            moe.seat_experts(shard)
            moe.load.reduce = ctx.reduce_counts if ctx.is_distributed else local_counts
            moe.load.reset()  # a failed step may have recorded counts
        self.model.zero_grad(set_to_none=True)  # ... and gradients, which the next backward would add to
        self.plan, self.opt, self.reducer = self._per_generation()
        self.stop_flag = False

    def _per_generation(self) -> tuple[StatePlan, torch.optim.AdamW, GradReducer]:
        """Under this generation's groups: who owns which optimizer state, AdamW over this rank's share, and
        the gradient reduction (its error-feedback residual starts at zero until a checkpoint is loaded)."""
        n_experts, optim = self.cfg.model.moe.n_routed, self.cfg.optim
        plan = StatePlan(self.model, self.ctx, n_experts, optim.shard_state)
        return plan, build_optimizer(plan, optim), GradReducer(self.model, self.ctx, n_experts, optim.grad_compression)

    def checkpoint_state(self) -> dict[str, Any]:
        """This rank's checkpoint entries (views of the live tensors, so a load restores in place; the residuals
        of compressed reduction are summed copies, see `parallel/compress.py`). Collective when compressing."""
        self._meta["step"].fill_(self.step)
        experts = self.ctx.layout.experts_of(self.ctx.rank, self.cfg.model.moe.n_routed)
        self._state = flat_state(self.model, self.opt, self.plan, experts, self._meta)
        self._state.update(self.reducer.checkpoint_entries())
        return self._state

    def restored(self) -> None:
        """Adopt the step and the residuals of a checkpoint just loaded into `checkpoint_state()`'s tensors."""
        self.step = int(self._meta["step"])
        self.reducer.adopt_loaded({k for k in self._state if k.startswith(RESIDUAL_PREFIX)})

    def _autocast(self) -> Any:
        if self.cfg.train.precision in ("bf16", "fp8"):  # fp8 GEMMs inside, bf16 around them
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return nullcontext()

    def _loss_sum(self, batch: torch.Tensor) -> LossSums:
        inputs, targets = batch[:, :-1].to(self.device), batch[:, 1:].to(self.device)
        with self._autocast():
            out = self.model(inputs)
        ce_sum = F.cross_entropy(out.logits_BSV.flatten(0, 1).float(), targets.flatten(), reduction="sum")
        sums = LossSums(ce_sum, out.aux_loss_sum)
        for k, logits in enumerate(out.mtp_logits, start=1):  # module k predicts t_{i+k+1} = targets[:, k:]
            target_k = targets[:, k:].flatten()
            sums.mtp_ce.append(F.cross_entropy(logits.flatten(0, 1).float(), target_k, reduction="sum"))
            if k == 1:
                sums.mtp_correct = float((logits.detach().argmax(-1).flatten() == target_k).sum())
        return sums

    def my_micro_batches(self, ids: list[int]) -> list[list[int]]:
        """This rank's share of `ids` in micro-batches, padded with empty ones where EP needs equal counts."""
        micro, ctx = self.cfg.train.micro_batch, self.ctx
        chunks = [ids[c : c + micro] for c in range(0, len(ids), micro)]
        mine = chunks[ctx.rank :: ctx.world_size]
        if ctx.layout.ep > 1:
            mine += [[]] * (math.ceil(len(chunks) / ctx.world_size) - len(mine))
        return mine

    def _batch(self, data: TokenDataset, ids: list[int]) -> torch.Tensor:
        if not ids:
            return torch.zeros(0, self.cfg.train.seq_len + 1, dtype=torch.int64)
        return data.batch(ids)

    def train_step(self) -> StepResult:
        """One optimizer step over the global batch; also agrees on the stop flag across ranks."""
        t = self.cfg.train
        self.model.train()
        global_tokens = t.global_batch * t.seq_len
        depth, mtp_weight = self.cfg.model.mtp_depth, self.cfg.model.mtp_loss_weight
        mtp_tokens = [t.global_batch * (t.seq_len - k) for k in range(1, depth + 1)]
        ce_local, mtp_local, correct_local = 0.0, [0.0] * depth, 0.0
        used: list[int] = []
        for chunk in self.my_micro_batches(self.train_data.sample_ids(self.step, t.global_batch)):
            sums = self._loss_sum(self._batch(self.train_data, chunk))
            loss = sums.ce / global_tokens + sums.aux / t.global_batch
            for k, mtp_ce in enumerate(sums.mtp_ce):
                loss = loss + mtp_weight / depth * (mtp_ce / mtp_tokens[k])
                mtp_local[k] += float(mtp_ce.detach())
            loss.backward()
            ce_local += float(sums.ce.detach())
            correct_local += sums.mtp_correct
            used += chunk
        grad_bytes = self.reducer.sync()
        lr = lr_at(self.step, t.steps, self.cfg.optim)
        set_lr(self.opt, lr)
        norm = clip_global_norm(self.model, self.cfg.optim.grad_clip, self.ctx.groups)
        self.before_update()
        self.plan.attach_grads()
        self.opt.step()
        self.plan.gather_updated()
        self.opt.zero_grad(set_to_none=True)
        self.model.zero_grad(set_to_none=True)
        routing = self.model.finish_step()
        ce_total, stops, correct, *mtp_total = self.ctx.all_sum(
            [ce_local, float(self.stop_flag or self.should_stop()), correct_local, *mtp_local]
        )
        self.step += 1
        return StepResult(
            step=self.step, loss=ce_total / global_tokens, lr=lr, grad_norm=norm, sample_ids=used,
            grad_bytes=grad_bytes, stop_requested=stops > 0, routing=routing,
            mtp_loss=sum(c / n for c, n in zip(mtp_total, mtp_tokens, strict=True)) / depth if depth else None,
            mtp_accuracy=correct / mtp_tokens[0] if depth else None,
        )

    @torch.no_grad()
    def evaluate(self, data: TokenDataset | None = None) -> float:
        """Mean token cross-entropy on a fixed set of held-out windows (split over ranks like training)."""
        data = data or self.eval_data
        t = self.cfg.train
        n = min(len(data), t.eval_batches * t.micro_batch)
        self.model.eval()
        total = 0.0
        for chunk in self.my_micro_batches([i * len(data) // n for i in range(n)]):
            total += float(self._loss_sum(self._batch(data, chunk)).ce)
        # Evaluation must not move the balancing bias or pollute the step's routing counts.
        for moe in self.model.moe_layers():
            moe.load.reset()
        return self.ctx.all_sum([total])[0] / (n * t.seq_len)
