"""Forming one membership generation's process group in place, against the external rendezvous store.

Generation g of run R gets a fresh default process group whose keys live under `R-g<g>/` in the
store that `moe_trainer/rdzv_store.py` serves (no worker hosts it). Keys of different generations never mix, and
a rank comes only from the published member list (position x P + local rank), so a process of an
old generation can neither join nor fork a new one: it has no seat there.

Members first announce themselves under the prefix and wait until all W x P have. That wait can be
given up (a newer generation, SIGTERM), which `init_process_group` cannot, and gloo's connection
set-up starts only once every peer is there, so it never runs into its timeout on a slow arrival.
This module must not know about training; `elastic.py` drives it.
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch.distributed as dist
from torch.distributed import PrefixStore, Store, TCPStore

from dstj_api import Membership
from moe_trainer.parallel.context import COLLECTIVE_TIMEOUT_S

ARRIVAL_POLL_S = 0.005
"""How often a member checks whether its peers have arrived (one small store round trip)."""
STORE_TIMEOUT_S = 30.0
"""How long one store operation may take before the store is considered lost."""


@dataclass(slots=True, frozen=True, kw_only=True)
class Seat:
    """This process's place in one generation's group."""

    generation: int
    prefix: str
    """Store key prefix of the generation: `<run>-g<generation>`."""
    endpoint: str
    """host:port of the rendezvous store."""
    node: int | None
    """This worker's position in the member list; None when the list is empty (first come, first seated)."""
    nodes: int
    """Workers in the generation (W)."""
    local_rank: int
    nproc: int
    """Processes per worker (P)."""

    @property
    def world_size(self) -> int:
        """W x P ranks."""
        return self.nodes * self.nproc


def seat_in(m: Membership, member_id: str, run_id: str, default_endpoint: str, local_rank: int = 0,
            nproc: int = 1) -> Seat | None:
    """This worker's seat in a published generation, or None when it is not a member."""
    if m.state != "running" or m.world_size < 1:
        return None
    if m.members and member_id not in m.members:
        return None
    return Seat(generation=m.generation, prefix=f"{run_id}-g{m.generation}",
                endpoint=m.rdzv_endpoint or default_endpoint,
                node=m.members.index(member_id) if m.members else None, nodes=m.world_size,
                local_rank=local_rank, nproc=nproc)


def _connect(endpoint: str) -> Store:
    host, _, port = endpoint.rpartition(":")
    return TCPStore(host, int(port), is_master=False, timeout=datetime.timedelta(seconds=STORE_TIMEOUT_S))


def join(seat: Seat, backend: str, give_up: Callable[[], bool]) -> int | None:
    """Form the generation's default group and return this process's rank; None when `give_up()` said
    so before every peer arrived, or when the generation had no seat left (member-less list)."""
    if seat.world_size == 1:
        return 0  # a group of one needs no store and no process group
    store = PrefixStore(seat.prefix, _connect(seat.endpoint))
    if seat.node is None:
        # An empty member list: processes take ranks in arrival order; late ones find no seat.
        rank = int(store.add("rank-draw", 1)) - 1
        if rank >= seat.world_size:
            return None
    else:
        rank = seat.node * seat.nproc + seat.local_rank
    store.set(f"arrived/{rank}", "1")
    everyone = [f"arrived/{r}" for r in range(seat.world_size)]
    while not store.check(everyone):
        if give_up():
            return None
        time.sleep(ARRIVAL_POLL_S)
    dist.init_process_group(backend, store=store, rank=rank, world_size=seat.world_size,
                            timeout=datetime.timedelta(seconds=COLLECTIVE_TIMEOUT_S))
    return rank


def leave() -> None:
    """Destroy this generation's groups (the default one and every subgroup), so the next can form."""
    if dist.is_initialized():
        dist.destroy_process_group()


def is_peer_failure(error: BaseException) -> bool:
    """Whether `error` is a collective failing because a peer died or hung (not a bug in this process)."""
    from torch.distributed.checkpoint.api import CheckpointException

    if isinstance(error, dist.DistError | CheckpointException):
        return True
    # gloo reports a lost peer or a timeout as a plain RuntimeError raised from its own sources.
    text = str(error)
    return isinstance(error, RuntimeError) and ("gloo" in text or "Connection closed by peer" in text)
