"""Failover at fleet scale: the leader is SIGKILLed under N jobs, and a standby must take every job over.

Two operators run with leader election (the HA design: `dstj_operator.leader`, the chart's replicas > 1):
`op-a` holds the Lease, `op-b` waits. Once the fleet is whole and preemptions run, `op-a` is killed
(SIGKILL: no release, so the standby waits out the Lease) and at that moment every job's trainer sends a
progress report whose step is a marker. Only a pass that ran after the kill can mirror it into the job's
status, and the dead leader runs none, so "every job's status shows the marker" means every job has had a
pass under the new leader. Measured from the kill: the Lease changing hands, the first, median and last
job passed. Then the preemptions stop and the fleet must be whole: one live worker per index (at every
moment), a new generation after every deletion, no generation gone back.
"""

from __future__ import annotations

import contextlib
import math
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.fleet import cluster as fc
from benchmarks.fleet.loadgen import JOBS_PATH, FleetView, Preemptor, Trainers
from benchmarks.fleet.measure import cpu_seconds, percentile, rss_mib
from benchmarks.fleet.run import NS, FleetResult, FleetSpec, _check, bring_up_timeout, create_fleet
from localcluster.waiting import WaitTimeout, wait_until

LEASE = "dstj-fleet"
MARKER_STEP = 900_000_000
"""A step no trainer of the fleet reaches by itself: it shows in a status only through a pass after the kill."""
ROWS = [
    ("pods", "pods (jobs x (workers + rendezvous))"),
    ("bring_up_s", "bring-up: all jobs at target (s)"),
    ("lease_seconds", "Lease duration (s)"),
    ("takeover_s", "SIGKILL -> standby holds the Lease (s)"),
    ("first_pass_s", "SIGKILL -> first job passed by the new leader (s)"),
    ("half_passed_s", "SIGKILL -> half the jobs passed (s)"),
    ("all_passed_s", "SIGKILL -> every job passed (s)"),
    ("passes_after_takeover_s", "  of which after the takeover (s)"),
    ("new_leader_cpu_s", "new leader CPU from the kill to every job passed (s)"),
    ("new_leader_rss_mib", "new leader RSS then (MiB)"),
    ("deletions_total", "pod deletions (before, during and after the kill)"),
    ("deletion_to_generation_p99_s", "deletion -> generation published p99 (s)"),
    ("recover_s", "deletions stopped -> fleet whole (s)"),
]


def _holder(c: fc.FleetCluster) -> str:
    try:
        lease = c.api.get(f"/apis/coordination.k8s.io/v1/namespaces/{NS}/leases/{LEASE}")
    except Exception:
        return ""
    return str((lease.get("spec") or {}).get("holderIdentity") or "")


def _passed(c: fc.FleetCluster, names: list[str]) -> set[str]:
    """Jobs whose status mirrors a report of at least the marker step."""
    items = c.api.get(JOBS_PATH.format(ns=NS)).get("items") or []
    return {j["metadata"]["name"] for j in items
            if (((j.get("status") or {}).get("progress") or {}).get("step") or 0) >= MARKER_STEP}


def run_failover(spec: FleetSpec, log_dir: Path, progress: Callable[[str], None] = print,
                 lease_seconds: int = 15) -> FleetResult:
    """One failover on a private cluster (started and stopped here); the numbers are seconds from the SIGKILL."""
    result = FleetResult(spec)
    pods = spec.jobs * (spec.workers + 1)
    fake_nodes = max(2, math.ceil(pods / spec.pods_per_node))
    env = {"DSTJ_LEADER_ELECTION": "true", "DSTJ_LEADER_LEASE": LEASE, "POD_NAMESPACE": NS,
           "DSTJ_LEADER_LEASE_SECONDS": str(lease_seconds)}
    with tempfile.TemporaryDirectory(prefix="dstj-failover-") as tmp, \
            fc.private_cluster(Path(tmp) / "state", fake_nodes, lambda m: progress(f"  {m}")) as c:
        fc.namespace(c.api, NS)
        stop = threading.Event()
        with fc.operator(c, log_dir / "fleet-failover-op-a.log", env | {"POD_NAME": "op-a"}) as leader:
            wait_until(lambda: _holder(c) == "op-a", timeout=60, what="op-a to hold the Lease")
            with fc.operator(c, log_dir / "fleet-failover-op-b.log", env | {"POD_NAME": "op-b"}) as standby:
                view = FleetView(c.api, NS, stop=stop)
                trainers = Trainers(view, spec.report_every_s)
                pre = Preemptor(view, spec.deletions_per_s, spec.workers)
                view.start()
                for target in (trainers.run, pre.run):
                    threading.Thread(target=target, daemon=True).start()
                progress(f"  creating {spec.jobs} jobs x {spec.workers} workers ({pods} pods on {fake_nodes} "
                         "fake nodes)")
                names, up = create_fleet(c, view, trainers, spec, progress)
                result.numbers |= {"jobs": spec.jobs, "workers": spec.workers, "pods": pods, "bring_up_s": up,
                                   "lease_seconds": lease_seconds}
                progress(f"  all {spec.jobs} jobs at target in {up:.1f} s; preempting at {spec.deletions_per_s}/s")
                pre.active.set()
                time.sleep(min(10.0, spec.window_s / 4))  # deletions in flight when the leader dies
                cpu0 = cpu_seconds(standby.proc.pid)
                leader.proc.kill()
                t0 = time.monotonic()
                trainers.report_all_from(MARKER_STEP)
                progress("  op-a SIGKILLed; waiting for op-b to take the Lease and pass every job")
                numbers = _follow(c, names, t0, bring_up_timeout(spec))
                numbers["new_leader_cpu_s"] = cpu_seconds(standby.proc.pid) - cpu0
                numbers["new_leader_rss_mib"] = rss_mib(standby.proc.pid)
                result.numbers |= numbers
                progress(f"  every job passed {numbers.get('all_passed_s', math.nan):.1f} s after the kill "
                         f"(Lease taken at {numbers.get('takeover_s', math.nan):.1f} s); stopping the deletions")
                pre.active.clear()
                t_stop = time.monotonic()
                with contextlib.suppress(WaitTimeout):
                    wait_until(lambda: not pre.pending and not _check(c, view, pre, names, spec), timeout=300,
                               interval=1, max_interval=2, what="the fleet whole again")
                result.numbers["recover_s"] = time.monotonic() - t_stop
                result.problems = _check(c, view, pre, names, spec) + view.anomalies
                if len(_passed(c, names)) < len(names):
                    result.problems.append(f"{len(names) - len(_passed(c, names))} jobs never had a pass "
                                           "under the new leader")
                if standby.proc.poll() is not None:
                    result.problems.append(f"the new leader exited with {standby.proc.returncode}")
                lat = [s for _, s in pre.latencies]
                result.numbers |= {"deletions_total": pre.deleted,
                                   "deletion_to_generation_p99_s": percentile(lat, 99)}
                stop.set()
    return result


def _follow(c: fc.FleetCluster, names: list[str], t0: float, timeout: float) -> dict[str, Any]:
    """Seconds from `t0` to the Lease changing hands and to each job's first pass by the new leader."""
    first: dict[str, float] = {}
    takeover = math.nan
    while len(first) < len(names) and time.monotonic() - t0 < timeout:
        now = time.monotonic() - t0
        if math.isnan(takeover) and _holder(c) == "op-b":
            takeover = now
        for name in _passed(c, names) - first.keys():
            first[name] = now
        time.sleep(0.5)
    times = sorted(first.values())
    out: dict[str, Any] = {"takeover_s": takeover, "jobs_passed": len(times)}
    if times:
        out |= {"first_pass_s": times[0], "half_passed_s": statistics.median(times)}
    if len(times) == len(names):
        out |= {"all_passed_s": times[-1], "passes_after_takeover_s": times[-1] - takeover}
    return out
