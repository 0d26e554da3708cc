"""Peak memory of calls on CPU: the resident set's peak growth, read from /proc (Linux only).

Run inside a process started with `MALLOC_MMAP_THRESHOLD_` fixed (`fresh_python_env`): large
tensors are then mapped and unmapped, so the resident set falls back after each call and one
call's peak does not hide under an earlier one's leftovers. (A fork of a process that has run torch
ops may hang in its thread pools, so measurements run in a fresh interpreter instead.)
"""

from __future__ import annotations

import os
from collections.abc import Callable


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def peak_mib(fn: Callable[[], object]) -> float:
    """MiB the resident set grows by, at its peak, during `fn()` (after one settling call)."""
    fn()  # lazy initialisation (thread pools, kernels) is not the call's own memory
    base = _status_kib("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:  # "5" resets the peak (VmHWM) to the current RSS
        f.write("5")
    fn()
    return (_status_kib("VmHWM") - base) / 1024


def fresh_python_env() -> dict[str, str]:
    """The environment for a measuring interpreter: allocations of 64 KiB and up are mapped."""
    return os.environ | {"MALLOC_MMAP_THRESHOLD_": "65536"}
