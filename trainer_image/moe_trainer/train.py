"""The training entry point: `python -m moe_trainer.train --config CONFIG.json` (alone or under torchrun).

One run in one process group; the elastic path (`launch.py`) instead runs one generation after
another in the same process (`runtime/elastic.py`). Both are assembled by `runtime/assembly.py` and
share the step loop in `runtime/generation.py`.

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
from types import FrameType
from typing import Any

from dstj_api import EXIT_STOPPED, ConfigError, TrainerConfig, load_trainer_config
from dstj_api.layout import LayoutError
from moe_trainer.misconfig import RunConfigError, exit_misconfigured
from moe_trainer.parallel.context import init_distributed
from moe_trainer.runtime.assembly import Reporting, assemble, prepare, start, trainer_for
from moe_trainer.runtime.generation import Outcome, run_generation
from moe_trainer.runtime.membership import membership_from_env
from moe_trainer.runtime.rendezvous import leave
from moe_trainer.training.trainer import Trainer, pick_device

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
    data = prepare(cfg)
    trainer = trainer_for(cfg, init_distributed(cfg, device), device, data)
    _install_stop_handler(trainer)
    g = assemble(cfg, trainer, generation(), membership_from_env(), Reporting(cfg), started=t0)
    start(g)
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
