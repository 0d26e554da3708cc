"""`make demo-autoscale`: a job that finds its size as nodes join and leave the local cluster.

Starts the local cluster, runs the operator from this checkout as a process (cluster-wide: it watches
Nodes; `make demo` shows the Helm install), applies the CRD, adds a private pool of one node that fits
two workers, and applies `examples/moe-tiny.yaml` with `spec.autoscaling` on (ceiling 4 workers, powers
of two) and its workers pinned to the pool. The job settles at 2; a second node joins and it grows to 4;
that node is reclaimed (spot-style) and it shrinks back to 2, then runs to the end. Prints the timeline
and writes a picture of world size, pool capacity and tokens/s over steps (out/demo/moe-autoscale.png).

`DEMO_KEEP=1` leaves the cluster running, as `make demo` does.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import time
from typing import Any

import yaml

from benchmarks.operator import _operator
from dstj_api.contract import SHORT_NAME
from dstj_operator.crd import CRD_FILE
from localcluster import build, controlplane, faults, nodes
from localcluster.kubectl import Kubectl
from localcluster.nodes import NodeSize
from localcluster.state import StateDir, default_state_dir, session_lock
from localcluster.waiting import wait_until
from scripts.demo import EXAMPLE, JOB_NS, ROOT, say
from scripts.timeline import JobWatcher

PICTURE = ROOT / "out" / "demo" / "moe-autoscale.png"
NAME = "moe-autoscale"
POOL = "dstj.demo/autoscale"
PER_NODE = 2
"""Workers a pool node fits (its pod capacity; the first node fits the rendezvous store too, which follows the
workers' node selector and tolerations)."""


def autoscaling_job() -> dict[str, Any]:
    """examples/moe-tiny.yaml, autoscaling between 1 and 4 workers on the pool."""
    job = yaml.safe_load(EXAMPLE.read_text())
    job["metadata"]["name"] = NAME
    spec = job["spec"]
    spec.update(replicas=4, minReplicas=1, maxReplicas=4)
    spec["checkpoint"]["hostPath"] = f"/tmp/dstj-checkpoints/{NAME}"
    spec["trainer"]["train"].update(steps=160, logEvery=2)
    spec["autoscaling"] = {"enabled": True, "unschedulableSeconds": 10, "powersOfTwo": True,
                           "growthBackoffSeconds": 3600}  # growth follows the Node watch, not a timer
    spec["pod"] = {"nodeSelector": {POOL: "true"},
                   "tolerations": [{"key": POOL, "operator": "Exists", "effect": "NoSchedule"}]}
    return job


def add_pool_node(sd: StateDir, store: bool = False) -> str:
    """One more node that fits PER_NODE workers (and the rendezvous store, with `store`) and takes only the demo
    job's pods."""
    return nodes.add(sd, size=NodeSize(pods=PER_NODE + store), taints=(f"{POOL}=true:NoSchedule",),
                     labels={POOL: "true"})


def remove_pool(sd: StateDir, pool: list[str]) -> None:
    """Remove the pool nodes still running (a reclaimed one is gone already)."""
    for n in pool:
        if nodes.agent_alive(sd, n):
            faults.remove(sd, n)


def scaling(kube: Kubectl) -> dict[str, Any]:
    """The job's status (for the target and the Scaling condition)."""
    out = kube("get", SHORT_NAME, NAME, "-n", JOB_NS, "-o", "json", check=False)
    return json.loads(out.stdout).get("status", {}) if out.returncode == 0 else {}


def main() -> int:
    """Run the demo; 0 when the job succeeded."""
    started = time.monotonic()
    job = autoscaling_job()
    steps = job["spec"]["trainer"]["train"]["steps"]
    say("1/6 the local cluster (the first run builds Kubernetes, etcd and helm from source: ~10 min)")
    bins = build.bin_dir()
    sd = StateDir(default_state_dir())
    capacity: list[tuple[float, int]] = []
    with session_lock(sd), contextlib.ExitStack() as stack:
        kube = Kubectl(controlplane.up(sd, nodes_count=3), bins)
        say("2/6 the operator, as a process of this checkout (cluster-wide: it watches Nodes for capacity)")
        kube("apply", "--server-side", "--force-conflicts", "-f", str(ROOT / CRD_FILE))
        log = ROOT / "out" / "demo" / "operator-autoscale.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        operator = stack.enter_context(_operator(kube, log))
        kube("delete", SHORT_NAME, NAME, "-n", JOB_NS, "--ignore-not-found", "--wait=true", timeout=120)
        shutil.rmtree(job["spec"]["checkpoint"]["hostPath"], ignore_errors=True)
        pool = [add_pool_node(sd, store=True)]
        stack.callback(remove_pool, sd, pool)
        watcher = JobWatcher(kube, JOB_NS, NAME).start()

        def pool_changed(text: str) -> None:
            watcher.mark(text)
            capacity.append((time.monotonic() - watcher.start_time, PER_NODE * len(pool)))

        pool_changed(f"pool: 1 node ({PER_NODE} workers)")
        say(f"3/6 applying {NAME}: up to 4 workers, a pool that fits {PER_NODE}")
        kube("apply", "-f", "-", stdin=json.dumps(job))

        def at(world: int) -> bool:
            w = watcher.last()
            return w is not None and w.world == world and w.members == world

        wait_until(lambda: at(2) and scaling(kube).get("targetReplicas") == 2, timeout=300, interval=1,
                   what="training at W=2")
        pool.append(add_pool_node(sd))
        pool_changed(f"node {pool[-1]} joins")
        say(f"4/6 node {pool[-1]} joined: growing")
        wait_until(lambda: at(4), timeout=300, interval=1, what="training at W=4")
        wait_until(lambda: (watcher.last().step or 0) >= steps // 2, timeout=600, interval=1,  # type: ignore[union-attr]
                   what=f"step {steps // 2}")
        leaving = pool.pop()
        pool_changed(f"node {leaving} reclaimed")
        say(f"5/6 reclaiming node {leaving}")
        faults.reclaim(sd, leaving, progress=lambda m: say(f"   {m}"))
        say("6/6 waiting for the job to finish")
        wait_until(lambda: (w := watcher.last()) is not None and w.phase in ("Succeeded", "Failed"), timeout=900,
                   interval=1, what="the job to finish")
        watcher.stop()
        operator.terminate()
        kube("delete", SHORT_NAME, NAME, "-n", JOB_NS, "--wait=false")
        keep = os.environ.get("DEMO_KEEP") == "1"
        if not keep:
            controlplane.down(sd, progress=lambda _: None)
    last = watcher.last()
    assert last is not None
    print("\n== timeline ==\n" + watcher.timeline() + "\n")
    picture = watcher.picture(PICTURE, f"{NAME}: world size follows the pool's capacity", capacity=capacity)
    print(f"== {NAME} {last.phase} in {time.monotonic() - started:.0f} s: step {last.step}, loss {last.loss:.3f} ==")
    print(f"picture of the run: {picture}")
    return 0 if last.phase == "Succeeded" else 1


if __name__ == "__main__":
    sys.exit(main())
