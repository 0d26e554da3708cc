"""The training loop: `python -m moe_trainer.train --config CONFIG.json`.

One optimizer step consumes the global batch of `train.globalBatch` sequences in micro-batches of
`train.microBatch`; the loss is the summed token cross-entropy divided by the global token count,
so the step's math does not depend on how the batch is split. Prints a progress line every
`train.logEvery` steps and a final JSON summary line (`{"event": "summary", ...}`).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from dstj_api import ConfigError, TrainerConfig, load_trainer_config
from moe_trainer.balance import RoutingStats
from moe_trainer.data import TokenDataset, build_datasets
from moe_trainer.model import Transformer
from moe_trainer.optim import build_optimizer, lr_at, set_lr

log = logging.getLogger("moe_trainer")


@dataclass(slots=True, kw_only=True)
class StepResult:
    """What one optimizer step measured."""

    step: int
    loss: float
    """Mean token cross-entropy over the global batch (nats)."""
    lr: float
    grad_norm: float
    routing: list[RoutingStats] = field(default_factory=list)

    @property
    def max_violation(self) -> float:
        """Worst expert imbalance over the MoE layers."""
        return max((r.max_violation for r in self.routing), default=0.0)


def pick_device(cfg: TrainerConfig) -> torch.device:
    """cuda when asked or available under `auto`, else cpu; a missing GPU is an error only when asked."""
    want = cfg.train.device
    if want == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device=cuda but no CUDA device is visible; use auto or cpu")
    return torch.device("cuda" if want == "cuda" or (want == "auto" and torch.cuda.is_available()) else "cpu")


class Trainer:
    """Owns the model, optimizer and data of one process and runs optimizer steps."""

    def __init__(self, cfg: TrainerConfig) -> None:
        self.cfg = cfg
        self.device = pick_device(cfg)
        torch.manual_seed(cfg.train.seed)
        self.train_data, self.eval_data, self.data_info = build_datasets(cfg)
        self.model = Transformer(cfg.model, cfg.train.activation_checkpointing).to(self.device)
        self.opt = build_optimizer(self.model, cfg.optim)
        self.step = 0

    def _autocast(self) -> Any:
        if self.cfg.train.precision == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return nullcontext()

    def _loss_sum(self, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        inputs, targets = batch[:, :-1].to(self.device), batch[:, 1:].to(self.device)
        with self._autocast():
            out = self.model(inputs)
        ce_sum = F.cross_entropy(out.logits_BSV.flatten(0, 1).float(), targets.flatten(), reduction="sum")
        return ce_sum, out.aux_loss_sum

    def train_step(self) -> StepResult:
        """One optimizer step over the global batch of the current step."""
        t = self.cfg.train
        self.model.train()
        ids = self.train_data.sample_ids(self.step, t.global_batch)
        global_tokens = t.global_batch * t.seq_len
        ce_total = 0.0
        for start in range(0, len(ids), t.micro_batch):
            ce_sum, aux_sum = self._loss_sum(self.train_data.batch(ids[start : start + t.micro_batch]))
            (ce_sum / global_tokens + aux_sum / t.global_batch).backward()
            ce_total += float(ce_sum.detach())
        lr = lr_at(self.step, t.steps, self.cfg.optim)
        set_lr(self.opt, lr)
        clip = self.cfg.optim.grad_clip
        norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip if clip else float("inf"))
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        routing = self.model.finish_step()
        result = StepResult(
            step=self.step + 1, loss=ce_total / global_tokens, lr=lr, grad_norm=float(norm), routing=routing
        )
        self.step += 1
        return result

    @torch.no_grad()
    def evaluate(self, data: TokenDataset | None = None) -> float:
        """Mean token cross-entropy on a fixed set of held-out windows."""
        data = data or self.eval_data
        t = self.cfg.train
        n = min(len(data), t.eval_batches * t.micro_batch)
        ids = [i * len(data) // n for i in range(n)]
        self.model.eval()
        total = 0.0
        for start in range(0, n, t.micro_batch):
            ce_sum, _ = self._loss_sum(data.batch(ids[start : start + t.micro_batch]))
            total += float(ce_sum)
        # Evaluation must not move the balancing bias or pollute the step's routing counts.
        for moe in self.model.moe_layers():
            moe.load._acc.zero_()
        return total / (n * t.seq_len)


def run(cfg: TrainerConfig) -> dict[str, Any]:
    """Train for `train.steps` steps, printing progress; return the summary."""
    t0 = time.perf_counter()
    trainer = Trainer(cfg)
    t = cfg.train
    info = trainer.data_info
    print(
        f"data: {info.documents_kept}/{info.documents_in} documents kept "
        f"(short {info.removed_short}, symbolic {info.removed_symbolic}, exact dup {info.removed_exact_dup}, "
        f"near dup {info.removed_near_dup}); {info.train_tokens} train / {info.eval_tokens} held-out tokens; "
        f"unigram entropy {info.unigram_entropy_nats:.3f} nats",
        flush=True,
    )
    eval_start = trainer.evaluate()
    print(f"step 0: held-out loss {eval_start:.4f}", flush=True)
    first_loss = None
    last = None
    tokens_per_step = t.global_batch * t.seq_len
    mark, mark_step = time.perf_counter(), 0
    for _ in range(t.steps):
        last = trainer.train_step()
        first_loss = last.loss if first_loss is None else first_loss
        if last.step % t.log_every == 0 or last.step == t.steps:
            now = time.perf_counter()
            tps = (last.step - mark_step) * tokens_per_step / (now - mark)
            mark, mark_step = now, last.step
            print(
                f"step {last.step}/{t.steps} loss {last.loss:.4f} lr {last.lr:.2e} tok/s {tps:,.0f} "
                f"max-violation {last.max_violation:.2f}",
                flush=True,
            )
        if t.eval_every and last.step % t.eval_every == 0 and last.step != t.steps:
            print(f"step {last.step}: held-out loss {trainer.evaluate():.4f}", flush=True)
    eval_end = trainer.evaluate()
    wall = time.perf_counter() - t0
    summary: dict[str, Any] = {
        "event": "summary",
        "steps": trainer.step,
        "first_step_loss": first_loss,
        "final_train_loss": last.loss if last else None,
        "heldout_loss_start": eval_start,
        "heldout_loss_end": eval_end,
        "unigram_entropy_nats": info.unigram_entropy_nats,
        "beats_unigram": eval_end < info.unigram_entropy_nats,
        "max_violation": last.max_violation if last else None,
        "tokens_per_s": trainer.step * tokens_per_step / wall,
        "wall_s": wall,
        "device": str(trainer.device),
        "data": asdict(info),
    }
    print(json.dumps(summary), flush=True)
    return summary


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; exit code 2 on a bad config, with the field named."""
    parser = argparse.ArgumentParser(prog="python -m moe_trainer.train", description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="path to a JSON trainer config")
    parser.add_argument("--steps", type=int, help="override train.steps")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        cfg = load_trainer_config(args.config)
        if args.steps is not None:
            cfg = TrainerConfig.model_validate(
                cfg.model_dump() | {"train": cfg.train.model_dump() | {"steps": args.steps}}
            )
        run(cfg)
    except (ConfigError, ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
