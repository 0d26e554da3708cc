"""The fleet benchmark's table (one column per N) and its plot (each number against N)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

from benchmarks.fleet import takeover

if TYPE_CHECKING:
    from benchmarks.fleet.run import FleetResult

ROWS = [
    ("pods", "pods (jobs x (workers + rendezvous))"),
    ("bring_up_s", "bring-up: all jobs at target (s)"),
    ("reports_per_s", "progress reports sent/s (asked: jobs / 10 s)"),
    ("deletions_per_s", "pod deletions sent/s (asked: R)"),
    ("operator_cores", "operator CPU (cores)"),
    ("operator_rss_mib_peak", "operator RSS peak (MiB)"),
    ("operator_rss_kib_per_job", "operator RSS per job above baseline (KiB)"),
    ("operator_requests_per_s", "operator API requests/s"),
    ("operator_get_per_s", "  get/s"),
    ("operator_list_per_s", "  list/s"),
    ("operator_patch_per_s", "  patch/s"),
    ("operator_create_per_s", "  create/s"),
    ("operator_delete_per_s", "  delete/s"),
    ("status_writes_held_per_s", "  status writes held back/s (only step and loss moved)"),
    ("operator_events_received_per_s", "operator watch events received/s"),
    ("operator_requests_per_event", "operator requests per event received"),
    ("reconciles_per_s", "reconcile passes/s"),
    ("reconcile_p50_s", "reconcile pass p50 (s)"),
    ("reconcile_p99_s", "reconcile pass p99 (s)"),
    ("event_to_handler_p50_s", "event received -> pass taken up p50 (s)"),
    ("event_to_handler_p99_s", "event received -> pass taken up p99 (s)"),
    ("event_to_pass_p99_s", "event received -> pass started p99 (s)"),
    ("event_to_status_p50_s", "event received -> status written p50 (s)"),
    ("event_to_status_p99_s", "event received -> status written p99 (s)"),
    ("nodes_reclaimed", "nodes reclaimed in the window (each with its pods)"),
    ("deletions_in_window", "pod deletions in the window"),
    ("deletion_to_generation_p50_s", "deletion -> generation published p50 (s)"),
    ("deletion_to_generation_p99_s", "deletion -> generation published p99 (s)"),
    ("kube-apiserver_cores", "kube-apiserver CPU (cores)"),
    ("etcd_cores", "etcd CPU (cores)"),
    ("kwok_cores", "kwok CPU (cores)"),
    ("kube-controller-manager_cores", "controller manager CPU (cores)"),
    ("kube-scheduler_cores", "scheduler CPU (cores)"),
]
FAILOVER_ROWS = [(f"failover {key}", f"failover: {label.strip()}") for key, label in
                 [*takeover.ROWS, ("recover_s", "deletions stopped -> fleet whole (s)")]]
"""With `--then-failover`: the leader killed after the window, on the same fleet (`takeover`)."""
PLOTTED = ["operator_cores", "operator_rss_mib_peak", "operator_requests_per_s", "operator_events_received_per_s",
           "deletion_to_generation_p99_s", "kube-apiserver_cores", "etcd_cores", "reconcile_p99_s"]


def _fmt(v: float | None) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{v:.0f}" if abs(v) >= 100 else f"{v:.2f}" if abs(v) >= 1 else f"{v:.3f}"


def _slope(before: FleetResult | None, after: FleetResult) -> float | None:
    """KiB of peak RSS per job between two fleet sizes: what one more job costs, without the costs paid once."""
    if before is None or after.spec.jobs == before.spec.jobs:
        return None
    a, b = after.numbers.get("operator_rss_mib_peak"), before.numbers.get("operator_rss_mib_peak")
    return None if a is None or b is None else (a - b) * 1024 / (after.spec.jobs - before.spec.jobs)


def table(results: list[FleetResult], rows: list[tuple[str, str]] = ROWS) -> str:
    """A Markdown table: one row per number, one column per fleet size."""
    head = "| N jobs | " + " | ".join(str(r.spec.jobs) for r in results) + " |"
    lines = [head, "| --- |" + " ---: |" * len(results)]
    for key, label in rows:
        lines.append(f"| {label} | " + " | ".join(_fmt(r.numbers.get(key)) for r in results) + " |")
        if key == "operator_rss_kib_per_job" and len(results) > 1:
            lines.append("| operator RSS growth per job added since the previous N (KiB) | "
                         + " | ".join(_fmt(_slope(a, b)) for a, b in zip([None, *results], results, strict=False))
                         + " |")
    # --memory-breakdown: the growth per job by part, and the object types that grew most
    for prefix, label in (("bring_up ", "bring-up: "), ("memory_kib_per_job ", "memory per job (KiB): "),
                          ("objects_per_job ", "objects per job: ")):
        parts = sorted({k for r in results for k in r.numbers if k.startswith(prefix)},
                       key=lambda k: -max(r.numbers.get(k, 0.0) for r in results))
        for key in parts:
            lines.append(f"| {label}{key[len(prefix):]} | "
                         + " | ".join(_fmt(r.numbers.get(key)) for r in results) + " |")
    for key, label in FAILOVER_ROWS:
        if any(key in r.numbers for r in results):
            lines.append(f"| {label} | " + " | ".join(_fmt(r.numbers.get(key)) for r in results) + " |")
    lines.append("| correctness problems | " + " | ".join(str(len(r.problems)) for r in results) + " |")
    return "\n".join(lines)


def plot(results: list[FleetResult], path: Path) -> None:
    """One small panel per number, against N."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = dict(ROWS)
    fig, axes = plt.subplots(2, 4, figsize=(16, 7))
    ns = [r.spec.jobs for r in results]
    for ax, key in zip(axes.flat, PLOTTED, strict=True):
        ax.plot(ns, [r.numbers.get(key, math.nan) for r in results], marker="o")
        ax.set_title(labels[key].strip(), fontsize=9)
        ax.set_xlabel("jobs (x 8 workers)")
        ax.set_ylim(bottom=0)  # from zero: two close points must not look like a cliff
        ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
