"""The steady rate of a generation leaves its warm-up out, and says nothing until it has measured enough."""

from __future__ import annotations

import pytest

from moe_trainer.runtime.throughput import SteadyRate


@pytest.mark.parametrize(("step_ends", "rate"), [
    pytest.param([10.0, 11.0, 12.0], None, id="nothing-during-the-warm-up"),
    pytest.param([10.0, 11.0, 12.0, 12.5], None, id="nothing-after-one-steady-step"),
    pytest.param([10.0, 11.0, 12.0, 12.5, 13.0], 200.0, id="slow-first-steps-do-not-count"),
    pytest.param([1.0, 2.0, 3.0, 4.0, 5.0, 6.0], 100.0, id="an-even-pace"),
])
def test_the_steady_rate_counts_steps_after_the_warm_up(step_ends: list[float], rate: float | None) -> None:
    steady = SteadyRate(tokens_per_step=100)
    for end in step_ends:
        steady.step_done(end)
    assert steady.tokens_per_second == rate
