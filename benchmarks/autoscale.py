"""spec.autoscaling on the local cluster: a node joins -> first step at the larger world size; the node is
reclaimed -> training continues at the smaller one (goals: < 15 s and < 10 s).

`python -m benchmarks.autoscale [--ceiling N] [--rounds R]`: a private pool of nodes that fit N/2 workers each
(the first one also the rendezvous store); the job asks for up to N workers (allowedWorldSizes [N/2, N]), so it
trains at N/2 on one node and at N on two. The operator runs as a process (cluster-wide: it watches Nodes), the
workers are real pods. "First step" is the first progress report (logEvery 1) of a generation at that size.
Each resize is broken down into its steps (`growth_path`): when the Node watch saw the node, the target rose, the
pods were created, scheduled, started, ready to join (with the worker's own imports, data and model times), Ready,
the generation published, the old group stopped, the new group formed, the checkpoint loaded and the first step
reported.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from benchmarks.growth_path import GROWTH_STEPS, SHRINK_STEPS, PathRecorder, table
from benchmarks.operator import ROOT, _job, _namespace, _operator
from dstj_operator.crd import CRD_FILE
from localcluster import build, controlplane, faults, nodes
from localcluster.kubectl import Kubectl
from localcluster.nodes import NodeSize
from localcluster.state import StateDir, default_state_dir, session_lock
from localcluster.waiting import wait_until

POOL = "dstj.bench/autoscale"


def _pool_node(sd: StateDir, label: str, pods: int) -> str:
    return nodes.add(sd, size=NodeSize(pods=pods), taints=(f"{POOL}=true:NoSchedule",), labels={POOL: label})


def grow_and_shrink(kube: Kubectl, sd: StateDir, workdir: Path, rounds: int = 2, ceiling: int = 4) -> dict[str, Any]:
    """`rounds` times: add a pool node (timed from Ready to the first step at the ceiling), then reclaim it (timed
    from the reclaim to the first step at half the ceiling past the last step seen)."""
    small = ceiling // 2
    label = f"pool-{os.urandom(2).hex()}"
    ns, name = _namespace(kube, f"bench-as-{os.urandom(2).hex()}"), "autoscale"
    pool = [_pool_node(sd, label, small + 1)]  # the rendezvous store follows the workers' scheduling fields
    spec = {"maxReplicas": ceiling,
            "autoscaling": {"enabled": True, "unschedulableSeconds": 10, "allowedWorldSizes": [small, ceiling],
                            "growthBackoffSeconds": 3600},  # growth follows the Node watch, not a timer
            "pod": {"nodeSelector": {POOL: label},
                    "tolerations": [{"key": POOL, "operator": "Exists", "effect": "NoSchedule"}]}}
    kube("apply", "-f", "-", stdin=json.dumps(_job(ns, name, workdir, 100000, ceiling, **spec)))
    recorder = PathRecorder(kube, ns, name, f"{POOL}={label}").start()
    # Every wait reads the recorder's watch of the job: polling with kubectl would take CPU from the workers timed.
    p = wait_until(lambda: recorder.training_at(small, 0), timeout=300, interval=0.2, what=f"training at W={small}")
    grow, shrink, grow_paths, shrink_paths = [], [], [], []
    try:
        for _ in range(rounds):
            pool.append(_pool_node(sd, label, small))  # returns once the node is Ready
            # From when the node's Ready reached a watch (as the operator's), not when the add returned.
            t0 = recorder.nodes_ready[pool[-1]]
            grown = wait_until(lambda: recorder.first_step_seen(ceiling, t0), timeout=180,  # noqa: B023
                               interval=0.1, max_interval=0.1, what=f"the first step at W={ceiling}")
            grow.append(grown - t0)
            p = wait_until(lambda: recorder.training_at(ceiling, p["step"] + 3), timeout=120,  # noqa: B023
                           interval=0.2, what=f"a few steps at W={ceiling}")
            grow_paths.append(recorder.growth(t0, ceiling))
            # The reclaim (cordon, pods deleted with their grace period, node removed) runs beside the clock.
            reclaim = threading.Thread(target=faults.reclaim, args=(sd, pool.pop(), lambda _: None))
            w0 = time.time()
            reclaim.start()
            shrunk = wait_until(lambda: recorder.first_step_seen(small, w0), timeout=120,  # noqa: B023
                                interval=0.1, max_interval=0.1, what=f"the first step at W={small}")
            shrink.append(shrunk - w0)
            p = wait_until(lambda: recorder.training_at(small, 0), timeout=60, interval=0.2,
                           what=f"training at W={small}")
            shrink_paths.append(recorder.shrink(w0, small))
            reclaim.join()
            wait_until(lambda: recorder.status.get("targetReplicas") == small, timeout=60, interval=0.2,
                       what=f"the job to settle at {small}")
    finally:
        recorder.stop()
        kube("delete", "namespace", ns, "--wait=false")
        for n in pool:
            faults.remove(sd, n)
    return {"node_added_to_first_step_s": statistics.median(grow),
            "reclaim_to_first_step_s": statistics.median(shrink),
            "grow_all_s": grow, "shrink_all_s": shrink, "grow_paths": grow_paths, "shrink_paths": shrink_paths}


def run(ceiling: int = 4, rounds: int = 2) -> None:
    """Run on the machine's local cluster (started if needed, and stopped again if it was not running)."""
    small = ceiling // 2
    print(f"\n## Autoscaling on the local cluster (ceiling {ceiling}, pool nodes fit {small} workers, tiny preset, "
          f"CPU; load average {os.getloadavg()[0]:.1f})")
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
                r = grow_and_shrink(kube, sd, Path(tmp), rounds, ceiling)
        finally:
            if not was_running:
                controlplane.down(sd, progress=lambda _: None)
    print(f"node added (Ready) -> first step at W={ceiling}: {r['node_added_to_first_step_s']:.1f} s median "
          f"({', '.join(f'{x:.1f}' for x in r['grow_all_s'])}; goal < 15 s)")
    print(f"node reclaimed -> first step at W={small}: {r['reclaim_to_first_step_s']:.1f} s median "
          f"({', '.join(f'{x:.1f}' for x in r['shrink_all_s'])}; goal < 10 s)")
    print(f"load average after: {os.getloadavg()[0]:.1f}\n")
    print(table(f"grow {small} -> {ceiling}: s after the node turned Ready", GROWTH_STEPS, r["grow_paths"]))
    print()
    print(table(f"shrink {ceiling} -> {small}: s after the reclaim began", SHRINK_STEPS, r["shrink_paths"]))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m benchmarks.autoscale", description=__doc__.splitlines()[0])
    parser.add_argument("--ceiling", type=int, default=4, help="the job's replicas (even); pool nodes fit half")
    parser.add_argument("--rounds", type=int, default=2, help="grow-and-shrink rounds")
    args = parser.parse_args()
    run(args.ceiling, args.rounds)
    sys.exit(0)
