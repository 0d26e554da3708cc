"""One generation of training in this process: run steps from where it resumed, then stop or finish.

Shared by `moe_trainer/train.py` (one run in one process, alone or under torchrun) and `elastic.py` (one call
per membership generation, in the same process), which assemble a generation with `assembly.py`. It owns
what happens at step boundaries: the data log, the progress report, metrics, periodic asynchronous
checkpoints, the recovery time, and the stop every rank agreed to, with its checkpoint. It neither forms
groups nor follows membership.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

import torch.distributed as dist

from dstj_api import ProgressReport
from moe_trainer.checkpoint.checkpointer import Checkpointer
from moe_trainer.runtime.membership import ProgressSink
from moe_trainer.runtime.metrics import TrainerMetrics, previous_step_time, record_last_step
from moe_trainer.runtime.throughput import SteadyRate
from moe_trainer.training.trainer import StepResult, Trainer


class Outcome(StrEnum):
    """How a generation ended (a failed group raises instead)."""

    FINISHED = "finished"
    """`train.steps` reached, final checkpoint committed."""
    STOPPED = "stopped"
    """All ranks agreed to stop at a step boundary (SIGTERM somewhere, or a newer generation) and checkpointed."""


@dataclass(slots=True, kw_only=True)
class Generation:
    """What one generation runs with; the trainer, metrics and sink may outlive it."""

    number: int
    trainer: Trainer
    ckpt: Checkpointer | None
    metrics: TrainerMetrics
    sink: ProgressSink | None
    """Rank 0's progress sink (None on other ranks or when none is configured)."""
    data_log: Path | None
    """Directory for the per-rank record of samples trained on (tests check it), or None."""
    started: float
    """perf_counter() when this process started, for the summary's wall time."""
    start_step: int = 0
    """The step this generation resumed from (set by `run_generation`); it trains the steps after it."""


def print0(trainer: Trainer, text: str) -> None:
    """Print on rank 0 only."""
    if trainer.ctx.rank == 0:
        print(text, flush=True)


def _log_data(g: Generation, result: StepResult) -> None:
    """Append the samples this rank trained on: the evidence that none is skipped or repeated."""
    if g.data_log is None:
        return
    rank = g.trainer.ctx.rank
    line = {"step": result.step, "generation": g.number, "rank": rank, "ids": result.sample_ids, "time": time.time()}
    with (g.data_log / f"data-g{g.number}-r{rank}.jsonl").open("a") as f:
        f.write(json.dumps(line) + "\n")


def _publish(g: Generation, result: StepResult | None, state: str, tps: float | None,
             steady: float | None = None) -> None:
    if g.sink is None:
        return
    trainer, ckpt, layout = g.trainer, g.ckpt, g.trainer.ctx.layout
    g.sink.publish(ProgressReport(
        step=trainer.step, total_steps=trainer.cfg.train.steps, generation=g.number, generation_start_step=g.start_step,
        world_size=layout.world_size, expert_parallel=layout.ep, data_parallel=layout.dp,
        loss=result.loss if result else None, tokens_per_second=tps, steady_tokens_per_second=steady,
        max_violation=result.max_violation if result else None,
        last_checkpoint_step=ckpt.marker_step if ckpt else None,
        last_checkpoint_time=datetime.now(UTC) if ckpt and ckpt.marker_step else None,
        state=state, updated=datetime.now(UTC),
    ))


def run_generation(g: Generation) -> tuple[Outcome, dict[str, Any] | None]:
    """Train from the trainer's step until the run finishes (with its summary) or all ranks agree to stop."""
    trainer, ckpt, metrics, cfg = g.trainer, g.ckpt, g.metrics, g.trainer.cfg
    t = cfg.train
    metrics.bind(trainer.ctx.rank)
    metrics.generation.set(g.number)
    g.start_step = trainer.step  # after `resume`: the committed step this generation continues from
    ckpt_root = ckpt.storage if ckpt is not None else None
    previous_end = previous_step_time(ckpt_root, g.number)
    if ckpt is not None:
        trainer.before_update = ckpt.before_update
    # A resumed generation skips this evaluation: it would delay recovery, and step 0's is on record.
    eval_start = trainer.evaluate() if trainer.step == 0 else None
    if eval_start is not None:
        print0(trainer, f"step 0: held-out loss {eval_start:.4f}")
    first = last = None
    tokens_per_step = t.global_batch * t.seq_len
    mark, mark_step = time.perf_counter(), trainer.step
    steady = SteadyRate(tokens_per_step=tokens_per_step)
    while trainer.step < t.steps:
        last = trainer.train_step()
        steady.step_done(time.perf_counter())
        if first is None and previous_end is not None:
            metrics.recovery_seconds.set(time.time() - previous_end)
            print0(trainer, f"recovered: first step of generation {g.number} {time.time() - previous_end:.2f}s "
                   "after the previous generation's last")
        first = first or last
        _log_data(g, last)
        if trainer.ctx.rank == 0:
            record_last_step(ckpt_root, g.number, last.step)
        metrics.step.set(last.step)
        metrics.loss.set(last.loss)
        metrics.max_violation.set(last.max_violation)
        if last.mtp_accuracy is not None and last.mtp_loss is not None:
            metrics.mtp_accuracy.set(last.mtp_accuracy)
            metrics.mtp_loss.set(last.mtp_loss)
        if last.step % t.log_every == 0 or last.step == t.steps:
            now = time.perf_counter()
            tps = (last.step - mark_step) * tokens_per_step / (now - mark)
            mark, mark_step = now, last.step
            mtp = "" if last.mtp_loss is None else f" mtp-loss {last.mtp_loss:.4f} mtp-acc {last.mtp_accuracy:.3f}"
            print0(trainer, f"step {last.step}/{t.steps} loss {last.loss:.4f} lr {last.lr:.2e} tok/s {tps:,.0f} "
                   f"max-violation {last.max_violation:.2f}{mtp}")
            _publish(g, last, "running", tps, steady.tokens_per_second)
            metrics.tokens_per_second.set(tps)
        if last.stop_requested:
            print0(trainer, f"stop requested: checkpointing step {last.step} and stopping")
            if ckpt is not None:
                ckpt.save(trainer.checkpoint_state(), trainer.step, asynchronous=False, final=True)
                if ckpt.pg is not None:
                    # Nobody leaves before rank 0 has moved the marker: the next generation reads it.
                    dist.barrier(group=ckpt.pg)
            _publish(g, last, "stopped", None, steady.tokens_per_second)
            return Outcome.STOPPED, None
        if ckpt is not None and last.step % cfg.checkpoint.interval == 0 and last.step != t.steps:
            ckpt.save(trainer.checkpoint_state(), trainer.step, asynchronous=True)
            metrics.checkpoint_seconds.set(ckpt.last_save_seconds)
        if ckpt is not None and ckpt.marker_step is not None:
            metrics.last_checkpoint_step.set(ckpt.marker_step)
        if t.eval_every and last.step % t.eval_every == 0 and last.step != t.steps:
            print0(trainer, f"step {last.step}: held-out loss {trainer.evaluate():.4f}")
    if ckpt is not None:
        ckpt.wait()
        if ckpt.last_committed_step != trainer.step:
            ckpt.save(trainer.checkpoint_state(), trainer.step, asynchronous=False)
    _publish(g, last, "finished", None, steady.tokens_per_second)
    return Outcome.FINISHED, _summary(g, first, last, eval_start)


def _summary(g: Generation, first: StepResult | None, last: StepResult | None,
             eval_start: float | None) -> dict[str, Any]:
    trainer = g.trainer
    t, info, layout = trainer.cfg.train, trainer.data_info, trainer.ctx.layout
    eval_end = trainer.evaluate()
    wall = time.perf_counter() - g.started
    summary: dict[str, Any] = {
        "event": "summary",
        "steps": trainer.step,
        "first_step_loss": first.loss if first else None,
        "final_train_loss": last.loss if last else None,
        "heldout_loss_start": eval_start,
        "heldout_loss_end": eval_end,
        "unigram_entropy_nats": info.unigram_entropy_nats,
        "beats_unigram": eval_end < info.unigram_entropy_nats,
        "max_violation": last.max_violation if last else None,
        "tokens_per_s": (trainer.step - (first.step - 1 if first else 0)) * t.global_batch * t.seq_len / wall,
        "wall_s": wall,
        "device": str(trainer.device),
        "layout": {"world_size": layout.world_size, "ep": layout.ep, "dp": layout.dp},
        "data": asdict(info),
    }
    print0(trainer, json.dumps(summary))
    return summary
