"""The worker supervisor: `python -m moe_trainer.launch --config C --member-id ID --membership file:PATH ...`.

It follows the published membership. For each generation g in which it is a member it runs

    torchrun --nnodes=W --nproc-per-node=P --rdzv-backend=c10d --rdzv-id=<run>-g<g>
             --rdzv-endpoint=<store> --max-restarts=0 -m moe_trainer.train --config C

against the external rendezvous store, so each generation is a fixed-size group of its own: an
agent of an old generation can never join or fork a new one. On a newer generation it SIGTERMs
the running group (torchrun forwards it; the trainer checkpoints at the next step boundary and
exits) and starts the next. When its group fails (a peer died) it waits for the operator's next
generation rather than retrying the old one. SIGTERM to the supervisor (a preemption) stops the
group the same way and exits with `EXIT_STOPPED`, which tells the operator "preempted, not crashed".
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
import time
from types import FrameType

from dstj_api import EXIT_STOPPED
from moe_trainer.membership import MembershipSource, membership_source

log = logging.getLogger("moe_trainer.launch")

POLL_S = 0.1
"""How often membership is polled; a new generation is noticed within this."""
STOP_GRACE_S = 60.0
"""How long a group may take to checkpoint and exit after SIGTERM before it is killed."""


class Supervisor:
    """Runs one torchrun group per membership generation this worker belongs to."""

    def __init__(self, args: argparse.Namespace, source: MembershipSource) -> None:
        self.args, self.source = args, source
        self.group: subprocess.Popen[bytes] | None = None
        self.group_generation: int | None = None
        self.done_generation = -1
        """The newest generation whose group ended; it is never started again."""
        self.terminating = False

    def _torchrun(self, generation: int, world_size: int, endpoint: str) -> subprocess.Popen[bytes]:
        a = self.args
        cmd = [
            sys.executable, "-m", "torch.distributed.run",
            f"--nnodes={world_size}", f"--nproc-per-node={a.nproc_per_node}",
            "--rdzv-backend=c10d", f"--rdzv-endpoint={endpoint}", f"--rdzv-id={a.run_id}-g{generation}",
            "--rdzv-conf=is_host=false,join_timeout=600", "--max-restarts=0", "--monitor-interval=0.1",
            "-m", "moe_trainer.train", "--config", a.config,
        ]
        env = os.environ | {"DSTJ_GENERATION": str(generation), "DSTJ_MEMBERSHIP": a.membership,
                            "DSTJ_MEMBER_ID": a.member_id}
        log.info("generation %d: starting a group of %d (%s)", generation, world_size, a.member_id)
        print(f"[{a.member_id}] generation {generation}: joining a group of {world_size}", flush=True)
        return subprocess.Popen(cmd, env=env)

    def stop_group(self) -> int | None:
        """SIGTERM the running group and wait for it (it checkpoints first); return its exit code."""
        if self.group is None:
            return None
        if self.group.poll() is None:
            self.group.send_signal(signal.SIGTERM)
            try:
                self.group.wait(STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                self.group.kill()
                self.group.wait()
        rc = self.group.returncode
        self._ended()
        return rc

    def _ended(self) -> None:
        if self.group_generation is not None:
            self.done_generation = max(self.done_generation, self.group_generation)
        self.group, self.group_generation = None, None

    def step(self) -> int | None:
        """One poll: react to membership and to the group's exit; an int means exit with it."""
        if self.terminating:
            self.stop_group()
            return EXIT_STOPPED
        m = self.source.current()
        if self.group is not None:
            rc = self.group.poll()
            if rc is not None:
                gen = self.group_generation
                self._ended()
                if rc == 0:
                    print(f"[{self.args.member_id}] generation {gen}: training finished", flush=True)
                    return 0
                print(f"[{self.args.member_id}] generation {gen}: group ended ({rc}); waiting for the next "
                      "generation", flush=True)
            elif m is not None and m.generation != self.group_generation:
                print(f"[{self.args.member_id}] generation {m.generation} published: stopping generation "
                      f"{self.group_generation} at a step boundary", flush=True)
                self.stop_group()
        if m is None:
            return None
        if m.state == "finished":
            self.stop_group()
            return 0
        member = not m.members or self.args.member_id in m.members
        if self.group is None and m.state == "running" and member and m.generation > self.done_generation:
            endpoint = m.rdzv_endpoint or self.args.rdzv_endpoint
            self.group, self.group_generation = self._torchrun(m.generation, m.world_size, endpoint), m.generation
        return None

    def run(self) -> int:
        """Poll until training finishes or this worker is told to stop."""
        def on_term(signum: int, frame: FrameType | None) -> None:
            self.terminating = True

        signal.signal(signal.SIGTERM, on_term)
        while True:
            rc = self.step()
            if rc is not None:
                return rc
            time.sleep(POLL_S)


def main(argv: list[str] | None = None) -> int:
    """CLI entry point."""
    p = argparse.ArgumentParser(prog="python -m moe_trainer.launch", description=__doc__.splitlines()[0])
    p.add_argument("--config", required=True, help="trainer config JSON")
    p.add_argument("--member-id", default=os.environ.get("DSTJ_MEMBER_ID") or os.uname().nodename,
                   help="this worker's id as listed in the membership (the pod name)")
    p.add_argument("--membership", default=os.environ.get("DSTJ_MEMBERSHIP", ""),
                   help="membership source, file:PATH")
    p.add_argument("--rdzv-endpoint", default=os.environ.get("DSTJ_RDZV_ENDPOINT", "localhost:29400"),
                   help="host:port of the rendezvous store when the membership names none")
    p.add_argument("--run-id", default=os.environ.get("DSTJ_RUN_ID", "dstj"), help="rendezvous id prefix")
    p.add_argument("--nproc-per-node", type=int, default=1, help="processes per worker (local devices)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if not args.membership:
        print("error: --membership file:PATH (or DSTJ_MEMBERSHIP) is required", file=sys.stderr)
        return 2
    return Supervisor(args, membership_source(args.membership)).run()


if __name__ == "__main__":
    sys.exit(main())
