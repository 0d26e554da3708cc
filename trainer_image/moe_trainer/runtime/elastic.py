"""Reconfigure in place: one process trains every membership generation it is a member of.

The process keeps its data, model and optimizer across generations (as torchft does). Before it says it is ready
to join (the pod's readiness, which the operator waits for before it publishes a generation with it) it builds
its data, the model from the seed and a throwaway optimizer (whose first construction imports torch._dynamo), so
that a published generation costs a newcomer little more than the group, the state load and a step; what only a
group needs (the membership watch's client, DCP) it imports after, while the operator sees it Ready and the
running members stop. Then, for each published generation g in which it has a seat:

    0. runs the trainer config g names: when the job's config was edited since this process started, it
       reads the current one (`config_source.py`) and rebuilds its trainer from it before joining;
    1. forms g's own process group against the external store (`rendezvous.py`), rank from the
       member list; a newer generation or SIGTERM while peers are still missing abandons the join;
    2. plans the EP x DP layout for W x P ranks and builds its groups, re-seats the expert slices;
    3. loads the latest committed checkpoint into that layout (experts are stored under their global
       index, so any layout loads any checkpoint) and continues from its step;
    4. trains until the run finishes, or every rank agrees at a step boundary to stop: SIGTERM on
       some rank, or a newer generation published (`Trainer.should_stop`). The stop checkpoint is
       committed (fenced by generation, see `checkpoint/checkpointer.py`) before anyone leaves;
    5. destroys g's groups and waits for a newer generation, never re-joining g. A collective that
       fails because a peer died ends g without a checkpoint, and the process re-executes itself
       (same PID, fresh interpreter) before waiting: a half-failed group can leave distributed state
       behind that breaks the next one.

A newer generation stops the running one at once, even when its new members are still starting:
a group that trained on until they arrived (tried) idled less, but could finish a short run under
a generation that was no longer published, and it made the arrival later by a stop and a
checkpoint. The operator should publish a generation only when its pods are ready to join.

The state after a failed step is not trusted: every generation starts from the committed checkpoint
(or, when there is none, from a model re-initialised from the seed), never from what is in memory.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from dstj_api import EXIT_STOPPED, TrainerConfig, contract
from dstj_api.contract import ENV_READY_PROBE
from dstj_api.layout import LayoutError
from moe_trainer.checkpoint.checkpointer import Checkpointer, import_dcp
from moe_trainer.parallel.context import backend_for, make_context
from moe_trainer.runtime.assembly import Reporting, assemble, prepare, start, trainer_for
from moe_trainer.runtime.config_source import ConfigFollower
from moe_trainer.runtime.generation import Outcome, run_generation
from moe_trainer.runtime.membership import MembershipSource
from moe_trainer.runtime.rendezvous import Seat, is_peer_failure, join, leave, seat_in
from moe_trainer.training.optim import warm_up_optimizer
from moe_trainer.training.trainer import Datasets, SeededModel, Trainer, build_model, pick_device

POLL_S = 0.02
"""How often membership is read while waiting for a generation (a file read or a lock)."""


@dataclass(slots=True, frozen=True, kw_only=True)
class Identity:
    """Who this process is in the published membership."""

    member_id: str
    """This worker's id as listed in the membership (the pod name)."""
    run_id: str
    """Prefix of every generation's store keys (the job's uid)."""
    rdzv_endpoint: str
    """host:port of the store when the membership names none."""
    local_rank: int = 0
    nproc: int = 1
    """Processes per worker (P)."""


DONE_GENERATION_ENV = "DSTJ_DONE_GENERATION"
"""Set for a re-executed process: the newest generation it already ended (never joined again)."""


def restart_process(done_generation: int) -> None:
    """Replace this process with a fresh one after a group failed (a peer died).

    A group that failed half-way (a peer lost while the group formed, or mid-collective) can leave
    process-wide distributed state behind that a later generation then trips over: the benchmark
    saw every later group of such a process time out while the others waited for it. A fresh
    interpreter costs a process start (~4-5 s here) only on this path; planned changes and
    preemptions with notice keep the process.
    """
    os.environ[DONE_GENERATION_ENV] = str(done_generation)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, [sys.executable, *sys.orig_argv[1:]])


READY_DIR = Path(contract.READY_DIR)
"""Where `mark_ready` leaves `dstj-ready-<member id>` for the pod's readiness probe (an emptyDir of the operator's
worker pod, which tests `dstj-ready-$HOSTNAME`; the member id is the pod name, its hostname)."""


def mark_ready(member_id: str) -> None:
    """Say this worker can join a group now (torch imported, data and model built): the operator counts a pod in a
    generation only once it is Ready, so running members do not stop and wait through its start-up."""
    if os.environ.get(ENV_READY_PROBE) == "1":
        # A pod of an operator older than this trainer mounts no READY_DIR and probes /tmp.
        directory = READY_DIR if READY_DIR.is_dir() else Path(contract.LEGACY_READY_DIR)
        (directory / f"dstj-ready-{member_id}").touch()


def process_start() -> float:
    """When this process started (wall clock, 10 ms resolution): the kernel's record, so the interpreter's own start
    and the imports before any of our code count too."""
    try:
        ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        boot = next(int(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                    if line.startswith("btime "))
        return boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):  # not Linux: count from the first import instead
        return _IMPORTED


_IMPORTED = time.time()


def _data_inputs(cfg: TrainerConfig) -> tuple[object, ...]:
    """What the built data depends on (`prepare`)."""
    return cfg.data, cfg.model, cfg.train.seq_len, cfg.train.seed, cfg.train.global_batch, cfg.checkpoint


class ElasticWorker:
    """Follows the published membership and trains each generation it has a seat in, in this process."""

    def __init__(self, config: ConfigFollower, source: MembershipSource, me: Identity) -> None:
        self.config, self.source, self.me = config, source, me
        cfg = self.cfg = config.cfg
        self.device = pick_device(cfg)
        if self.device.type == "cuda":
            torch.cuda.set_device(me.local_rank)
        self.terminating = False
        """Set by SIGTERM: stop at the next step boundary with a checkpoint, then exit EXIT_STOPPED."""
        self.done_generation = int(os.environ.get(DONE_GENERATION_ENV, "-1"))
        """The newest generation this process joined or gave up on; it is never joined again."""
        self.trainer: Trainer | None = None
        self._data: Datasets | None = None
        self._model: SeededModel | None = None
        """The model built before the first group (`build_model`), until a fresh trainer takes it over."""
        self._reporting = Reporting(cfg)
        self._started = time.perf_counter()

    def request_stop(self) -> None:
        """SIGTERM: checkpoint at the next step boundary (or leave the wait at once) and exit."""
        self.terminating = True

    def run(self) -> int:
        """Train generation after generation; return the exit code (0 finished, EXIT_STOPPED on SIGTERM).

        Raises RunConfigError for a setting that only run time could check (see `moe_trainer/misconfig.py`).
        """
        # Before the pod turns Ready: a checkpoint location that cannot work ends the worker, not a generation,
        # and the data is built before any group.
        imported = time.time()
        self._data = prepare(self.cfg)
        built = time.time()
        # The model and the optimizer's imports too: once a generation is published, a newcomer's peers wait for it.
        self._model = build_model(self.cfg)
        warm_up_optimizer()
        modelled = time.time()
        mark_ready(self.me.member_id)
        began, used = process_start(), time.process_time()
        self._say(f"ready to join {modelled - began:.2f} s after the process started (interpreter and imports "
                  f"{imported - began:.2f} s, data {built - imported:.2f} s, model and optimizer "
                  f"{modelled - built:.2f} s; {used:.2f} s of CPU)")
        # Needed only in a group: imported while the pod turns Ready, the generation is published and the running
        # members stop, not before this worker may be counted in.
        import_dcp()
        while True:
            seat = self._next_seat()
            if isinstance(seat, int):
                return seat
            code = self._run(seat)
            if code is not None:
                return code

    def _say(self, text: str) -> None:
        # Wall-clock times in the line: a node's log API need not add them (kubectl logs --timestamps).
        now = time.time()
        print(f"{time.strftime('%H:%M:%S', time.gmtime(now))}.{int(now % 1 * 1000):03d} [{self.me.member_id}] {text}",
              flush=True)

    def _next_seat(self) -> Seat | int:
        """Wait for a newer generation with a seat for this process; an int is the exit code instead."""
        while not self.terminating:
            m = self.source.current()
            if m is not None and m.state == "finished":
                return 0
            if m is not None and m.generation > self.done_generation:
                seat = seat_in(m, self.me.member_id, self.me.run_id, self.me.rdzv_endpoint,
                               self.me.local_rank, self.me.nproc)
                cfg = self.config.for_generation(m.config_hash) if seat is not None else None
                if seat is not None and cfg is not None:
                    if cfg is not self.cfg:
                        self._adopt(cfg, m.generation)
                    return seat
            time.sleep(POLL_S)
        return EXIT_STOPPED

    def _adopt(self, cfg: TrainerConfig, generation: int) -> None:
        """Run `cfg` from `generation` on (the job's spec was edited): the trainer is rebuilt from it and loads the
        committed checkpoint, as a newcomer's does, so nothing from the old config lingers in memory. The data is
        rebuilt only when its inputs changed (the operator refuses such edits; a local run might make one)."""
        old, self.cfg = self.cfg, cfg
        self.trainer = self._model = None
        if _data_inputs(old) != _data_inputs(cfg):
            self._data = prepare(cfg)
        self._say(f"generation {generation}: runs the edited trainer config {self.config.digest}")

    def _superseded(self, generation: int) -> bool:
        """Whether generation `generation` should stop: SIGTERM, or the operator published another state."""
        if self.terminating:
            return True
        m = self.source.current()
        return m is not None and (m.generation != generation or m.state != "running")

    def _run(self, seat: Seat) -> int | None:
        """Train generation `seat.generation`; an int is the exit code, None means wait for the next."""
        n = seat.generation
        self.done_generation = n
        self._say(f"generation {n}: joining a group of {seat.nodes} (pid {os.getpid()})")
        ckpt: Checkpointer | None = None
        try:
            rank = join(seat, backend_for(self.device), lambda: self._superseded(n))
            if rank is None:
                self._say(f"generation {n}: superseded before every member arrived")
                leave()
                return EXIT_STOPPED if self.terminating else None
            joined = time.perf_counter()
            self._say(f"generation {n}: rank {rank} of {seat.world_size} (pid {os.getpid()})")
            ctx = make_context(self.cfg, rank, seat.world_size, self.device)
            grouped = time.perf_counter()
            model, self._model = self._model, None  # a fresh trainer takes it over; a re-seated one drops it
            trainer = self.trainer = trainer_for(self.cfg, ctx, self.device, self._data, self.trainer, model)
            built = time.perf_counter()
            g = assemble(self.cfg, trainer, n, self.source, self._reporting, self._started)
            ckpt = g.ckpt
            assembled = time.perf_counter()
            start(g)
            # What a reconfiguration costs after the group formed, in the order it happens.
            self._say(f"generation {n}: resumed from step {trainer.step} ({grouped - joined:.2f} s parallel groups, "
                      f"{built - grouped:.2f} s model, {assembled - built:.2f} s storage check, "
                      f"{time.perf_counter() - assembled:.2f} s checkpoint load)")
            trainer.should_stop = lambda: self._superseded(n)
            outcome, _ = run_generation(g)
        except LayoutError as e:
            self._say(f"generation {n}: cannot run at this size ({e}); waiting for the next generation")
            leave()
            return EXIT_STOPPED if self.terminating else None
        except Exception as e:
            if not is_peer_failure(e):
                raise
            self._say(f"generation {n}: group failed ({str(e).splitlines()[0][:200]}); waiting for the next "
                      "generation")
            if ckpt is not None:
                ckpt.abandon()
            leave()
            if self.terminating:
                return EXIT_STOPPED
            restart_process(n)
            return None  # not reached
        if ckpt is not None:
            ckpt.close()
        leave()
        if outcome is Outcome.FINISHED:
            self._say(f"generation {n}: training finished")
            return 0
        if self.terminating:
            return EXIT_STOPPED
        saved = f" (stop checkpoint {ckpt.last_save_seconds:.2f} s)" if ckpt is not None else ""
        self._say(f"generation {n}: stopped at step {trainer.step}{saved}; waiting for the next generation")
        return None
