"""spec.autoscaling on the local cluster: a node joins -> first step at the larger world size; the node is
reclaimed -> training continues at the smaller one (goals: < 15 s and < 10 s).

A private pool of nodes that fit two workers each; the job asks for up to 4 (powers of two), so it trains
at 2 on one node and at 4 on two. The operator runs as a process (cluster-wide: it watches Nodes), the
workers are real pods. "First step" is the first progress report (logEvery 1) of a generation at that size.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from benchmarks.operator import ROOT, _job, _namespace, _operator, _status
from dstj_operator.crd import CRD_FILE
from localcluster import build, controlplane, faults, nodes
from localcluster.kubectl import Kubectl
from localcluster.nodes import NodeSize
from localcluster.state import StateDir, default_state_dir, session_lock
from localcluster.waiting import wait_until

POOL = "dstj.bench/autoscale"
FITS = NodeSize(pods=2)


def _pool_node(sd: StateDir, label: str) -> str:
    return nodes.add(sd, size=FITS, taints=(f"{POOL}=true:NoSchedule",), labels={POOL: label})


def _at(kube: Kubectl, ns: str, name: str, world: int, after: int) -> dict[str, Any] | None:
    """The report once a generation at `world` workers trains past `after`."""
    s = _status(kube, ns, name)
    p, gen = s.get("progress") or {}, (s.get("membership") or {}).get("generation", -1)
    ok = p.get("worldSize") == world and p.get("generation") == gen and p.get("step", 0) > after \
        and p.get("state") == "running"
    return p if ok else None


def grow_and_shrink(kube: Kubectl, sd: StateDir, workdir: Path, rounds: int = 2) -> dict[str, Any]:
    """`rounds` times: add a pool node (timed from Ready to the first step at W=4), then reclaim it (timed from
    the reclaim to the first step at W=2 past the last step seen)."""
    label = f"pool-{os.urandom(2).hex()}"
    ns, name = _namespace(kube, f"bench-as-{os.urandom(2).hex()}"), "autoscale"
    pool = [_pool_node(sd, label)]
    spec = {"autoscaling": {"enabled": True, "unschedulableSeconds": 10, "powersOfTwo": True,
                            "growthBackoffSeconds": 3600},
            "pod": {"nodeSelector": {POOL: label},
                    "tolerations": [{"key": POOL, "operator": "Exists", "effect": "NoSchedule"}]}}
    kube("apply", "-f", "-", stdin=json.dumps(_job(ns, name, workdir, 100000, 4, **spec)))
    p = wait_until(lambda: _at(kube, ns, name, 2, 0), timeout=300, interval=0.2, what="training at W=2")
    grow, shrink = [], []
    try:
        for _ in range(rounds):
            pool.append(_pool_node(sd, label))  # returns once the node is Ready
            t0 = time.monotonic()
            p = wait_until(lambda: _at(kube, ns, name, 4, p["step"]), timeout=120, interval=0.1,  # noqa: B023
                           max_interval=0.1, what="the first step at W=4")
            grow.append(time.monotonic() - t0)
            p = wait_until(lambda: _at(kube, ns, name, 4, p["step"] + 3), timeout=120,  # noqa: B023
                           what="a few steps at W=4")
            # The reclaim (cordon, pods deleted with their grace period, node removed) runs beside the clock.
            reclaim = threading.Thread(target=faults.reclaim, args=(sd, pool.pop(), lambda _: None))
            t0 = time.monotonic()
            reclaim.start()
            p = wait_until(lambda: _at(kube, ns, name, 2, p["step"]), timeout=120, interval=0.1,  # noqa: B023
                           max_interval=0.1, what="the first step at W=2")
            shrink.append(time.monotonic() - t0)
            reclaim.join()
            wait_until(lambda: _status(kube, ns, name).get("targetReplicas") == 2, timeout=60,
                       what="the job to settle at 2")
    finally:
        kube("delete", "namespace", ns, "--wait=false")
        for n in pool:
            faults.remove(sd, n)
    return {"node_added_to_first_step_at_W4_s": statistics.median(grow),
            "reclaim_to_first_step_at_W2_s": statistics.median(shrink),
            "grow_all_s": grow, "shrink_all_s": shrink}


def run() -> None:
    """Run on the machine's local cluster (started if needed, and stopped again if it was not running)."""
    print("\n## Autoscaling on the local cluster (pool nodes fit 2 workers, tiny preset, CPU)")
    bins = build.bin_dir()
    sd = StateDir(default_state_dir())
    with session_lock(sd), tempfile.TemporaryDirectory(prefix="dstj-bench-") as tmp:
        was_running = all(alive for _, _, alive, _ in controlplane.status(sd))
        kube = Kubectl(controlplane.up(sd, progress=lambda _: None, nodes_count=3), bins)
        try:
            kube("apply", "--server-side", "--force-conflicts", "-f", str(ROOT / CRD_FILE))
            log = ROOT / "out" / "bench" / "operator-autoscale.log"
            log.parent.mkdir(parents=True, exist_ok=True)
            with _operator(kube, log):
                r = grow_and_shrink(kube, sd, Path(tmp))
        finally:
            if not was_running:
                controlplane.down(sd, progress=lambda _: None)
    print(f"node added (Ready) -> first step at W=4: {r['node_added_to_first_step_at_W4_s']:.1f} s median "
          f"({', '.join(f'{x:.1f}' for x in r['grow_all_s'])}; goal < 15 s)")
    print(f"node reclaimed -> first step at W=2: {r['reclaim_to_first_step_at_W2_s']:.1f} s median "
          f"({', '.join(f'{x:.1f}' for x in r['shrink_all_s'])}; goal < 10 s)")


if __name__ == "__main__":
    run()
    sys.exit(0)
