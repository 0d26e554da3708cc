"""The operator under tracemalloc, for the fleet benchmark's memory breakdown (`--memory-breakdown`).

`python -m benchmarks.fleet.memtrace OUT` runs `python -m dstj_operator` in this process with tracemalloc on;
each SIGUSR1 writes the Python memory in use by package (kopf, kubernetes, the operator's store, ...) to
OUT as JSON. tracemalloc costs CPU and memory of its own: a run with it measures where memory goes, not
how much the operator needs (the run without it does that).
"""

from __future__ import annotations

import json
import runpy
import signal
import sys
import tracemalloc
from collections import defaultdict
from pathlib import Path
from typing import Any

GROUPS = (("dstj_operator/cache.py", "operator store (cache.py)"), ("dstj_operator", "operator, other modules"),
          ("/kopf/", "kopf"), ("/kubernetes/", "kubernetes client"), ("/aiohttp/", "aiohttp"),
          ("/urllib3/", "urllib3"), ("/json/", "json (parsed bodies)"), ("/asyncio/", "asyncio"),
          ("/prometheus_client/", "prometheus_client"), ("/pydantic", "pydantic"), ("/threading.py", "threading"),
          ("/concurrent/", "concurrent.futures"), ("/ssl.py", "ssl"), ("<frozen", "imports"))
"""Which allocation site (the file that allocated, the innermost frame) counts for which part, first match."""


def group(filename: str) -> str:
    """The part of the process an allocation in `filename` counts for."""
    return next((name for pattern, name in GROUPS if pattern in filename), "other")


def by_group() -> dict[str, Any]:
    """Python memory in use now, by part, in bytes."""
    sizes: dict[str, int] = defaultdict(int)
    for stat in tracemalloc.take_snapshot().statistics("filename"):
        sizes[group(stat.traceback[0].filename)] += stat.size
    return {"total": sum(sizes.values()), "by_group": dict(sorted(sizes.items(), key=lambda kv: -kv[1]))}


def main() -> None:
    """Start tracemalloc, answer SIGUSR1 with a breakdown in argv[1], run the operator."""
    out = Path(sys.argv[1])
    tracemalloc.start(1)

    def dump(*_: Any) -> None:
        tmp = out.with_suffix(".tmp")
        tmp.write_text(json.dumps(by_group()))
        tmp.replace(out)

    signal.signal(signal.SIGUSR1, dump)
    sys.argv = ["dstj_operator"]
    runpy.run_module("dstj_operator", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
