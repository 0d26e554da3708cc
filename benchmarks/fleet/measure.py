"""Reading the numbers: process CPU and memory from /proc, counters and histograms from Prometheus text."""

from __future__ import annotations

import math
import os
import re
from collections import defaultdict
from pathlib import Path

_SAMPLE = re.compile(r'^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>[^}]*)\})?\s+(?P<value>\S+)')
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def cpu_seconds(pid: int | None) -> float:
    """User + system CPU seconds of a process so far (0 when it is gone)."""
    if pid is None:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mib(pid: int) -> float:
    """Resident memory of a process, MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def samples(text: str, metric: str) -> list[tuple[dict[str, str], float]]:
    """Every sample of `metric` in a Prometheus text exposition, with its labels."""
    out = []
    for line in text.splitlines():
        m = _SAMPLE.match(line)
        if m and m["name"] == metric:
            out.append((dict(_LABEL.findall(m["labels"] or "")), float(m["value"])))
    return out


def by_label(text: str, metric: str, label: str, where: dict[str, str] | None = None) -> dict[str, float]:
    """A counter summed by one label, over the samples whose labels include `where`."""
    out: dict[str, float] = defaultdict(float)
    for labels, value in samples(text, metric):
        if all(labels.get(k) == v for k, v in (where or {}).items()):
            out[labels.get(label, "")] += value
    return dict(out)


def histogram(text: str, metric: str, where: dict[str, str] | None = None) -> dict[float, float]:
    """A histogram's cumulative bucket counts, by upper bound (+Inf as math.inf), of the series whose labels
    include `where`."""
    return {float(labels["le"].replace("+Inf", "inf")): value for labels, value in samples(text, metric + "_bucket")
            if all(labels.get(k) == v for k, v in (where or {}).items())}


def histogram_quantile(before: dict[float, float], after: dict[float, float], q: float) -> float:
    """The q-quantile of the observations between two readings, interpolated inside its bucket (as PromQL)."""
    bounds = sorted(after)
    counts = [after[b] - before.get(b, 0.0) for b in bounds]
    total = counts[-1] if counts else 0.0
    if total <= 0:
        return math.nan
    rank, lower, below = q * total, 0.0, 0.0
    for bound, count in zip(bounds, counts, strict=True):
        if count >= rank:
            if math.isinf(bound):
                return lower  # beyond the last finite bucket: its bound is all we know
            return lower + (bound - lower) * ((rank - below) / (count - below) if count > below else 1.0)
        lower, below = bound, count
    return lower


def percentile(xs: list[float], q: float) -> float:
    """Nearest-rank percentile (nan for no values)."""
    if not xs:
        return math.nan
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, math.ceil(q / 100 * len(s)) - 1))]
