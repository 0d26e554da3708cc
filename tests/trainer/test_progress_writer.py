"""The progress writer: a slow write never holds up training, and a generation's last report is not lost."""

from __future__ import annotations

import threading
import time

from dstj_api import ProgressReport
from moe_trainer.runtime.progress_writer import BackgroundProgressSink
from tests.trainer.test_progress_pace import _report


class SlowSink:
    """Blocks every write until released, like a write to an API server that hangs."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.started = threading.Event()
        self.written: list[ProgressReport] = []

    def publish(self, report: ProgressReport) -> None:
        self.started.set()
        self.release.wait(30)
        self.written.append(report)


def _wait(predicate: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_a_routine_report_returns_at_once_while_the_write_hangs_and_only_the_newest_waiting_one_is_written() -> None:
    inner = SlowSink()
    sink = BackgroundProgressSink(inner)

    start = time.monotonic()
    sink.publish(_report(1))
    inner.started.wait(5)  # the thread holds report 1 in a write that hangs
    for step in (2, 3, 4):
        sink.publish(_report(step))
    assert time.monotonic() - start < 1.0, "publishing a routine report must not wait for the write"

    inner.release.set()
    _wait(lambda: [r.step for r in inner.written] == [1, 4])


def test_a_generations_last_report_waits_until_it_is_written() -> None:
    inner = SlowSink()
    sink = BackgroundProgressSink(inner)
    sink.publish(_report(1))
    inner.started.wait(5)
    threading.Timer(0.3, inner.release.set).start()

    sink.publish(_report(2, state="stopped"))

    assert [r.step for r in inner.written] == [1, 2]


def test_a_last_report_that_cannot_be_written_holds_the_trainer_no_longer_than_the_final_wait() -> None:
    inner = SlowSink()
    sink = BackgroundProgressSink(inner, final_wait=0.2)
    start = time.monotonic()

    sink.publish(_report(1, state="finished"))

    assert 0.2 <= time.monotonic() - start < 2.0
    inner.release.set()
