"""The worker supervisor: `python -m moe_trainer.launch --config C --member-id ID --membership file:PATH ...`.

It follows the published membership and trains every generation this worker is a member of,
reconfiguring in place (`runtime/elastic.py`): the trainer process, its data and model survive a generation
change; only the process groups are rebuilt, against the external rendezvous store, with the store
keys and ranks of the new generation (`runtime/rendezvous.py`), and the state is reloaded from the
committed checkpoint into the new layout. A newer generation stops the running one at a step
boundary with a checkpoint; a peer's death fails the collectives within the gloo timeout (at once
when its connections close) and the survivors wait for the next generation; SIGTERM checkpoints at
the next step boundary and exits with `EXIT_STOPPED`, which tells the operator "preempted, not
crashed". A config that cannot work (refused when read, or a setting only run time could check:
`misconfig.py`) exits with `EXIT_CONFIG` after writing what to change into the termination message.

Decision: no torchrun. With P = 1 process per worker (CPU, one GPU) the supervisor *is* the trainer:
no second interpreter, no torch import per generation. With P > 1 (several GPUs per worker) it
starts P persistent processes of its own (`--local-rank`), each a member of every generation at
rank = position x P + local rank, and forwards SIGTERM to them. torchrun would add nothing but a
per-generation rendezvous and restart, which is what cost seconds (import torch + gloo: 4-5.5 s
measured here, the floor that kept recovery above the 5 s goal), and its open-ended join path
failed our probe (`probes/torchrun-elastic/`).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType

from dstj_api import EXIT_CONFIG, EXIT_STOPPED, ConfigError
from dstj_api.contract import ENV_LENIENT_CONFIG, ENV_MEMBER_ID, ENV_MEMBERSHIP, ENV_RDZV_ENDPOINT, ENV_RUN_ID
from moe_trainer.misconfig import exit_misconfigured
from moe_trainer.runtime.config_source import ConfigFollower, config_source_from_env
from moe_trainer.runtime.elastic import ElasticWorker, Identity
from moe_trainer.runtime.membership import membership_source

log = logging.getLogger("moe_trainer.launch")

STOP_GRACE_S = 60.0
"""How long local processes may take to checkpoint and exit after SIGTERM before they are killed."""
POLL_S = 0.1
"""How often the supervisor of P > 1 processes checks on them."""


def run_in_process(args: argparse.Namespace) -> int:
    """P = 1, or one local process of P: this process trains every generation it has a seat in."""
    # The operator's rendering of the config is read leniently (a newer operator may add a field); a user's strictly.
    try:
        text = Path(args.config).read_text()
    except FileNotFoundError as e:
        raise ConfigError(f"{args.config}: no such file; pass --config PATH to a JSON trainer config") from e
    config = ConfigFollower.from_text(text, config_source_from_env(args.config), args.config,
                                      lenient=os.environ.get(ENV_LENIENT_CONFIG) == "1")
    worker = ElasticWorker(config, membership_source(args.membership), Identity(
        member_id=args.member_id, run_id=args.run_id, rdzv_endpoint=args.rdzv_endpoint,
        local_rank=args.local_rank, nproc=args.nproc_per_node,
    ))

    def on_term(signum: int, frame: FrameType | None) -> None:
        worker.request_stop()

    signal.signal(signal.SIGTERM, on_term)
    return worker.run()


def supervise_local_processes(argv: list[str], nproc: int) -> int:
    """P > 1: run P persistent local processes; end with them (the first failure ends all)."""
    procs = [
        subprocess.Popen([sys.executable, "-m", "moe_trainer.launch", *argv, f"--local-rank={i}"],
                         env=os.environ | {"LOCAL_RANK": str(i), "LOCAL_WORLD_SIZE": str(nproc)})
        for i in range(nproc)
    ]
    terminating = False

    def on_term(signum: int, frame: FrameType | None) -> None:
        nonlocal terminating
        terminating = True
        for p in procs:
            p.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, on_term)
    while any(p.poll() is None for p in procs):
        failed = [p.returncode for p in procs if p.returncode not in (None, 0, EXIT_STOPPED)]
        if failed:  # a dead local rank leaves the worker unable to serve any generation
            for p in procs:
                if p.poll() is None:
                    p.kill()
            # A config error passes through unchanged: it fails the job with its message, never as a crash.
            return EXIT_CONFIG if EXIT_CONFIG in failed else failed[0]
        time.sleep(POLL_S)
    codes = [p.returncode for p in procs]
    if EXIT_CONFIG in codes:
        return EXIT_CONFIG
    if terminating or EXIT_STOPPED in codes:
        return EXIT_STOPPED
    return next((c for c in codes if c != 0), 0)


def main(argv: list[str] | None = None) -> int:
    """CLI entry point."""
    p = argparse.ArgumentParser(prog="python -m moe_trainer.launch", description=__doc__.splitlines()[0])
    p.add_argument("--config", required=True, help="trainer config JSON")
    p.add_argument("--member-id", default=os.environ.get(ENV_MEMBER_ID) or os.uname().nodename,
                   help="this worker's id as listed in the membership (the pod name)")
    p.add_argument("--membership", default=os.environ.get(ENV_MEMBERSHIP, ""),
                   help="membership source, file:PATH or k8s:NAMESPACE/JOB")
    p.add_argument("--rdzv-endpoint", default=os.environ.get(ENV_RDZV_ENDPOINT, "localhost:29400"),
                   help="host:port of the rendezvous store when the membership names none")
    p.add_argument("--run-id", default=os.environ.get(ENV_RUN_ID, "dstj"), help="rendezvous key prefix")
    p.add_argument("--nproc-per-node", type=int, default=1, help="processes per worker (local devices)")
    p.add_argument("--local-rank", type=int, default=None, help=argparse.SUPPRESS)  # set for the P > 1 children
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if not args.membership:
        print(f"error: --membership file:PATH (or {ENV_MEMBERSHIP}) is required", file=sys.stderr)
        return 2
    if args.nproc_per_node > 1 and args.local_rank is None:
        return supervise_local_processes(sys.argv[1:] if argv is None else argv, args.nproc_per_node)
    args.local_rank = args.local_rank or 0
    try:
        return run_in_process(args)
    except ConfigError as e:  # the config as given, or a setting only run time could check: retrying cannot help
        return exit_misconfigured(str(e))
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def exit_now(code: int) -> None:
    """Exit without the interpreter's teardown: with torch loaded it takes ~0.8 s here, and a preempted
    worker's exit is on the path to the next generation. Everything that matters is on disk by now."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    exit_now(main())
