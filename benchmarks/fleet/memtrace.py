"""The operator with a memory probe, for the fleet benchmark's memory breakdown (`--memory-breakdown`).

`python -m benchmarks.fleet.memtrace OUT [--tracemalloc]` runs `python -m dstj_operator` in this process; each
SIGUSR1 writes to OUT as JSON what its memory is made of now:
- `malloc`: glibc's own account (`mallinfo2`): bytes in use, bytes free inside its heaps (held, not returned:
  fragmentation), mmapped blocks, and the heaps' total; with the resident size, what is neither (Python's
  own object arenas are mmapped by obmalloc and show in neither heap number but in `python_arenas`);
- `objects`: live objects by type (from the garbage collector's view, tracked containers only), the largest
  counts first, and `repeated_classes`: classes that exist more than once under one name; `modules`: the
  modules imported so far (one imported late costs memory that is not per job);
- with `--tracemalloc`: Python memory in use by package (kopf, kubernetes, the operator's store, ...), and for
  the most numerous object types where their live objects were allocated (the most common call chains,
  innermost frame first, library frames skipped), which names the code that holds per-job memory.
  tracemalloc costs CPU and memory of its own (a loaded machine's bring-up slowed several-fold under it):
  a run with it measures where memory goes, not how much the operator needs.
"""

from __future__ import annotations

import ctypes
import gc
import json
import runpy
import signal
import sys
import threading
import tracemalloc
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

GROUPS = (("dstj_operator/cache.py", "operator store (cache.py)"), ("dstj_operator", "operator, other modules"),
          ("/kopf/", "kopf"), ("/kubernetes/", "kubernetes client"), ("/aiohttp/", "aiohttp"),
          ("/urllib3/", "urllib3"), ("/json/", "json (parsed bodies)"), ("/asyncio/", "asyncio"),
          ("/prometheus_client/", "prometheus_client"), ("/pydantic", "pydantic"), ("/threading.py", "threading"),
          ("/concurrent/", "concurrent.futures"), ("/ssl.py", "ssl"), ("<frozen", "imports"))
"""Which allocation site (the file that allocated, the innermost frame) counts for which part, first match."""
TOP_TYPES = 25
FRAMES = 25
"""Frames tracemalloc keeps per allocation: enough to get out of pydantic, typing and copy into the caller."""
_LIBRARY = ("/typing.py", "/copy.py", "/pydantic/", "/pydantic_core/", "/annotated_types/", "/functools.py",
            "/abc.py", "/dataclasses.py", "<frozen")


def group(filename: str) -> str:
    """The part of the process an allocation in `filename` counts for."""
    return next((name for pattern, name in GROUPS if pattern in filename), "other")


def by_group() -> dict[str, Any]:
    """Python memory in use now, by part, in bytes (tracemalloc must be tracing)."""
    sizes: dict[str, int] = defaultdict(int)
    for stat in tracemalloc.take_snapshot().statistics("filename"):
        sizes[group(stat.traceback[0].filename)] += stat.size
    return {"total": sum(sizes.values()), "by_group": dict(sorted(sizes.items(), key=lambda kv: -kv[1]))}


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]


def malloc_stats() -> dict[str, int]:
    """glibc's account of its heaps, in bytes (empty where mallinfo2 is missing: another libc)."""
    try:
        fn = ctypes.CDLL(None).mallinfo2
    except (OSError, AttributeError):
        return {}
    fn.restype = _MallInfo2
    m = fn()
    return {"heap_total": m.arena, "in_use": m.uordblks, "free_in_heaps": m.fordblks, "mmapped": m.hblkhd}


def rss_bytes() -> int:
    """This process's resident memory."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def python_arena_bytes() -> int:
    """Bytes obmalloc holds in arenas (mmapped by itself, outside malloc's heaps), from its own statistics."""
    import io
    import os
    import tempfile

    # sys._debugmallocstats writes to the C stderr: redirect fd 2 into a file for the call.
    with tempfile.TemporaryFile() as tmp:
        saved = os.dup(2)
        try:
            sys.stderr.flush()
            os.dup2(tmp.fileno(), 2)
            sys._debugmallocstats()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        tmp.seek(0)
        text = io.TextIOWrapper(tmp, encoding="utf-8", errors="replace").read()
    for line in text.splitlines():
        if line.startswith("Total"):
            return int(line.rsplit("=", 1)[1].replace(",", "").strip())
    return 0


def objects_by_type() -> dict[str, int]:
    """Live objects the garbage collector tracks, by type name, the largest counts first."""
    counts = Counter(type(o).__qualname__ for o in gc.get_objects())
    return dict(counts.most_common(TOP_TYPES))


def origins(kinds: list[str], sample: int = 300, top: int = 3) -> dict[str, list[tuple[int, str]]]:
    """For each type in `kinds`: where its live objects were allocated, the commonest call chains (up to four frames
    from the innermost outside the libraries above) with how many of `sample` objects each made."""
    wanted = set(kinds)
    found: dict[str, Counter[str]] = {k: Counter() for k in kinds}
    for o in gc.get_objects():
        name = type(o).__qualname__
        if name not in wanted or sum(found[name].values()) >= sample:
            continue
        tb = tracemalloc.get_object_traceback(o)
        if tb is None:
            continue
        innermost_first = list(reversed(tb))
        frames = [f for f in innermost_first if not any(lib in f.filename for lib in _LIBRARY)] or innermost_first
        found[name][" <- ".join(f"{'/'.join(f.filename.split('/')[-2:])}:{f.lineno}" for f in frames[:4])] += 1
    return {k: c.most_common(top) for k, c in found.items()}


def repeated_classes(top: int = 10) -> dict[str, int]:
    """Classes defined more than once under one name (module.qualname): a class built per call (a generic
    parametrized anew, a model made in a function) holds its fields, validators and schema each time."""
    counts = Counter(f"{o.__module__}.{o.__qualname__}" for o in gc.get_objects() if isinstance(o, type))
    return {name: n for name, n in counts.most_common(top) if n > 1}


def probe() -> dict[str, Any]:
    """Everything the breakdown reports, now."""
    out: dict[str, Any] = {"rss": rss_bytes(), "malloc": malloc_stats(), "python_arenas": python_arena_bytes(),
                           "threads": threading.active_count(), "objects": objects_by_type(),
                           "repeated_classes": repeated_classes(), "modules": sorted(sys.modules)}
    if tracemalloc.is_tracing():
        out |= by_group() | {"origins": origins(list(out["objects"])[:15])}
    return out


def main() -> None:
    """Answer SIGUSR1 with a probe in argv[1] (tracemalloc on with --tracemalloc), run the operator."""
    out = Path(sys.argv[1])
    if "--tracemalloc" in sys.argv[2:]:
        tracemalloc.start(FRAMES)

    def dump(*_: Any) -> None:
        tmp = out.with_suffix(".tmp")
        tmp.write_text(json.dumps(probe()))
        tmp.replace(out)

    signal.signal(signal.SIGUSR1, dump)
    sys.argv = ["dstj_operator"]
    runpy.run_module("dstj_operator", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
