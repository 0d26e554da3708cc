"""Wait for a condition with a deadline, never with a bare sleep.

A bare ``sleep(5)`` is either too long (slow tests) or too short (flaky tests); polling a
predicate until a deadline is both fast and honest, and its timeout error says what never
happened.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class WaitTimeout(TimeoutError):
    """Raised when a condition did not hold before its deadline."""


def wait_until(
    predicate: Callable[[], T | None],
    *,
    timeout: float,
    what: str,
    interval: float = 0.1,
    max_interval: float = 1.0,
) -> T:
    """Poll ``predicate`` until it returns a truthy value and return that value.

    The interval grows by half each round up to ``max_interval``, so fast conditions are seen
    within a tenth of a second and slow ones do not busy-loop. Exceptions from the predicate
    propagate: a predicate that can fail transiently must catch its own errors.
    """
    deadline = time.monotonic() + timeout
    delay = interval
    while True:
        value = predicate()
        if value:
            return value
        now = time.monotonic()
        if now >= deadline:
            raise WaitTimeout(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(min(delay, deadline - now))
        delay = min(delay * 1.5, max_interval)
