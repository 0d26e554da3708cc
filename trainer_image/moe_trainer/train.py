"""The training entry point: `python -m moe_trainer.train --config CONFIG.json` (alone or under torchrun).

Prints (on rank 0) the data statistics, a progress line every `train.logEvery` steps and a final
JSON summary line (`{"event": "summary", ...}`). SIGTERM on any rank stops every rank together at
the next step boundary, after a checkpoint when one is configured, with exit code `EXIT_STOPPED`.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import time
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

import torch.distributed as dist

from dstj_api import EXIT_STOPPED, ConfigError, ProgressReport, TrainerConfig, load_trainer_config
from moe_trainer.checkpoint import Checkpointer
from moe_trainer.data import build_datasets
from moe_trainer.distributed import init_distributed
from moe_trainer.membership import ProgressSink, membership_from_env, progress_from_env
from moe_trainer.metrics import TrainerMetrics, previous_step_time, record_last_step
from moe_trainer.parallel import LayoutError
from moe_trainer.trainer import StepResult, Trainer, pick_device

log = logging.getLogger("moe_trainer")



def _print0(trainer: Trainer, text: str) -> None:
    if trainer.ctx.rank == 0:
        print(text, flush=True)


def _install_stop_handler(trainer: Trainer) -> None:
    def on_term(signum: int, frame: FrameType | None) -> None:
        trainer.stop_flag = True

    signal.signal(signal.SIGTERM, on_term)


def _log_data(path: Path | None, result: StepResult, trainer: Trainer) -> None:
    """Append the samples this rank trained on: the evidence that none is skipped or repeated."""
    if path is None:
        return
    gen = os.environ.get("DSTJ_GENERATION", "0")
    line = {"step": result.step, "generation": int(gen), "rank": trainer.ctx.rank, "ids": result.sample_ids,
            "time": time.time()}
    with (path / f"data-g{gen}-r{trainer.ctx.rank}.jsonl").open("a") as f:
        f.write(json.dumps(line) + "\n")


def generation() -> int:
    """The membership generation this process was started for (0 outside a managed run)."""
    return int(os.environ.get("DSTJ_GENERATION", "0"))


def make_checkpointer(cfg: TrainerConfig, trainer: Trainer) -> Checkpointer | None:
    """The run's checkpointer, fenced by the published membership when there is one."""
    if not cfg.checkpoint.dir:
        return None
    source, gen = membership_from_env(), generation()

    def may_commit(final: bool) -> bool:
        if source is None:
            return True
        m = source.current()
        return m is not None and (m.generation == gen or (final and m.handoff_from == gen))

    # Async saves run collectives from a background thread: give them a group of their own.
    pg = dist.new_group(backend="gloo") if trainer.ctx.is_distributed else None
    return Checkpointer(Path(cfg.checkpoint.dir), cfg.checkpoint.keep, gen, may_commit, trainer.ctx.rank,
                        pg if isinstance(pg, dist.ProcessGroup) else None)


def _publish(sink: ProgressSink | None, trainer: Trainer, result: StepResult | None, ckpt: Checkpointer | None,
             state: str, tps: float | None) -> None:
    if sink is None:
        return
    layout = trainer.ctx.layout
    sink.publish(ProgressReport(
        step=trainer.step, total_steps=trainer.cfg.train.steps, generation=generation(),
        world_size=layout.world_size, expert_parallel=layout.ep, data_parallel=layout.dp,
        loss=result.loss if result else None, tokens_per_second=tps,
        max_violation=result.max_violation if result else None,
        last_checkpoint_step=ckpt.last_committed_step if ckpt else None,
        last_checkpoint_time=datetime.now(UTC) if ckpt and ckpt.last_committed_step else None,
        state=state, updated=datetime.now(UTC),
    ))


def _leave_group() -> None:
    # Exiting with a live gloo group can abort a rank in C++ teardown ("terminate called ...").
    if dist.is_initialized():
        dist.destroy_process_group()


def run(cfg: TrainerConfig) -> dict[str, Any]:
    """Train to `train.steps`, printing progress on rank 0; return the summary."""
    t0 = time.perf_counter()
    device = pick_device(cfg)
    # Build (or find) the data before joining the group: a cold build can outlast the short
    # collective timeout that lets survivors notice a dead peer quickly.
    build_datasets(cfg)
    trainer = Trainer(cfg, init_distributed(cfg, device), device)
    _install_stop_handler(trainer)
    t, info, layout = cfg.train, trainer.data_info, trainer.ctx.layout
    data_log = Path(os.environ["DSTJ_DATA_LOG"]) if os.environ.get("DSTJ_DATA_LOG") else None
    _print0(
        trainer,
        f"data: {info.documents_kept}/{info.documents_in} documents kept (short {info.removed_short}, "
        f"symbolic {info.removed_symbolic}, exact dup {info.removed_exact_dup}, near dup {info.removed_near_dup}); "
        f"{info.train_tokens} train / {info.eval_tokens} held-out tokens; "
        f"unigram entropy {info.unigram_entropy_nats:.3f} nats; layout W={layout.world_size} "
        f"EP={layout.ep} DP={layout.dp}",
    )
    ckpt = make_checkpointer(cfg, trainer)
    sink = progress_from_env() if trainer.ctx.rank == 0 else None  # one sink for the run: rank 0 reports
    if ckpt is not None:
        trainer.before_update = ckpt.before_update
        load_start = time.perf_counter()
        marker = ckpt.load_latest(trainer.checkpoint_state())
        if marker is not None:
            trainer.restored()
            ckpt.last_committed_step = marker.step
            _print0(trainer, f"resumed from step {marker.step} (generation {marker.generation}, {marker.path}) "
                    f"in {time.perf_counter() - load_start:.2f}s")
    metrics = TrainerMetrics(trainer.ctx.rank, t.metrics_port)
    gen = generation()
    metrics.generation.set(gen)
    metrics.restarts.inc(gen)
    ckpt_root = Path(cfg.checkpoint.dir) if cfg.checkpoint.dir else None
    previous_end = previous_step_time(ckpt_root, gen)
    # A resumed generation skips this evaluation: it would delay recovery, and step 0's is on record.
    eval_start = trainer.evaluate() if trainer.step == 0 else None
    if eval_start is not None:
        _print0(trainer, f"step 0: held-out loss {eval_start:.4f}")
    first = last = None
    tokens_per_step = t.global_batch * t.seq_len
    mark, mark_step = time.perf_counter(), trainer.step
    while trainer.step < t.steps:
        last = trainer.train_step()
        if first is None and previous_end is not None:
            metrics.recovery_seconds.set(time.time() - previous_end)
            _print0(trainer, f"recovered: first step of generation {gen} {time.time() - previous_end:.2f}s after "
                    "the previous generation's last")
        first = first or last
        _log_data(data_log, last, trainer)
        if trainer.ctx.rank == 0:
            record_last_step(ckpt_root, gen, last.step)
        metrics.step.set(last.step)
        metrics.loss.set(last.loss)
        metrics.max_violation.set(last.max_violation)
        if last.step % t.log_every == 0 or last.step == t.steps:
            now = time.perf_counter()
            tps = (last.step - mark_step) * tokens_per_step / (now - mark)
            mark, mark_step = now, last.step
            _print0(
                trainer,
                f"step {last.step}/{t.steps} loss {last.loss:.4f} lr {last.lr:.2e} tok/s {tps:,.0f} "
                f"max-violation {last.max_violation:.2f}",
            )
            _publish(sink, trainer, last, ckpt, "running", tps)
            metrics.tokens_per_second.set(tps)
        if last.stop_requested:
            _print0(trainer, f"stop requested: checkpointing step {last.step} and stopping")
            if ckpt is not None:
                ckpt.save(trainer.checkpoint_state(), trainer.step, asynchronous=False, final=True)
            _publish(sink, trainer, last, ckpt, "stopped", None)
            _leave_group()
            sys.exit(EXIT_STOPPED)
        if ckpt is not None and last.step % cfg.checkpoint.interval == 0 and last.step != t.steps:
            ckpt.save(trainer.checkpoint_state(), trainer.step, asynchronous=True)
            metrics.checkpoint_seconds.set(ckpt.last_save_seconds)
        if ckpt is not None and ckpt.last_committed_step is not None:
            metrics.last_checkpoint_step.set(ckpt.last_committed_step)
        if t.eval_every and last.step % t.eval_every == 0 and last.step != t.steps:
            _print0(trainer, f"step {last.step}: held-out loss {trainer.evaluate():.4f}")
    if ckpt is not None:
        ckpt.wait()
        if ckpt.last_committed_step != trainer.step:
            ckpt.save(trainer.checkpoint_state(), trainer.step, asynchronous=False)
    _publish(sink, trainer, last, ckpt, "finished", None)
    eval_end = trainer.evaluate()
    wall = time.perf_counter() - t0
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
        "tokens_per_s": (trainer.step - (first.step - 1 if first else 0)) * tokens_per_step / wall,
        "wall_s": wall,
        "device": str(device),
        "layout": {"world_size": layout.world_size, "ep": layout.ep, "dp": layout.dp},
        "data": asdict(info),
    }
    _print0(trainer, json.dumps(summary))
    _leave_group()
    return summary


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; exit code 2 on a bad config or layout, with the field named."""
    parser = argparse.ArgumentParser(prog="python -m moe_trainer.train", description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="path to a JSON trainer config")
    parser.add_argument("--steps", type=int, help="override train.steps")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        cfg = load_trainer_config(args.config)
        if args.steps is not None:
            cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"steps": args.steps})})
        run(cfg)
    except (ConfigError, LayoutError, ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
