"""One builder at a time for a data directory that several workers may need at once.

At a job's start every member of the first generation finds no data; without this each would clean and
tokenize the whole corpus (at 100x the built-in one: minutes of CPU and GiBs of memory apiece). The first to
create `<dir>.lock` (O_EXCL: atomic on local and NFS-style shared filesystems) builds; the others poll until
the directory is complete. The builder refreshes the lock's mtime while it works, so a lock left by a builder
that died (a preempted pod) goes stale and a waiter takes over. Two waiters taking over the same stale lock
may both build: harmless, the builds race to an atomic rename as before, only the work is doubled.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

STALE_AFTER_S = 60.0
"""A lock untouched this long belongs to a builder that died (it refreshes every `REFRESH_S`)."""
REFRESH_S = 5.0
POLL_S = 0.5
"""How often a waiter looks for the finished directory: a newcomer's start is seconds, a cold build minutes."""


def _keep_fresh(lock: Path, stop: threading.Event) -> None:
    while not stop.wait(REFRESH_S):
        with contextlib.suppress(FileNotFoundError):
            os.utime(lock)


def build_once(done: Callable[[], bool], lock: Path, build: Callable[[], None]) -> None:
    """Run `build` unless `done()`, at most one caller at a time per `lock`; the others wait until `done()`."""
    while not done():
        try:
            os.close(os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            with contextlib.suppress(FileNotFoundError):
                if time.time() - lock.stat().st_mtime > STALE_AFTER_S:
                    lock.unlink()
                    continue
            time.sleep(POLL_S)
            continue
        stop = threading.Event()
        refresher = threading.Thread(target=_keep_fresh, args=(lock, stop), daemon=True)
        refresher.start()
        try:
            if not done():
                build()
        finally:
            stop.set()
            refresher.join()
            lock.unlink(missing_ok=True)
