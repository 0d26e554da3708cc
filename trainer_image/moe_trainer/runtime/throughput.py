"""Steady throughput of one generation: tokens/s over its steps after the warm-up that follows a
reconfiguration (forming groups, loading the checkpoint into the new layout, first-step allocations), so the
operator compares world sizes by what they sustain, not by how fast they start (spec.autoscaling).

Pure bookkeeping over (step, time) pairs; the caller passes the clock.
"""

from __future__ import annotations

from dataclasses import dataclass, field

WARMUP_STEPS = 3
"""Steps at the start of a generation left out of its steady rate."""
MIN_STEADY_STEPS = 2
"""Steps after the warm-up before a steady rate is reported."""


@dataclass(slots=True, kw_only=True)
class SteadyRate:
    """Tokens/s of one generation after its warm-up."""

    tokens_per_step: int
    """Tokens one optimizer step trains (global batch x sequence length: the same at every world size)."""
    warmup_steps: int = WARMUP_STEPS
    min_steps: int = MIN_STEADY_STEPS
    _seen: int = field(default=0, init=False)
    _start: float | None = field(default=None, init=False)
    _steps: int = field(default=0, init=False)
    _elapsed: float = field(default=0.0, init=False)

    def step_done(self, now: float) -> None:
        """One step of this generation finished at `now` (seconds, a monotonic clock)."""
        self._seen += 1
        if self._seen == self.warmup_steps:
            self._start = now  # the clock starts at the end of the last warm-up step
        elif self._start is not None:
            self._steps, self._elapsed = self._seen - self.warmup_steps, now - self._start

    @property
    def tokens_per_second(self) -> float | None:
        """The steady rate, or None until `min_steps` steps ran after the warm-up."""
        if self._steps < self.min_steps or self._elapsed <= 0:
            return None
        return self._steps * self.tokens_per_step / self._elapsed
