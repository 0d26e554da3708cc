"""The training entry point: `python -m moe_trainer.train --config CONFIG.json` (alone or under torchrun).

One run in one process group; the elastic path (`launch.py`) instead runs one generation after
another in the same process (`elastic.py`). Both share the step loop in `generation.py`.

Prints (on rank 0) the data statistics, a progress line every `train.logEvery` steps and a final
JSON summary line (`{"event": "summary", ...}`). SIGTERM on any rank stops every rank together at
the next step boundary, after a checkpoint when one is configured, with exit code `EXIT_STOPPED`.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import time
from pathlib import Path
from types import FrameType
from typing import Any

from dstj_api import EXIT_STOPPED, ConfigError, TrainerConfig, load_trainer_config
from dstj_api.layout import LayoutError
from moe_trainer.checkpoint import check_locations
from moe_trainer.data import build_datasets
from moe_trainer.distributed import init_distributed
from moe_trainer.generation import (
    Generation,
    Outcome,
    make_checkpointer,
    print_data_line,
    resume,
    run_generation,
)
from moe_trainer.membership import membership_from_env, progress_from_env
from moe_trainer.metrics import TrainerMetrics
from moe_trainer.misconfig import RunConfigError, exit_misconfigured
from moe_trainer.rendezvous import leave
from moe_trainer.trainer import Trainer, pick_device

log = logging.getLogger("moe_trainer")


def _install_stop_handler(trainer: Trainer) -> None:
    def on_term(signum: int, frame: FrameType | None) -> None:
        trainer.stop_flag = True

    signal.signal(signal.SIGTERM, on_term)


def generation() -> int:
    """The membership generation this process was started for (0 outside a managed run)."""
    return int(os.environ.get("DSTJ_GENERATION", "0"))


def run(cfg: TrainerConfig) -> dict[str, Any]:
    """Train to `train.steps`, printing progress on rank 0; return the summary (exit EXIT_STOPPED on a stop)."""
    t0 = time.perf_counter()
    device = pick_device(cfg)
    check_locations(cfg.checkpoint.dir, cfg.checkpoint.resume_from)
    # Build (or find) the data before joining the group: a cold build can outlast the short
    # collective timeout that lets survivors notice a dead peer quickly.
    build_datasets(cfg)
    trainer = Trainer(cfg, init_distributed(cfg, device), device)
    _install_stop_handler(trainer)
    print_data_line(trainer)
    gen = generation()
    ckpt = make_checkpointer(cfg, trainer, gen, membership_from_env())
    metrics = TrainerMetrics(trainer.ctx.rank, cfg.train.metrics_port)
    metrics.count_restarts(gen)
    data_log = Path(os.environ["DSTJ_DATA_LOG"]) if os.environ.get("DSTJ_DATA_LOG") else None
    g = Generation(number=gen, trainer=trainer, ckpt=ckpt, metrics=metrics, data_log=data_log, started=t0,
                   sink=progress_from_env() if trainer.ctx.rank == 0 else None)  # rank 0 reports
    resume(g)
    outcome, summary = run_generation(g)
    leave()  # exiting with a live gloo group can abort a rank in C++ teardown ("terminate called ...")
    if outcome is Outcome.STOPPED or summary is None:
        sys.exit(EXIT_STOPPED)
    return summary


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; exit code 2 on a bad config or layout, EXIT_CONFIG on a setting only run time could check
    (with the message also in the termination-message file), each with the field named."""
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
    except RunConfigError as e:
        return exit_misconfigured(str(e))
    except (ConfigError, LayoutError, ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
