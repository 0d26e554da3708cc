"""This process's place in the run: rank, world size, layout and groups (one process: W=1).

Under torchrun (RANK and WORLD_SIZE set) or per membership generation (`runtime/rendezvous.py`) the default
process group is created with a short timeout, so that when a peer dies the survivors' collectives
fail fast and they wait for the next membership generation instead of hanging.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from dstj_api import TrainerConfig
from dstj_api.layout import Layout, plan_layout
from moe_trainer.parallel.groups import ParallelGroups, build_groups

COLLECTIVE_TIMEOUT_S = float(os.environ.get("DSTJ_COLLECTIVE_TIMEOUT_S", "20"))
"""Seconds a collective may wait for a peer before failing (gloo); a dead peer costs at most this."""


@dataclass(slots=True)
class DistContext:
    """Rank, world and parallel groups of this process."""

    rank: int
    world_size: int
    groups: ParallelGroups
    cpu_group: dist.ProcessGroup | None = None
    """A gloo group over all ranks for small CPU-side reductions (the default group may be nccl)."""

    @property
    def layout(self) -> Layout:
        """The EP x DP layout of this run."""
        return self.groups.layout

    @property
    def is_distributed(self) -> bool:
        """More than one rank."""
        return self.world_size > 1

    def reduce_counts(self, t: torch.Tensor) -> torch.Tensor:
        """The `balance.CountReducer` of this run: sum float64 CPU routing counts over all ranks."""
        if self.is_distributed:
            dist.all_reduce(t, group=self.cpu_group)
        return t

    def all_sum(self, values: list[float]) -> list[float]:
        """Sum a few floats over all ranks (one tiny collective; identity in one process)."""
        if not self.is_distributed:
            return values
        t = torch.tensor(values, dtype=torch.float64)
        dist.all_reduce(t, group=self.cpu_group)
        return [float(v) for v in t.tolist()]


def init_distributed(cfg: TrainerConfig, device: torch.device) -> DistContext:
    """Join the process group torchrun prepared (if any) and build the EP x DP groups."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend_for(device), timeout=datetime.timedelta(seconds=COLLECTIVE_TIMEOUT_S))
    return make_context(cfg, rank, world, device)


def backend_for(device: torch.device) -> str:
    """nccl on GPU, gloo on CPU."""
    return "nccl" if device.type == "cuda" else "gloo"


def make_context(cfg: TrainerConfig, rank: int, world: int, device: torch.device) -> DistContext:
    """Plan the layout for `world` ranks and build its groups (collective; the default group must exist)."""
    layout = plan_layout(world, cfg.model.moe.n_routed, cfg.parallel.expert_parallel, cfg.parallel.ep_cap)
    cpu_group = None
    if world > 1 and device.type == "cuda":
        group = dist.new_group(backend="gloo")
        cpu_group = group if isinstance(group, dist.ProcessGroup) else None
    return DistContext(rank, world, build_groups(layout, rank), cpu_group)
