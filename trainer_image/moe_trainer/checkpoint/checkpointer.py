"""Checkpoints with torch.distributed.checkpoint (DCP): reshardable, atomic, fenced by generation.

- Reshardable: every expert tensor (weights and optimizer moments) is stored under its *global*
  expert index (`model.blocks.1.ffn.experts.w1_EDF.5`), dense tensors under their name. A rank
  saves and loads exactly the keys it holds, so a checkpoint written at one EP x DP layout loads
  at any other. DCP writes replicated keys once. With the optimizer state sharded (ZeRO-1,
  `parallel/zero.py`) only a piece's owner holds its optimizer keys; the names are the same at
  every sharding, so a checkpoint saved sharded loads unsharded and the other way round.
- Atomic: each save goes to its own directory; `latest.json` is replaced (write + rename) only
  after DCP has finished every rank's files and the metadata. A torn save is never pointed at.
- Stored in a shared directory or at an fsspec URL (`storage.py`).
- Fenced: rank 0 commits the marker only while its generation is the published one (or, for the
  checkpoint a group takes when stopping, the generation a planned resize hands off from), and
  never over a marker of a newer generation, whatever the steps say; a lock file serialises
  committers in a directory.
- Periodic saves are asynchronous: a background thread copies the state while the next step's
  forward and backward run (they never change it), the optimizer waits for that copy only before
  it updates the parameters (`before_update`), and DCP writes the copy in the background. At most
  one save is in flight; stopping waits for it.
"""

from __future__ import annotations

import json
import logging
import secrets
import time
import warnings
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist

from moe_trainer.checkpoint.storage import CheckpointStorage
from moe_trainer.misconfig import RunConfigError
from moe_trainer.parallel.groups import is_expert_param
from moe_trainer.parallel.zero import StatePlan

if TYPE_CHECKING:
    import torch.distributed.checkpoint as dcp

log = logging.getLogger(__name__)

# DCP warns on every single-process (W=1) save and load, even with no_dist=True: noise in every log.
warnings.filterwarnings("ignore", message="torch.distributed is disabled, unavailable or uninitialized",
                        category=UserWarning)

MARKER = "latest.json"
OPTIONAL_PREFIXES = ("comm.",)
"""Entries a checkpoint may lack (state that starts at zero without them, e.g. the residuals of compressed
gradient reduction when the run that saved it did not compress): a load drops them from the state dict."""
RESUME_FIELD = "checkpoint.resumeFrom, or the job's spec.checkpoint.resumeFrom"
"""Where users name a checkpoint to start from (named in errors about it)."""


def import_dcp() -> None:
    """Import torch.distributed.checkpoint now. It is imported where it is used: with DTensor and sympy it is a good
    part of a worker's start (1.2-1.4 of ~5 CPU-seconds here), and a worker needs it only once it is in a group, so
    it can import it while it waits for one."""
    import torch.distributed.checkpoint  # noqa: F401


@dataclass(slots=True, frozen=True)
class Marker:
    """The committed checkpoint: the only one a resuming run may load."""

    step: int
    generation: int
    path: str
    """Directory name under the checkpoint root."""
    saved_at: float
    kept: tuple[str, ...] = ()
    """Committed directories still on disk, newest first (this one included)."""


def as_storage(root: CheckpointStorage | str | Path) -> CheckpointStorage:
    """`root` as a storage (a directory path or an fsspec URL)."""
    return root if isinstance(root, CheckpointStorage) else CheckpointStorage(root)


def read_marker(root: CheckpointStorage | str | Path) -> Marker | None:
    """The committed checkpoint under `root`, or None."""
    text = as_storage(root).read_text(MARKER)
    if text is None:
        return None
    data = json.loads(text)
    data["kept"] = tuple(data.get("kept", ()))
    return Marker(**data)


def resume_source(resume_from: str) -> tuple[CheckpointStorage, str | None]:
    """Where `resume_from` keeps its checkpoint: (storage, directory under it, or None when it is one itself).

    Raises RunConfigError when it holds none: retrying would find none either.
    """
    source = CheckpointStorage(resume_from, field=RESUME_FIELD)
    committed = read_marker(source)
    name = committed.path if committed else None
    if not source.holds_checkpoint(name):
        raise RunConfigError(
            f"checkpoint.resumeFrom {resume_from!r} ({RESUME_FIELD}) holds no checkpoint: name a checkpoint "
            "directory (with a .metadata file) or a run's checkpoint root (with latest.json), or unset it to "
            "start afresh"
        )
    return source, name


def check_locations(root: str | None, resume_from: str | None) -> None:
    """Before any group forms: the checkpoint root can be reached (its fsspec backend is installed) and, while it
    holds no committed checkpoint, `resume_from` holds one. Raises RunConfigError naming the field and the fix."""
    if root is None:
        return
    if read_marker(CheckpointStorage(root)) is None and resume_from:
        resume_source(resume_from)


def check_shared(storage: CheckpointStorage, generation: int, rank: int, pg: dist.ProcessGroup | None) -> None:
    """Every rank reads what rank 0 wrote in the checkpoint directory, or all raise RunConfigError (collective).

    A directory on a volume each worker has its own copy of (a ReadWriteOnce PVC per node, a node-local
    hostPath) would let every rank save its shard where no other rank, and no later generation, can load it.
    Object stores are shared by nature; a single process needs no check.
    """
    if pg is None or not storage.is_directory:
        return
    token = [secrets.token_hex(8) if rank == 0 else None]
    dist.broadcast_object_list(token, src=0, group=pg)  # a stale file of an earlier run must not pass
    name = f".shared-check-g{generation}"
    if rank == 0:
        storage.write_text(name, str(token[0]))
    dist.barrier(group=pg)
    blind = torch.tensor([0 if storage.read_text(name) == token[0] else 1])
    dist.all_reduce(blind, group=pg)  # every rank learns how many could not read it
    if rank == 0:
        storage.remove_file(name)
    if int(blind.item()):
        raise RunConfigError(
            f"checkpoint storage {storage.location!r} (the job's spec.checkpoint, or checkpoint.dir) is not shared "
            f"between workers: {int(blind.item())} of {dist.get_world_size(pg)} ranks cannot read a file rank 0 "
            "wrote there; use a ReadWriteMany PVC, a shared hostPath or an object-store URL (spec.checkpoint.url)"
        )


def _expert_keys(name: str, tensor: torch.Tensor, experts: range) -> dict[str, torch.Tensor]:
    return {f"{name}.{e}": tensor[i] for i, e in enumerate(experts)}


def _ensure_optimizer_state(opt: torch.optim.Optimizer) -> None:
    """Create AdamW's state as its first step would, so a load has tensors to fill."""
    for group in opt.param_groups:
        for p in group["params"]:
            state = opt.state[p]
            if not state:
                state["step"] = torch.tensor(0.0)
                state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)


def flat_state(model: torch.nn.Module, opt: torch.optim.Optimizer, plan: StatePlan, experts: range,
               extra: dict[str, torch.Tensor]) -> dict[str, Any]:
    """This rank's checkpoint entries; tensors are views of the live ones, so a load fills them in place.

    Optimizer state is written by the owner of each piece only (`parallel/zero.py`) under the piece's
    parameter name, and the global expert index for an expert's slice, so any sharding loads it.
    """
    _ensure_optimizer_state(opt)
    out: dict[str, Any] = {}
    for name, t in model.state_dict(keep_vars=True).items():
        t = t.detach()
        out.update(_expert_keys(f"model.{name}", t, experts) if is_expert_param(name) else {f"model.{name}": t})
    for piece in plan.owned:
        state = opt.state[piece.param]  # type: ignore[index]
        suffix = "" if piece.expert is None else f".{piece.expert}"
        for key in ("exp_avg", "exp_avg_sq", "step"):
            out[f"optim.{piece.name}.{key}{suffix}"] = state[key]
    out.update({f"meta.{k}": v for k, v in extra.items()})
    return out


def _present(state: dict[str, Any], reader: dcp.StorageReader) -> dict[str, Any]:
    """`state` without the optional entries the checkpoint lacks (removed from `state` itself, so the caller
    sees what was loaded)."""
    optional = [k for k in state if k.startswith(OPTIONAL_PREFIXES)]
    if optional:
        saved = reader.read_metadata().state_dict_metadata
        for k in optional:
            if k not in saved:
                del state[k]
    return state


class _AlreadyStaged:
    """A DCP stager for a state dict that is already a private copy: nothing left to stage."""

    should_synchronize_after_execute = False

    def stage(self, state_dict: dict[str, Any]) -> dict[str, Any]:
        return state_dict

    def synchronize_staging(self) -> None:
        return None

    def close(self) -> None:
        return None


def _private_copy(state: dict[str, Any]) -> dict[str, Any]:
    return {k: v.detach().clone() if isinstance(v, torch.Tensor) else v for k, v in state.items()}


class Checkpointer:
    """Saves and loads one rank's share of the run's state under a shared root directory."""

    def __init__(self, root: CheckpointStorage | str | Path, keep: int, generation: int,
                 may_commit: Callable[[bool], bool], rank: int, process_group: dist.ProcessGroup | None,
                 resume_from: str | None = None) -> None:
        self.storage, self.keep, self.generation = as_storage(root), keep, generation
        self.storage.create()
        self.resume_from = resume_from
        """Loaded by `load_latest` while the root holds no committed checkpoint."""
        self.may_commit, self.rank, self.pg = may_commit, rank, process_group
        """may_commit(final): whether this generation may move the marker now (final: a stop checkpoint)."""
        self._pending: tuple[Future[Any], int, str] | None = None
        """The upload of the last async save, awaiting its commit: (future, step, directory)."""
        self._staging: tuple[Future[Any], int, str] | None = None
        """The copy of the last async save, awaited before the parameters change."""
        self._stager = ThreadPoolExecutor(max_workers=1, thread_name_prefix="checkpoint-staging")
        self.last_committed_step: int | None = None
        """The last step saved and handed to commit on every rank (the same on all: it steers collectives)."""
        self.marker_step: int | None = None
        """The step the marker points at as far as this rank knows (rank 0 wrote it; the truth to report)."""
        self.last_save_seconds: float = 0.0

    @property
    def _no_dist(self) -> bool:
        return not dist.is_initialized()

    def _dir_name(self, step: int) -> str:
        return f"step-{step:08d}-g{self.generation}"

    def save(self, state: dict[str, Any], step: int, *, asynchronous: bool, final: bool = False) -> None:
        """Write `state` for `step`; the marker moves once every rank's files are complete.

        `final` marks the checkpoint a stopping group takes (fenced by the handoff rule).
        """
        self.wait()
        name = self._dir_name(step)
        start = time.perf_counter()
        import torch.distributed.checkpoint as dcp  # on this thread, never in the staging one beside training
        if asynchronous:
            def stage_and_write() -> Any:
                return dcp.async_save(
                    _private_copy(state), storage_writer=self.storage.writer(name), process_group=self.pg,
                    no_dist=self._no_dist, async_stager=_AlreadyStaged(),  # type: ignore[arg-type]
                )

            self._staging = (self._stager.submit(stage_and_write), step, name)
            self.last_save_seconds = time.perf_counter() - start  # grows by what before_update waits
        else:
            dcp.save(state, storage_writer=self.storage.writer(name), process_group=self.pg, no_dist=self._no_dist)
            self.last_save_seconds = time.perf_counter() - start
            self._commit(step, name, final)

    def before_update(self) -> None:
        """Block until an in-flight save has copied the state; call before the parameters change."""
        if self._staging is None:
            return
        staged, step, name = self._staging
        self._staging = None
        start = time.perf_counter()
        response = staged.result()  # re-raises a failed copy or plan here, on the training thread
        self.last_save_seconds += time.perf_counter() - start
        self._pending = (getattr(response, "upload_completion", response), step, name)

    def wait(self) -> None:
        """Finish the in-flight asynchronous save, if any, and commit it."""
        self.before_update()
        if self._pending is None:
            return
        fut, step, name = self._pending
        self._pending = None
        fut.result()
        self._commit(step, name, final=False)

    def abandon(self) -> None:
        """After the group failed: let an in-flight save's threads end (its collectives fail fast once a
        peer is gone), commit nothing, and release the staging thread."""
        staging, pending = self._staging, self._pending
        self._staging = self._pending = None
        waits = [f for f in (staging[0] if staging else None, pending[0] if pending else None) if f is not None]
        for fut in waits:
            try:
                response = fut.result()
                upload = getattr(response, "upload_completion", None)
                if upload is not None:
                    upload.result()
            except Exception as e:  # the failure that ended the group, seen from the save's side
                log.info("abandoned checkpoint save failed as expected: %s", e)
        self._stager.shutdown(wait=True)

    def close(self) -> None:
        """Finish any in-flight save and release the staging thread (a generation ends)."""
        self.wait()
        self._stager.shutdown(wait=True)

    def _commit(self, step: int, name: str, final: bool) -> None:
        self.last_committed_step = step
        if self.rank != 0:
            return
        with self.storage.commit_lock():
            if not self.may_commit(final):
                log.warning("not committing step %d: generation %d is no longer published", step, self.generation)
                self.storage.remove(name)  # never to be pointed at
                return
            old = read_marker(self.storage)
            if old is not None and (old.generation > self.generation or
                                    (old.generation == self.generation and old.step >= step)):
                log.warning("not committing step %d of generation %d over %s", step, self.generation, old)
                return
            kept = (name, *(old.kept if old else ()))[: self.keep]
            marker = Marker(step, self.generation, name, time.time(), kept)
            self.storage.write_text(MARKER, json.dumps(asdict(marker)))
            self.marker_step = step
        for stale in set(old.kept if old else ()) - set(kept):
            self.storage.remove(stale)

    def load_latest(self, state: dict[str, Any]) -> Marker | None:
        """Fill `state` in place from the committed checkpoint (else from `resume_from`); None when there is none."""
        marker = read_marker(self.storage)
        if marker is None:
            return self._load_resume_from(state) if self.resume_from else None
        import torch.distributed.checkpoint as dcp

        reader = self.storage.reader(marker.path)
        dcp.load(_present(state, reader), storage_reader=reader, process_group=self.pg, no_dist=self._no_dist)
        return marker

    def _load_resume_from(self, state: dict[str, Any]) -> Marker:
        """Load the checkpoint `resume_from` names: a run's root (its committed one) or a checkpoint itself.

        The returned marker has generation -1: it belongs to another run and fences nothing here.
        """
        assert self.resume_from is not None
        source, name = resume_source(self.resume_from)
        import torch.distributed.checkpoint as dcp

        reader = source.reader(name)
        dcp.load(_present(state, reader), storage_reader=reader, process_group=self.pg, no_dist=self._no_dist)
        step = int(state["meta.step"]) if "meta.step" in state else 0
        return Marker(step, -1, self.resume_from, time.time())
