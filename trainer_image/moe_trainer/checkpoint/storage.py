"""Where checkpoints live: a shared directory, or an fsspec URL (`s3://bucket/run`, `gs://...`, `file:///...`).

A plain path (no `scheme://`) is a shared directory: DCP's file writer, a `flock` serialising
marker commits, and `os.replace` for atomic small files. Any URL goes through fsspec: DCP's fsspec
writer and reader, small files written to a temporary name and moved into place (one PUT or a
server-side copy on object stores: readers see the old or the new file, never half of one).

Object stores have no locks, so with a URL two committers of different generations are serialised
only by the fence itself (each re-reads the marker and the published generation just before
writing): a stale group can lose a race only to a newer generation, whose marker it then never
overwrites on a later commit. The backend's package (`s3fs`, `gcsfs`, ...) must be in the trainer
image, and its credentials in the pod's environment.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import fsspec

from moe_trainer.misconfig import RunConfigError

if TYPE_CHECKING:  # imported where used: a worker reads the marker before it needs DCP (`checkpointer.import_dcp`)
    import torch.distributed.checkpoint as dcp

# DCP's fsspec writer warns once per file that an object store has no fsync; its flush is the guarantee there.
warnings.filterwarnings("ignore", message="fsync not supported for this stream", category=UserWarning)


def write_json_atomically(path: Path, text: str) -> None:
    """Replace `path` with `text` so readers see the old or the new content, never half of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def is_url(location: str) -> bool:
    """Whether `location` names an fsspec URL rather than a directory."""
    return "://" in location


DIR_FIELD = "checkpoint.dir, or the job's spec.checkpoint.url"
"""Where users set the checkpoint root (named in errors about it)."""


class CheckpointStorage:
    """A checkpoint root and the few operations the checkpointer needs on it."""

    def __init__(self, location: str | Path, field: str = DIR_FIELD) -> None:
        self.location = str(location).rstrip("/") or "/"
        self._fs: Any = None
        if is_url(self.location):
            try:
                self._fs, self._root = fsspec.core.url_to_fs(self.location)
            except (ImportError, ValueError) as e:  # an unknown scheme, or its backend package missing
                raise RunConfigError(
                    f"checkpoint storage {self.location!r} ({field}): {e}. "
                    "Add the fsspec backend for this scheme (s3fs, gcsfs, adlfs, ...) to the trainer image"
                ) from e

    @property
    def is_directory(self) -> bool:
        """A plain directory (which workers share only if their volume is shared), not an fsspec URL."""
        return self._fs is None

    def create(self) -> None:
        """Make the root exist (a writer's first step; readers never create it)."""
        if self._fs is None:
            Path(self.location).mkdir(parents=True, exist_ok=True)
        else:
            self._fs.makedirs(self._root, exist_ok=True)

    def __repr__(self) -> str:
        return f"CheckpointStorage({self.location!r})"

    def child(self, name: str) -> str:
        """The location of `name` under the root (a path or a URL, as the root is)."""
        return f"{self.location}/{name}"

    def read_text(self, name: str) -> str | None:
        """The content of the small file `name`, or None when it does not exist."""
        try:
            if self._fs is None:
                return (Path(self.location) / name).read_text()
            return bytes(self._fs.cat_file(f"{self._root}/{name}")).decode()
        except FileNotFoundError:
            return None

    def write_text(self, name: str, text: str) -> None:
        """Replace the small file `name`: readers see the old content or the new, never half."""
        if self._fs is None:
            write_json_atomically(Path(self.location) / name, text)
            return
        tmp = f"{self._root}/.{name}.{os.urandom(4).hex()}"
        self._fs.pipe_file(tmp, text.encode())
        self._fs.mv(tmp, f"{self._root}/{name}")

    def remove_file(self, name: str) -> None:
        """Delete the small file `name` (nothing if it is gone already)."""
        with contextlib.suppress(FileNotFoundError):
            if self._fs is None:
                (Path(self.location) / name).unlink()
            else:
                self._fs.rm_file(f"{self._root}/{name}")

    def remove(self, name: str) -> None:
        """Delete the checkpoint directory `name` (nothing if it is gone already)."""
        if self._fs is None:
            shutil.rmtree(Path(self.location) / name, ignore_errors=True)
            return
        with contextlib.suppress(FileNotFoundError):
            self._fs.rm(f"{self._root}/{name}", recursive=True)

    @contextlib.contextmanager
    def commit_lock(self) -> Iterator[None]:
        """Serialise marker commits: a file lock in a directory; nothing on object stores (see above)."""
        if self._fs is not None:
            yield
            return
        with (Path(self.location) / ".marker.lock").open("w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    def writer(self, name: str) -> dcp.StorageWriter:
        """A DCP writer for the checkpoint directory `name`."""
        import torch.distributed.checkpoint as dcp

        if self._fs is None:
            return dcp.FileSystemWriter(self.child(name))
        return dcp.FsspecWriter(self.child(name))

    def holds_checkpoint(self, name: str | None = None) -> bool:
        """Whether the directory `name` (None: the root) holds a complete DCP checkpoint's metadata."""
        location = f"{name}/.metadata" if name else ".metadata"
        if self._fs is None:
            return (Path(self.location) / location).is_file()
        return bool(self._fs.exists(f"{self._root}/{location}"))

    def reader(self, name: str | None = None) -> dcp.StorageReader:
        """A DCP reader for the checkpoint directory `name` (None: the root itself is one)."""
        import torch.distributed.checkpoint as dcp

        location = self.child(name) if name else self.location
        if self._fs is None:
            return dcp.FileSystemReader(location)
        return dcp.FsspecReader(location)
