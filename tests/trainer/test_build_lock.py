"""One builder for a data directory: workers that need it at once wait for it, and a dead builder's lock expires."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from moe_trainer.data import build_lock
from tests.trainer.elastic_harness import wait_for


def test_workers_arriving_together_build_once_and_the_others_wait_for_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    done, lock, builds, polls = tmp_path / "data", tmp_path / ".data.lock", [], []
    real_sleep = time.sleep
    monkeypatch.setattr(build_lock.time, "sleep", lambda s: (polls.append(s), real_sleep(0.01)))

    def build() -> None:
        builds.append(threading.current_thread().name)
        # The build is still in flight while both other workers find the lock taken and wait.
        wait_for(lambda: len(polls) >= 2, 30, "the other workers to wait on the lock", interval=0.01)
        done.mkdir()

    workers = [threading.Thread(target=build_lock.build_once, args=(done.exists, lock, build), name=f"w{i}")
               for i in range(3)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(60)
    assert len(builds) == 1 and done.exists() and not lock.exists()


def test_a_lock_left_by_a_dead_builder_is_taken_over_once_stale(tmp_path: Path) -> None:
    done, lock = tmp_path / "data", tmp_path / ".data.lock"
    lock.touch()
    old = time.time() - build_lock.STALE_AFTER_S - 1
    os.utime(lock, (old, old))
    build_lock.build_once(done.exists, lock, done.mkdir)
    assert done.exists() and not lock.exists()
