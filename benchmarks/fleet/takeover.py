"""A leader SIGKILLed under a fleet, timed until its standby has passed every job.

Two operators run with leader election (the HA design: `dstj_operator.leader`, the chart's replicas > 1):
`op-a` holds the Lease, `op-b` waits. With preemptions running, `op-a` is killed (SIGKILL: no release, so
the standby waits out the Lease) and at that moment every job's trainer sends a progress report whose step
is a marker. Only a pass that ran after the kill can mirror it into the job's status, and the dead leader
runs none, so "every job's status shows the marker" means every job has had a pass under the new leader.
Measured from the kill: the Lease changing hands, the first, median and last job passed.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from typing import Any

from benchmarks.fleet import cluster as fc
from benchmarks.fleet.loadgen import FROM_CACHE, JOBS_PATH, LIST_TIMEOUT, Preemptor, Trainers
from benchmarks.fleet.measure import cpu_seconds, rss_mib

LEASE = "dstj-fleet"
LEADER, STANDBY = "op-a", "op-b"
MARKER_STEP = 900_000_000
"""A step no trainer of the fleet reaches by itself: it shows in a status only through a pass after the kill."""


ROWS = [
    ("takeover_s", "SIGKILL -> standby holds the Lease (s)"),
    ("first_pass_s", "SIGKILL -> first job passed by the new leader (s)"),
    ("half_passed_s", "SIGKILL -> half the jobs passed (s)"),
    ("all_passed_s", "SIGKILL -> every job passed (s)"),
    ("passes_after_takeover_s", "  of which after the takeover (s)"),
    ("new_leader_cpu_s", "new leader CPU from the kill to every job passed (s)"),
    ("new_leader_rss_mib", "new leader RSS then (MiB)"),
]
"""The table rows of what `kill_leader` measures."""


def elected(ns: str, lease_seconds: int, identity: str) -> dict[str, str]:
    """The environment of one operator replica under leader election in `ns`."""
    return {"DSTJ_LEADER_ELECTION": "true", "DSTJ_LEADER_LEASE": LEASE, "POD_NAMESPACE": ns,
            "DSTJ_LEADER_LEASE_SECONDS": str(lease_seconds), "POD_NAME": identity}


def holder(c: fc.FleetCluster, ns: str) -> str:
    """Who holds the Lease now ("" when nobody, or it cannot be read)."""
    try:
        lease = c.api.get(f"/apis/coordination.k8s.io/v1/namespaces/{ns}/leases/{LEASE}")
    except Exception:
        return ""
    return str((lease.get("spec") or {}).get("holderIdentity") or "")


def passed(c: fc.FleetCluster, ns: str) -> set[str]:
    """Jobs whose status mirrors a report of at least the marker step."""
    try:
        items = c.api.get(JOBS_PATH.format(ns=ns), FROM_CACHE, timeout=LIST_TIMEOUT).get("items") or []
    except Exception:  # a saturated API server may time the list out: nobody seen yet, ask again
        return set()
    return {j["metadata"]["name"] for j in items
            if (((j.get("status") or {}).get("progress") or {}).get("step") or 0) >= MARKER_STEP}


def kill_leader(c: fc.FleetCluster, ns: str, names: list[str], leader: fc.OperatorProcess,
                standby: fc.OperatorProcess, trainers: Trainers, pre: Preemptor, timeout: float,
                progress: Callable[[str], None]) -> dict[str, Any]:
    """With deletions in flight, SIGKILL `leader` and follow `standby` until it has passed every job (or
    `timeout`); return the seconds from the kill, and the new leader's CPU and RSS over them."""
    pre.active.set()
    time.sleep(10.0)  # deletions in flight when the leader dies
    cpu0 = cpu_seconds(standby.proc.pid)
    leader.proc.kill()
    t0 = time.monotonic()
    trainers.report_all_from(MARKER_STEP)
    progress(f"  {LEADER} SIGKILLed; waiting for {STANDBY} to take the Lease and pass every job")
    first: dict[str, float] = {}
    takeover = math.nan
    while len(first) < len(names) and time.monotonic() - t0 < timeout:
        now = time.monotonic() - t0
        if math.isnan(takeover) and holder(c, ns) == STANDBY:
            takeover = now
        for name in passed(c, ns) - first.keys():
            first[name] = now
        time.sleep(0.5)
    times = sorted(first.values())
    out: dict[str, Any] = {"takeover_s": takeover, "jobs_passed": len(times),
                           "new_leader_cpu_s": cpu_seconds(standby.proc.pid) - cpu0,
                           "new_leader_rss_mib": rss_mib(standby.proc.pid)}
    if times:
        out |= {"first_pass_s": times[0], "half_passed_s": statistics.median(times)}
    if len(times) == len(names):
        out |= {"all_passed_s": times[-1], "passes_after_takeover_s": times[-1] - takeover}
    progress(f"  every job passed {out.get('all_passed_s', math.nan):.1f} s after the kill "
             f"(Lease taken at {takeover:.1f} s); stopping the deletions")
    pre.halt()
    return out


def problems(c: fc.FleetCluster, ns: str, names: list[str], standby: fc.OperatorProcess) -> list[str]:
    """What the takeover left wrong: jobs the new leader never passed, or a new leader that died."""
    out = []
    missing = len(names) - len(passed(c, ns) & set(names))
    if missing:
        out.append(f"{missing} jobs never had a pass under the new leader")
    if standby.proc.poll() is not None:
        out.append(f"the new leader exited with {standby.proc.returncode}")
    return out
