"""Measure the local cluster: cached ``up`` with nodes, pod start latency, agent memory per pod.

``run()`` starts a private cluster (its own state directory, ports and pod network, so a cluster
you are using is not touched) with 5 process nodes, creates 100 pods in one burst through the
API, and times each from its create call to the moment a watch sees it ``Running`` (the kubelet's
status write after the process started). It reads the agents' resident memory before and after,
deletes the pods, stops the cluster, and returns (and prints) the numbers. Binaries must be built
already (``python -m localcluster build``): the cold build is measured elsewhere.

``python -m localcluster.bench [--nodes 5] [--pods 100]``
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from localcluster import controlplane, nodes, procs
from localcluster.nodeagent.kubeapi import Api
from localcluster.state import StateDir
from localcluster.waiting import wait_until

NS = "bench"


def _rss_kib(pid: int) -> int:
    """Resident memory of one process, KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _agents_rss_kib(sd: StateDir) -> int:
    """Resident memory of all node agents together, KiB."""
    total = 0
    for rec in procs.load_all(sd.procs):
        if rec.name.startswith(nodes.AGENT) and procs.is_alive(rec):
            total += _rss_kib(rec.pid)
    return total


def _pod(i: int) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": f"p{i:03d}", "labels": {"app": "bench"}},
            "spec": {"terminationGracePeriodSeconds": 1,
                     "containers": [{"name": "main", "image": "pause", "command": ["sleep", "3600"],
                                     "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}}}]}}


def _percentile(xs: list[float], q: float) -> float:
    """Nearest-rank percentile (the 99th of 100 values is the second largest)."""
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, math.ceil(q / 100 * len(s)) - 1))]


def _start_latencies(api: Api, count: int) -> list[float]:
    """Create ``count`` pods at once; return each one's create-to-Running seconds."""
    created: dict[str, float] = {}
    running: dict[str, float] = {}
    stop = threading.Event()

    def seen(etype: str, obj: dict[str, Any]) -> None:
        name = obj["metadata"]["name"]
        if obj.get("status", {}).get("phase") == "Running" and name not in running:
            running[name] = time.monotonic()

    def listed(items: list[dict[str, Any]]) -> None:
        for o in items:
            seen("ADDED", o)

    watcher = threading.Thread(target=api.watch, args=(f"/api/v1/namespaces/{NS}/pods", {}, listed, seen, stop),
                               daemon=True)
    watcher.start()
    for i in range(count):
        body = _pod(i)
        created[body["metadata"]["name"]] = time.monotonic()
        api.post(f"/api/v1/namespaces/{NS}/pods", body)
    wait_until(lambda: len(running) == count, timeout=120, what=f"{count} pods to be Running", interval=0.05)
    stop.set()
    return [running[n] - created[n] for n in created]


def run(node_count: int = 5, pod_count: int = 100) -> dict[str, float]:
    """Run the benchmark on a private cluster and return (and print) its numbers.

    Where process nodes cannot run (not root, no ``ip``/``unshare``) it prints why and returns {}.
    """
    why = nodes.prerequisites()
    if why is not None:
        print(f"localcluster bench skipped: {why}")
        return {}
    out: dict[str, float] = {"nodes": node_count, "pods": pod_count}
    with tempfile.TemporaryDirectory(prefix="localcluster-bench-") as tmp:
        sd = StateDir(Path(tmp) / "state")
        try:
            t0 = time.monotonic()
            kubeconfig = controlplane.up(sd, progress=lambda _: None, nodes_count=node_count)
            out["up_fresh_state_s"] = time.monotonic() - t0
            t0 = time.monotonic()
            controlplane.up(sd, progress=lambda _: None, nodes_count=node_count)
            out["up_when_running_s"] = time.monotonic() - t0
            api = Api(kubeconfig)
            api.post("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}})
            wait_until(lambda: _has_default_sa(api), timeout=30, what="the bench namespace's ServiceAccount")
            before = _agents_rss_kib(sd)
            lat = _start_latencies(api, pod_count)
            after = _agents_rss_kib(sd)
            out |= {"start_p50_s": statistics.median(lat), "start_p99_s": _percentile(lat, 99),
                    "start_max_s": max(lat), "agents_rss_mib_idle": before / 1024,
                    "agents_rss_mib_with_pods": after / 1024, "agent_kib_per_pod": (after - before) / pod_count}
            t0 = time.monotonic()
            api.delete(f"/api/v1/namespaces/{NS}/pods", None)
            wait_until(lambda: not api.get(f"/api/v1/namespaces/{NS}/pods").get("items"), timeout=120,
                       what="the pods to be deleted")
            out["delete_all_pods_s"] = time.monotonic() - t0
        finally:
            t0 = time.monotonic()
            controlplane.down(sd, progress=lambda _: None)
            out["down_s"] = time.monotonic() - t0
    for k, v in out.items():
        print(f"{k:28} {v:10.3f}" if isinstance(v, float) else f"{k:28} {v:10}")
    return out


def _has_default_sa(api: Api) -> bool:
    try:
        api.get(f"/api/v1/namespaces/{NS}/serviceaccounts/default")
        return True
    except Exception:
        return False


def main(argv: list[str] | None = None) -> int:
    """Command line: run the benchmark, print the numbers, and write them as JSON if asked."""
    p = argparse.ArgumentParser(prog="python -m localcluster.bench", description=__doc__)
    p.add_argument("--nodes", type=int, default=5)
    p.add_argument("--pods", type=int, default=100)
    p.add_argument("--json", type=Path, help="also write the numbers to this file")
    args = p.parse_args(argv)
    numbers = run(args.nodes, args.pods)
    if args.json:
        args.json.write_text(json.dumps(numbers, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
