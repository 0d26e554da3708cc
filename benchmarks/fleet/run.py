"""One fleet run: N jobs x W workers on simulated nodes, brought up, preempted, measured, then checked.

The phases: a private cluster with fake nodes (and `churn` unrelated pods in another namespace); the
operator alone for a baseline; N jobs created at once and brought to their target (every job's
generation has W members); then a steady window with the trainers reporting and R pod deletions a
second, in which every number is taken; then the deletions stop and the fleet must come back whole:
every job at its target, one live worker per index, every deletion followed by a new generation.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.fleet import cluster as fc
from benchmarks.fleet import takeover
from benchmarks.fleet.loadgen import (
    FROM_CACHE,
    JOBS_PATH,
    LIST_TIMEOUT,
    Churn,
    FleetView,
    NodeReclaims,
    Preemptor,
    Trainers,
)
from benchmarks.fleet.measure import (
    by_label,
    cpu_seconds,
    histogram,
    histogram_quantile,
    percentile,
    rss_mib,
    samples,
)
from benchmarks.fleet.report import table
from dstj_api.contract import INDEX_LABEL, JOB_LABEL, ROLE_LABEL
from localcluster.nodeagent.kubeapi import METADATA_ONLY
from localcluster.waiting import WaitTimeout, wait_until

NS, CHURN_NS = "fleet", "churn"
COMPONENTS = ("kube-apiserver", "etcd", "kwok", "kube-controller-manager", "kube-scheduler")
APF = "apiserver_flowcontrol_dispatched_requests_total"


@dataclass(frozen=True, slots=True, kw_only=True)
class FleetSpec:
    """What one run simulates."""

    jobs: int
    workers: int = 8
    deletions_per_s: float = 1.0
    """Worker pods deleted per second during the window (preemptions)."""
    report_every_s: float = 10.0
    """Seconds between two progress reports of one job (the trainers' paced sink)."""
    window_s: float = 60.0
    churn_pods: int = 0
    """Unrelated pods kept in another namespace."""
    churn_per_s: float = 0.0
    """Unrelated pods replaced per second."""
    pods_per_node: int = 500
    """How many pods each simulated node gets (fewer nodes: fewer Lease renewals)."""
    bring_up_timeout_s: float | None = None
    """How long the fleet may take to reach its target (None: `bring_up_timeout`)."""
    memory_breakdown: bool = False
    """Probe the operator's memory before the fleet and after the window and report its growth per job by part
    (glibc's heaps, Python's arenas, live objects by type; `benchmarks.fleet.memtrace`)."""
    tracemalloc: bool = False
    """With `memory_breakdown`: also run the operator under tracemalloc, for its Python memory by package (costs
    CPU and memory: a loaded machine's bring-up slowed several-fold)."""
    tight_apf: bool = False
    """Throttle the operator: its requests go to a priority level of 3 seats that answers 429 to the rest."""
    restart_apiserver: bool = False
    """Kill and restart the API server as the deletions start: every watch and connection drops."""
    reclaim_every_s: float = 0.0
    """Seconds between two node reclaims in the window (a fresh node joins, another is reclaimed with its
    pods); 0: none."""
    then_failover: bool = False
    """Run the operator as the leader beside a standby, and after the window and the check SIGKILL the leader on
    the same fleet (`takeover`): a failover at N without a second bring-up."""
    lease_seconds: int = 15
    """The leader's Lease duration, with `then_failover`."""


@dataclass
class FleetResult:
    """The numbers of one run, and what the correctness check found."""

    spec: FleetSpec
    numbers: dict[str, float] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    """Correctness failures: empty when every job came back whole."""


def _snapshot(c: fc.FleetCluster, op: fc.OperatorProcess) -> dict[str, Any]:
    pids = {name: c.pid(name) for name in COMPONENTS}
    return {"t": time.monotonic(), "op_cpu": cpu_seconds(op.proc.pid),
            "cpu": {n: cpu_seconds(p) for n, p in pids.items()},
            "apf": by_label(c.metrics(), APF, "flow_schema"), "op_metrics": op.metrics()}


def _window(before: dict[str, Any], after: dict[str, Any], spec: FleetSpec) -> dict[str, float]:
    """Rates and latencies between two snapshots."""
    dt = after["t"] - before["t"]
    out: dict[str, float] = {"window_s": dt, "operator_cores": (after["op_cpu"] - before["op_cpu"]) / dt}
    for name in COMPONENTS:
        out[f"{name}_cores"] = (after["cpu"][name] - before["cpu"][name]) / dt
    total = 0.0
    for verb in fc.VERBS:
        key = fc.FLOW_SCHEMA + verb
        rate = (after["apf"].get(key, 0.0) - before["apf"].get(key, 0.0)) / dt
        total += rate
        if rate or verb in ("get", "list", "patch", "create", "delete"):
            out[f"operator_{verb}_per_s"] = rate
    out["operator_requests_per_s"] = total
    received = {k: v - by_label(before["op_metrics"], "dstj_operator_watch_events_total", "resource").get(k, 0.0)
                for k, v in by_label(after["op_metrics"], "dstj_operator_watch_events_total", "resource").items()}
    events = sum(received.values()) / dt
    out["operator_events_received_per_s"] = events
    for resource, n in sorted(received.items()):
        out[f"operator_events_{resource}_per_s"] = n / dt
    out["operator_requests_per_event"] = total / events if events else math.nan
    held = [sum(v for _, v in samples(s["op_metrics"], "dstj_operator_status_writes_held_total"))
            for s in (before, after)]
    out["status_writes_held_per_s"] = (held[1] - held[0]) / dt
    h0 = histogram(before["op_metrics"], "dstj_operator_reconcile_seconds")
    h1 = histogram(after["op_metrics"], "dstj_operator_reconcile_seconds")
    out["reconcile_p50_s"] = histogram_quantile(h0, h1, 0.50)
    out["reconcile_p99_s"] = histogram_quantile(h0, h1, 0.99)
    out["reconciles_per_s"] = (h1.get(math.inf, 0.0) - h0.get(math.inf, 0.0)) / dt
    for until in ("handler", "pass", "status"):  # where a job's events wait inside the operator (`lag`)
        w0 = histogram(before["op_metrics"], "dstj_operator_event_wait_seconds", {"until": until})
        w1 = histogram(after["op_metrics"], "dstj_operator_event_wait_seconds", {"until": until})
        out[f"event_to_{until}_p50_s"] = histogram_quantile(w0, w1, 0.50)
        out[f"event_to_{until}_p99_s"] = histogram_quantile(w0, w1, 0.99)
    return out


def _bring_up(before: dict[str, Any], after: dict[str, Any], jobs: int) -> dict[str, float]:
    """What the bring-up cost: each component's CPU over it, and the API server's requests per job by flow schema
    (the operator's per verb, the scheduler's, kwok's, the controllers'): whose work sets its pace."""
    dt = after["t"] - before["t"]
    out = {f"bring_up {name} cores": (after["cpu"][name] - before["cpu"][name]) / dt for name in COMPONENTS}
    out["bring_up operator cores"] = (after["op_cpu"] - before["op_cpu"]) / dt
    passes = [histogram(s["op_metrics"], "dstj_operator_reconcile_seconds").get(math.inf, 0.0) for s in (before, after)]
    out["bring_up passes per job"] = (passes[1] - passes[0]) / jobs
    for schema, n in after["apf"].items():
        if n - before["apf"].get(schema, 0.0) >= jobs:  # at least one a job: the rest is background
            out[f"bring_up requests per job {schema}"] = (n - before["apf"].get(schema, 0.0)) / jobs
    return out


def _memory(op: fc.OperatorProcess, path: Path) -> dict[str, Any]:
    """The operator's memory probe now (it must run under `benchmarks.fleet.memtrace`)."""
    path.unlink(missing_ok=True)
    os.kill(op.proc.pid, signal.SIGUSR1)
    wait_until(path.exists, timeout=120, interval=0.5, what="the operator's memory probe")
    return dict(json.loads(path.read_text()))


def _per_job(before: dict[str, Any], after: dict[str, Any], jobs: int) -> dict[str, float]:
    """KiB per job of each part's growth between two probes; objects per job of the types that grew most."""
    out: dict[str, float] = {}

    def grew(key: str, b: float, a: float) -> None:
        out[f"memory_kib_per_job {key}"] = (a - b) / 1024 / jobs

    grew("RSS", before["rss"], after["rss"])
    for part, size in after["malloc"].items():
        grew(f"malloc {part}", before["malloc"].get(part, 0), size)
    grew("Python object arenas", before["python_arenas"], after["python_arenas"])
    if "total" in after:  # under tracemalloc
        grew("Python (tracemalloc), all", before["total"], after["total"])
        for part, size in after["by_group"].items():
            grew(f"Python (tracemalloc) {part}", before["by_group"].get(part, 0), size)
    out["threads"] = after["threads"]
    growth = {t: n - before["objects"].get(t, 0) for t, n in after["objects"].items()}
    for t, n in sorted(growth.items(), key=lambda kv: -kv[1])[:12]:
        out[f"objects_per_job {t}"] = n / jobs
    return out


BRING_UP_BASE_S, BRING_UP_PER_JOB_S = 600.0, 2.0
"""The default bring-up timeout: the API server paces a bring-up (about 30 writes a job), so it grows with N; 2 s a
job is about twice what a shared 2-core machine took at a load average of 3-5 (30 jobs in 25-36 s)."""
PROGRESS_EVERY_S = 30.0


def bring_up_timeout(spec: FleetSpec) -> float:
    """Seconds the fleet may take to reach its target: the spec's, or one that grows with the jobs."""
    if spec.bring_up_timeout_s is not None:
        return spec.bring_up_timeout_s
    return BRING_UP_BASE_S + BRING_UP_PER_JOB_S * spec.jobs


def _wait_whole(view: FleetView, names: list[str], spec: FleetSpec, timeout: float, what: str,
                progress: Callable[[str], None] | None = None) -> float:
    t0 = last = time.monotonic()

    def whole() -> bool:
        nonlocal last
        done = view.at_target(names, spec.workers)
        if progress is not None and time.monotonic() - last >= PROGRESS_EVERY_S:
            last = time.monotonic()
            progress(f"  {what}: {done}/{len(names)} after {last - t0:.0f} s (timeout {timeout:.0f} s)")
        return done == len(names)

    wait_until(whole, timeout=timeout, interval=0.5, max_interval=1.0,
               what=f"{what} (at target: {view.at_target(names, spec.workers)}/{len(names)}; a slower machine needs "
                    f"a longer --bring-up-timeout)")
    return time.monotonic() - t0


def create_fleet(c: fc.FleetCluster, view: FleetView, trainers: Trainers, spec: FleetSpec,
                 progress: Callable[[str], None] | None = None) -> tuple[list[str], float]:
    """Create the fleet's jobs, wait until every one is at its target (saying how many are, every 30 s), then
    hand them to the trainers' stand-in; return the job names and the seconds the bring-up took."""
    names = [f"job-{i:04d}" for i in range(spec.jobs)]
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda n: c.api.post(JOBS_PATH.format(ns=NS), fc.job(n, spec.workers)), names))
    up = _wait_whole(view, names, spec, bring_up_timeout(spec), "jobs at their target", progress)
    # The periodic reports start with the whole fleet up (a job reports at once on each new generation all the
    # same): at N = 1,000 on two cores, 300 jobs' reports slowed the other 700 jobs' bring-up, a set-up cost
    # that says nothing about the steady state the goals are about.
    for n in names:
        trainers.add(n)
    return names, up


def _check(c: fc.FleetCluster, view: FleetView, pre: Preemptor, names: list[str], spec: FleetSpec) -> list[str]:
    """What is wrong with the fleet now, read from the API server's watch cache (empty: nothing); the pods as their
    metadata alone (a list of 9,000 whole pods timed out on a saturated server)."""
    problems = []
    try:
        jobs = {j["metadata"]["name"]: j for j in c.api.get(JOBS_PATH.format(ns=NS), FROM_CACHE,
                                                            timeout=LIST_TIMEOUT).get("items") or []}
        pods = c.api.get(f"/api/v1/namespaces/{NS}/pods", {"labelSelector": f"{ROLE_LABEL}=worker", **FROM_CACHE},
                         timeout=LIST_TIMEOUT, accept=METADATA_ONLY)
    except Exception as e:  # a saturated API server times out lists of a thousand jobs: not whole yet, say why
        return [f"the fleet could not be read: {type(e).__name__}: {str(e)[:200]}"]
    per_index: dict[tuple[str, str], int] = {}
    for p in pods.get("items") or []:
        if not p["metadata"].get("deletionTimestamp"):
            labels = p["metadata"]["labels"]
            key = (labels[JOB_LABEL], labels[INDEX_LABEL])
            per_index[key] = per_index.get(key, 0) + 1
    for name in names:
        m = (jobs.get(name, {}).get("status") or {}).get("membership") or {}
        if m.get("worldSize") != spec.workers:
            problems.append(f"{name}: generation {m.get('generation')} has {m.get('worldSize')} members, "
                            f"not {spec.workers}")
        for i in range(spec.workers):
            n = per_index.get((name, str(i)), 0)
            if n != 1:
                problems.append(f"{name}: {n} live workers of index {i}")
    if pre.pending:
        problems.append(f"{len(pre.pending)} deletions were followed by no new generation: {sorted(pre.pending)[:5]}")
    return problems


def recover(c: fc.FleetCluster, view: FleetView, pre: Preemptor, names: list[str], spec: FleetSpec,
            what: str = "the fleet whole again") -> tuple[float, list[str]]:
    """Wait (up to 300 s) for the fleet to be whole with no deletion left without its generation; return the
    seconds it took and what is still wrong then (empty: nothing), read fresh from the API server."""
    t0 = time.monotonic()
    with contextlib.suppress(WaitTimeout):  # what is still wrong is returned as problems, not raised
        # Each check lists the whole fleet: every 1-2 s at a few jobs, every 10 s at a thousand.
        wait_until(lambda: not pre.pending and not _check(c, view, pre, names, spec), timeout=300,
                   interval=1, max_interval=max(2.0, spec.jobs / 100), what=what)
    return time.monotonic() - t0, _check(c, view, pre, names, spec) + view.anomalies


def _profile_apiserver(c: fc.FleetCluster, seconds: int, path: Path, progress: Callable[[str], None]) -> None:
    """Write the API server's CPU profile over the next `seconds` to `path` (call in a thread)."""
    try:
        path.write_bytes(c.cpu_profile(seconds))
        progress(f"  the API server's CPU profile over the window: {path} (go tool pprof -top {path})")
    except OSError as e:
        progress(f"  no CPU profile of the API server: {e}")


def run(spec: FleetSpec, log: Path, progress: Callable[[str], None] = print,
        operator_env: dict[str, str] | None = None, apiserver_profile: Path | None = None) -> FleetResult:
    """Run one fleet on a private cluster (started and stopped here) and return its numbers; with
    `apiserver_profile`, the API server's CPU profile over the steady window is written there."""
    result = FleetResult(spec)
    pods = spec.jobs * (spec.workers + 1) + spec.churn_pods
    fake_nodes = max(2, math.ceil(pods / spec.pods_per_node))
    with tempfile.TemporaryDirectory(prefix="dstj-fleet-") as tmp, \
            fc.private_cluster(Path(tmp) / "state", fake_nodes, lambda m: progress(f"  {m}")) as c:
        fc.namespace(c.api, NS)
        if spec.tight_apf:
            fc.throttle_operator(c.api)
        stop = threading.Event()
        churn = Churn(c.api, CHURN_NS, spec.churn_pods, spec.churn_per_s, stop)
        if spec.churn_pods:
            fc.namespace(c.api, CHURN_NS)
            churn.fill()
        trace = Path(tmp) / "memory.json" if spec.memory_breakdown else None
        env = (operator_env or {}) | (takeover.elected(NS, spec.lease_seconds, takeover.LEADER)
                                      if spec.then_failover else {})
        with fc.operator(c, log, env, memtrace=trace, tracemalloc=spec.tracemalloc) as op, \
                contextlib.ExitStack() as standby_stack:
            standby = None
            if spec.then_failover:
                wait_until(lambda: takeover.holder(c, NS) == takeover.LEADER, timeout=60,
                           what=f"{takeover.LEADER} to hold the Lease")
                standby = standby_stack.enter_context(fc.operator(
                    c, log.with_name(log.stem + "-standby.log"),
                    (operator_env or {}) | takeover.elected(NS, spec.lease_seconds, takeover.STANDBY)))
            time.sleep(3)  # the operator's start-up (listing, watches) settles before the baseline
            base_rss = rss_mib(op.proc.pid)
            base_memory = _memory(op, trace) if trace else None
            view = FleetView(c.api, NS, stop=stop)
            trainers = Trainers(view, spec.report_every_s)
            pre = Preemptor(view, spec.deletions_per_s, spec.workers)
            view.start()
            reclaims = NodeReclaims(c.sd, spec.reclaim_every_s, stop)
            threads = [threading.Thread(target=t, daemon=True)
                       for t in (trainers.run, pre.run, churn.run, reclaims.run)]
            for t in threads:
                t.start()
            cpu0, before_up = cpu_seconds(op.proc.pid), _snapshot(c, op)
            progress(f"  creating {spec.jobs} jobs x {spec.workers} workers ({pods} pods on {fake_nodes} fake nodes)")
            names, up = create_fleet(c, view, trainers, spec, progress)
            result.numbers |= _bring_up(before_up, _snapshot(c, op), spec.jobs)
            result.numbers |= {"jobs": spec.jobs, "workers": spec.workers, "pods": pods, "fake_nodes": fake_nodes,
                               "bring_up_s": up, "operator_cpu_s_bring_up": cpu_seconds(op.proc.pid) - cpu0,
                               "operator_rss_mib_baseline": base_rss}
            progress(f"  all {spec.jobs} jobs at target in {up:.1f} s; steady window of {spec.window_s:.0f} s with "
                     f"{spec.deletions_per_s}/s deletions")
            pre.active.set()
            reclaims.active.set()
            rejected = 0.0
            if spec.restart_apiserver:
                rejected = fc.rejected(c.metrics())  # its counters start again from zero
                progress("  restarting the API server: every watch drops")
                fc.restart_apiserver(c, lambda m: progress(f"  {m}"))
            time.sleep(min(10.0, spec.window_s / 4))  # warm-up: the first deletions' generations in flight
            before, peak = _snapshot(c, op), 0.0
            if apiserver_profile is not None:
                threading.Thread(target=_profile_apiserver, daemon=True,
                                 args=(c, int(spec.window_s) - 5, apiserver_profile, progress)).start()
            first_deletion, sent0, deleted0 = len(pre.latencies), trainers.sent, pre.deleted
            while time.monotonic() - before["t"] < spec.window_s:
                peak = max(peak, rss_mib(op.proc.pid))
                time.sleep(1)
            after = _snapshot(c, op)
            pre.halt()
            reclaims.halt()
            # What the load generator delivered: a saturated API server slows its reports and deletions too.
            result.numbers |= {"reports_per_s": (trainers.sent - sent0) / (after["t"] - before["t"]),
                               "deletions_per_s": (pre.deleted - deleted0) / (after["t"] - before["t"])}
            if trace and base_memory:
                memory = _memory(op, trace)
                result.numbers |= _per_job(base_memory, memory, spec.jobs)
                kept = log.with_name(log.stem + "-memory.json")
                kept.write_text(json.dumps({"before": base_memory, "after": memory}, indent=1) + "\n")
                progress(f"  memory probes (objects by type and, with --tracemalloc, where they came from): {kept}")
            lat = [s for _, s in pre.latencies[first_deletion:]]
            rss = rss_mib(op.proc.pid)
            result.numbers |= _window(before, after, spec) | {
                "operator_rss_mib": rss, "operator_rss_mib_peak": max(peak, rss),
                "operator_rss_kib_per_job": (max(peak, rss) - base_rss) * 1024 / spec.jobs,
                "deletions_in_window": len(lat), "deletion_to_generation_p50_s": percentile(lat, 50),
                "deletion_to_generation_p99_s": percentile(lat, 99), "reports_sent": trainers.sent}
            # Kept before anything else can fail: the recovery and the failover read a saturated API server.
            progress("  the window's numbers:\n" + table([result]))
            progress("  deletions stopped; waiting for the fleet to be whole again")
            # Whatever is still wrong at the end is reported as a problem, with the window's numbers kept.
            result.numbers["recover_s"], result.problems = recover(c, view, pre, names, spec)
            with contextlib.suppress(OSError, RuntimeError):  # counters only: a busy server may not answer
                result.numbers["operator_requests_rejected_429"] = rejected + fc.rejected(c.metrics())
            if op.proc.poll() is not None:
                result.problems.append(f"the operator exited with {op.proc.returncode}; see {log}")
            else:
                with contextlib.suppress(OSError, RuntimeError):
                    result.numbers["operator_pass_retries"] = sum(
                        by_label(op.metrics(), "dstj_operator_pass_retries_total", "cause").values())
            if standby is not None:
                # A fleet the simulator has not made whole again (kwok behind on 9,000 pods) still measures the
                # takeover: every job's pass under the new leader, no duplicate worker; its problems stay reported.
                progress(f"  {'fleet whole' if not result.problems else f'{len(result.problems)} problems left'}; "
                         "now the failover: SIGKILL the leader under deletions")
                numbers = takeover.kill_leader(c, NS, names, op, standby, trainers, pre, bring_up_timeout(spec),
                                               progress)
                numbers["recover_s"], after = recover(c, view, pre, names, spec,
                                                      "the fleet whole again after the failover")
                result.problems += after
                result.numbers |= {f"failover {k}": v for k, v in numbers.items()}
                result.problems += takeover.problems(c, NS, names, standby)
            result.numbers["nodes_reclaimed"] = reclaims.reclaimed
            result.problems += [f"a node reclaim failed: {e}" for e in reclaims.errors]
            result.numbers["deletions_total"] = pre.deleted
            result.numbers["deletions_followed_by_a_generation"] = len(pre.latencies)
            stop.set()
    return result
