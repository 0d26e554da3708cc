"""The progress report's pace: at most one routine report per interval, the ones that matter at once."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from dstj_api import ProgressReport
from moe_trainer.runtime.progress_pace import REPORT_INTERVAL_S, PacedProgressSink, ReportPace


def _report(step: int, generation: int = 1, checkpoint: int | None = None, state: str = "running",
            total: int = 1000) -> ProgressReport:
    return ProgressReport(step=step, total_steps=total, generation=generation, world_size=2, expert_parallel=1,
                          data_parallel=2, last_checkpoint_step=checkpoint, state=state,  # type: ignore[arg-type]
                          updated=datetime.now(UTC))


def _sent(reports: list[tuple[float, ProgressReport]]) -> list[int]:
    """The steps of the reports a pace lets through, each made at its time."""
    pace, out = ReportPace(), []
    for now, r in reports:
        if pace.due(r, now):
            pace.sent(r, now)
            out.append(r.step)
    return out


def test_routine_reports_go_out_at_most_once_per_interval_however_fast_the_steps() -> None:
    ten_a_second = [(s / 10, _report(s)) for s in range(1, 301)]  # 30 s of steps

    assert _sent(ten_a_second) == [1, 101, 201]


def test_a_slow_run_reports_every_logged_step() -> None:
    slow = [(s * REPORT_INTERVAL_S, _report(s)) for s in range(1, 5)]

    assert _sent(slow) == [1, 2, 3, 4]


@pytest.mark.parametrize("urgent", [
    pytest.param(_report(5, generation=2), id="a new generation"),
    pytest.param(_report(5, checkpoint=4), id="a checkpoint commit"),
    pytest.param(_report(5, state="stopped"), id="a stop"),
    pytest.param(_report(5, state="finished", total=5), id="the end"),
    pytest.param(_report(5, total=5), id="the last step"),
])
def test_a_report_that_matters_goes_out_at_once(urgent: ProgressReport) -> None:
    assert _sent([(0.0, _report(1)), (0.1, _report(2)), (0.2, urgent)]) == [1, 5]


def test_the_paced_sink_passes_due_reports_to_the_inner_sink_on_its_clock() -> None:
    class Recorder:
        def __init__(self) -> None:
            self.steps: list[int] = []

        def publish(self, report: ProgressReport) -> None:
            self.steps.append(report.step)

    now = [0.0]
    inner = Recorder()
    sink = PacedProgressSink(inner, interval=10, clock=lambda: now[0])
    for step, at in ((1, 0.0), (2, 9.9), (3, 10.0), (4, 12.0)):
        now[0] = at
        sink.publish(_report(step))

    assert inner.steps == [1, 3]
