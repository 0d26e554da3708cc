"""Failover at fleet scale: the leader is SIGKILLed under N jobs, and a standby must take every job over.

The fleet is brought up under two operators with leader election, and once it is whole and preemptions
run, the leader is killed (`takeover.kill_leader`). Then the preemptions stop and the fleet must be
whole: one live worker per index (at every moment), a new generation after every deletion, no generation
gone back. `run --then-failover` does the same after a steady window, on the same fleet.
"""

from __future__ import annotations

import math
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path

from benchmarks.fleet import cluster as fc
from benchmarks.fleet import takeover
from benchmarks.fleet.loadgen import FleetView, Preemptor, Trainers
from benchmarks.fleet.measure import percentile
from benchmarks.fleet.run import NS, FleetResult, FleetSpec, bring_up_timeout, create_fleet, recover
from localcluster.waiting import wait_until

ROWS = [
    ("pods", "pods (jobs x (workers + rendezvous))"),
    ("bring_up_s", "bring-up: all jobs at target (s)"),
    ("lease_seconds", "Lease duration (s)"),
    *takeover.ROWS,
    ("deletions_total", "pod deletions (before, during and after the kill)"),
    ("deletion_to_generation_p99_s", "deletion -> generation published p99 (s)"),
    ("recover_s", "deletions stopped -> fleet whole (s)"),
]


def run_failover(spec: FleetSpec, log_dir: Path, progress: Callable[[str], None] = print,
                 lease_seconds: int = 15) -> FleetResult:
    """One failover on a private cluster (started and stopped here); the numbers are seconds from the SIGKILL."""
    result = FleetResult(spec)
    pods = spec.jobs * (spec.workers + 1)
    fake_nodes = max(2, math.ceil(pods / spec.pods_per_node))
    with tempfile.TemporaryDirectory(prefix="dstj-failover-") as tmp, \
            fc.private_cluster(Path(tmp) / "state", fake_nodes, lambda m: progress(f"  {m}")) as c:
        fc.namespace(c.api, NS)
        stop = threading.Event()
        with fc.operator(c, log_dir / "fleet-failover-op-a.log",
                         takeover.elected(NS, lease_seconds, takeover.LEADER)) as leader:
            wait_until(lambda: takeover.holder(c, NS) == takeover.LEADER, timeout=60,
                       what=f"{takeover.LEADER} to hold the Lease")
            with fc.operator(c, log_dir / "fleet-failover-op-b.log",
                             takeover.elected(NS, lease_seconds, takeover.STANDBY)) as standby:
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
                result.numbers |= takeover.kill_leader(c, NS, names, leader, standby, trainers, pre,
                                                       bring_up_timeout(spec), progress)
                result.numbers["recover_s"], result.problems = recover(c, view, pre, names, spec)
                result.problems += takeover.problems(c, NS, names, standby)
                lat = [s for _, s in pre.latencies]
                result.numbers |= {"deletions_total": pre.deleted,
                                   "deletion_to_generation_p99_s": percentile(lat, 99)}
                stop.set()
    return result
