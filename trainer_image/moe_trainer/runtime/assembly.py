"""Assembling a run in this process, one way for both trainers: the one-process run (`moe_trainer/train.py`,
alone or under torchrun) and the elastic worker (`elastic.py`, once per membership generation).

In order: `prepare` before any group forms (checkpoint locations, data); then per generation, once its
group and layout exist, `trainer_for` (model, optimizer, data), `assemble` (checkpointer, metrics,
progress sink, data log) and `start` (the data line, the committed checkpoint loaded into the layout);
`generation.run_generation` trains from there. Nothing here joins a group or follows membership.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import torch
import torch.distributed as dist

from dstj_api import TrainerConfig
from moe_trainer.checkpoint.checkpointer import Checkpointer, Marker, check_locations, check_shared, read_marker
from moe_trainer.checkpoint.storage import is_url
from moe_trainer.data import build_datasets
from moe_trainer.parallel.context import DistContext
from moe_trainer.runtime.generation import Generation, print0
from moe_trainer.runtime.membership import MembershipSource, ProgressSink, progress_from_env
from moe_trainer.runtime.metrics import TrainerMetrics
from moe_trainer.training.trainer import Datasets, SeededModel, Trainer

ENV_DATA_LOG = "DSTJ_DATA_LOG"
"""A directory for each rank's record of the samples it trained on (tests check it); unset: no record."""


def prepare(cfg: TrainerConfig) -> Datasets:
    """Before any group forms: refuse a checkpoint location that cannot work (RunConfigError), and build the
    data (or find it in its cache). A cold build can outlast the short collective timeout that lets survivors
    notice a dead peer quickly, so it must not happen inside a group."""
    check_locations(cfg.checkpoint.dir, cfg.checkpoint.resume_from)
    return build_datasets(cfg, shared_data_dir(cfg))


def shared_data_dir(cfg: TrainerConfig) -> Path | None:
    """Where the run's workers share the built data: `data/` beside the checkpoints when they are in a
    directory (shared by every worker, `check_shared`); None (this machine's cache) for object stores."""
    where = cfg.checkpoint.dir
    return Path(where) / "data" if where and not is_url(where) else None


def trainer_for(cfg: TrainerConfig, ctx: DistContext, device: torch.device, data: Datasets | None,
                previous: Trainer | None = None, model: SeededModel | None = None) -> Trainer:
    """This generation's trainer: `previous` (the one in memory) re-seated for the layout when a checkpoint will
    be loaded into it, else a fresh one from the seed (nothing committed yet: the run starts over), on `model`
    when one was built ahead (`build_model(cfg)`; the trainer takes it over)."""
    if previous is not None and cfg.checkpoint.dir is not None and read_marker(cfg.checkpoint.dir) is not None:
        previous.reconfigure(ctx)
        return previous
    return Trainer(cfg, ctx, device, data=data, model=model)


class Reporting:
    """This process's metrics server and progress sink: made at its first generation, kept for the later ones
    (one registry and port per process; the series are re-labelled with each generation's rank)."""

    def __init__(self, cfg: TrainerConfig) -> None:
        self.cfg = cfg
        self.metrics: TrainerMetrics | None = None
        self.sink: ProgressSink | None = None
        self._sink_opened = False
        self._restarts_counted = 0

    def for_generation(self, number: int, rank: int) -> tuple[TrainerMetrics, ProgressSink | None]:
        """The metrics, with the generations before `number` counted as restarts, and the progress sink when
        `rank` is 0 (rank 0 reports; the sink is opened the first time this process is rank 0)."""
        if self.metrics is None:
            self.metrics = TrainerMetrics(rank, self.cfg.train.metrics_port)
        self.metrics.count_restarts(number - self._restarts_counted)
        self._restarts_counted = number
        if rank != 0:
            return self.metrics, None
        if not self._sink_opened:
            self.sink, self._sink_opened = progress_from_env(), True
        return self.metrics, self.sink


def print_data_line(trainer: Trainer) -> None:
    """Rank 0's one line on the data and the layout."""
    info, layout = trainer.data_info, trainer.ctx.layout
    print0(
        trainer,
        f"data: {info.documents_kept}/{info.documents_in} documents kept (short {info.removed_short}, "
        f"symbolic {info.removed_symbolic}, exact dup {info.removed_exact_dup}, near dup {info.removed_near_dup}); "
        f"{info.train_tokens} train / {info.eval_tokens} held-out tokens; "
        f"unigram entropy {info.unigram_entropy_nats:.3f} nats; layout W={layout.world_size} "
        f"EP={layout.ep} DP={layout.dp}",
    )


def make_checkpointer(cfg: TrainerConfig, trainer: Trainer, generation: int,
                      source: MembershipSource | None) -> Checkpointer | None:
    """The generation's checkpointer, fenced by the published membership when there is one (collective)."""
    if not cfg.checkpoint.dir:
        return None

    def may_commit(final: bool) -> bool:
        if source is None:
            return True
        m = source.current()
        # A stop checkpoint commits when the published generation hands off from this one or a later one:
        # generations can follow each other faster than a group forms (g+1 never ran, g+2 hands off from
        # g+1), and the group that really trained must still land its last step. The marker is never
        # moved over a newer generation's, so a stale group gains nothing.
        return m is not None and (m.generation == generation
                                  or (final and m.handoff_from is not None and generation <= m.handoff_from))

    # Async saves run collectives from a background thread: give them a group of their own.
    pg = dist.new_group(backend="gloo") if trainer.ctx.is_distributed else None
    ckpt = Checkpointer(cfg.checkpoint.dir, cfg.checkpoint.keep, generation, may_commit, trainer.ctx.rank,
                        pg if isinstance(pg, dist.ProcessGroup) else None, resume_from=cfg.checkpoint.resume_from)
    check_shared(ckpt.storage, generation, trainer.ctx.rank, ckpt.pg)  # before anything is saved or loaded there
    return ckpt


def resume(g: Generation) -> Marker | None:
    """Load the committed checkpoint into this layout, if there is one (collective)."""
    if g.ckpt is None:
        return None
    began = time.perf_counter()
    marker = g.ckpt.load_latest(g.trainer.checkpoint_state())
    if marker is not None:
        g.trainer.restored()
        g.ckpt.last_committed_step = g.ckpt.marker_step = marker.step
        print0(g.trainer, f"resumed from step {marker.step} (generation {marker.generation}, {marker.path}) "
               f"in {time.perf_counter() - began:.2f}s")
    return marker


def assemble(cfg: TrainerConfig, trainer: Trainer, number: int, source: MembershipSource | None,
             reporting: Reporting, started: float) -> Generation:
    """What generation `number` runs with (collective: the checkpointer checks its storage is shared).

    `started` is perf_counter() when this process started, for the summary's wall time."""
    ckpt = make_checkpointer(cfg, trainer, number, source)
    metrics, sink = reporting.for_generation(number, trainer.ctx.rank)
    log_dir = os.environ.get(ENV_DATA_LOG)
    return Generation(number=number, trainer=trainer, ckpt=ckpt, metrics=metrics, sink=sink,
                      data_log=Path(log_dir) if log_dir else None, started=started)


def start(g: Generation) -> Marker | None:
    """Say what the generation trains on, and load the committed checkpoint into its layout (collective)."""
    print_data_line(g.trainer)
    # Settings that act only between ranks are said, not refused, at one rank: the run may grow.
    optim = g.trainer.cfg.optim
    if not g.trainer.ctx.is_distributed:
        if optim.shard_state:
            print0(g.trainer, "optim.shardState: one rank holds all optimizer state (nothing to shard until the run "
                   "grows)")
        if optim.grad_compression != "none":
            print0(g.trainer, f"optim.gradCompression={optim.grad_compression}: a no-op at one rank (no gradient "
                   "is sent; compression starts when the run grows)")
    return resume(g)
