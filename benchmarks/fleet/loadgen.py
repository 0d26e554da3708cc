"""The load generator: it plays every job's trainers and the cluster's preemptions, and times each one.

- `FleetView` follows the jobs' published generations and the live worker pods with two watches (its
  own, as admin), the way the workers themselves follow their job's status.
- `Trainers` writes each job's progress report every `every` seconds (staggered), and at once when a
  job publishes a new generation, as rank 0's paced sink does (`moe_trainer.runtime.progress_pace`).
- `Preemptor` deletes R worker pods a second (graceful deletion: kwok removes each about 1 s later) and
  times each deletion to the job's next published generation.
- `Churn` replaces unrelated pods in another namespace, so what the operator does not filter shows.
- `NodeReclaims` takes simulated nodes away as a spot provider does, and grants fresh ones.
"""

from __future__ import annotations

import heapq
import itertools
import json
import random
import threading
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from dstj_api.contract import GROUP, INDEX_LABEL, JOB_LABEL, PROGRESS_KEY, ROLE_LABEL, VERSION
from dstj_operator.children import names
from dstj_operator.crd import PLURAL
from localcluster import fakenodes, faults
from localcluster.nodeagent.kubeapi import Api
from localcluster.state import StateDir

FROM_CACHE = {"resourceVersion": "0"}
"""List parameters that have the API server answer from its watch cache, not a read through to etcd: what the
bench lists is thousands of objects on a saturated server, and a watch from that list's version catches up."""
LIST_TIMEOUT = 120.0
"""Seconds a list of the whole fleet may take (a saturated API server sent 1,000 jobs in more than 30)."""

JOBS_PATH = f"/apis/{GROUP}/{VERSION}/namespaces/{{ns}}/{PLURAL}"


@dataclass
class FleetView:
    """Generations and live workers as the load generator's watches see them."""

    api: Api
    ns: str
    generation: dict[str, int] = field(default_factory=dict)
    world: dict[str, int] = field(default_factory=dict)
    workers: dict[str, dict[str, str]] = field(default_factory=lambda: defaultdict(dict))
    """job -> live (not terminating) worker pod name -> its index."""
    anomalies: list[str] = field(default_factory=list)
    """What must never be seen at any moment: a published generation going back, two live workers of one index."""
    on_generation: list[Any] = field(default_factory=list)
    """Callbacks (job, generation, world size) for each newly published generation."""
    lock: threading.Lock = field(default_factory=threading.Lock)
    stop: threading.Event = field(default_factory=threading.Event)

    def start(self) -> None:
        """Start both watches (daemon threads, ended by `stop`)."""
        for target in ((JOBS_PATH.format(ns=self.ns), FROM_CACHE, self._jobs_listed, self._job),
                       (f"/api/v1/namespaces/{self.ns}/pods", {"labelSelector": f"{ROLE_LABEL}=worker", **FROM_CACHE},
                        self._pods_listed, self._pod)):
            threading.Thread(target=self.api.watch, args=(*target, self.stop, LIST_TIMEOUT), daemon=True).start()

    def _jobs_listed(self, items: list[dict[str, Any]]) -> None:
        for j in items:
            self._job("ADDED", j)

    def _job(self, kind: str, obj: dict[str, Any]) -> None:
        name = obj["metadata"]["name"]
        m = (obj.get("status") or {}).get("membership") or {}
        gen, world = m.get("generation"), m.get("worldSize", 0)
        if kind == "DELETED" or gen is None:
            return
        with self.lock:
            if gen < self.generation.get(name, -1):
                self.anomalies.append(f"{name}: generation {gen} published after {self.generation[name]}")
            newer = gen > self.generation.get(name, -1)
            self.generation[name], self.world[name] = max(gen, self.generation.get(name, -1)), world
        if newer:
            for cb in self.on_generation:
                cb(name, gen, world)

    def _pods_listed(self, items: list[dict[str, Any]]) -> None:
        with self.lock:
            self.workers.clear()
        for p in items:
            self._pod("ADDED", p)

    def _pod(self, kind: str, obj: dict[str, Any]) -> None:
        meta = obj["metadata"]
        job, name = meta.get("labels", {}).get(JOB_LABEL), meta["name"]
        if job is None:
            return
        with self.lock:
            if kind == "DELETED" or meta.get("deletionTimestamp"):
                self.workers[job].pop(name, None)
            else:
                index = meta["labels"].get(INDEX_LABEL, "")
                twins = [n for n, i in self.workers[job].items() if i == index and n != name]
                if twins:
                    self.anomalies.append(f"{job}: live workers {name} and {twins[0]} both of index {index}")
                self.workers[job][name] = index

    def at_target(self, jobs: list[str], workers: int) -> int:
        """How many of `jobs` have a published generation of `workers` members."""
        with self.lock:
            return sum(1 for j in jobs if self.world.get(j) == workers)


class Trainers:
    """Progress reports for every job: one per `every` seconds each, and one at once per new generation.

    Sent by `threads` at once: a report waits on the API server's answer (0.5-1 s when it is saturated), so
    the 4 threads of before delivered 5.8 reports a second at N = 500 where 50 were due."""

    def __init__(self, view: FleetView, every: float, threads: int = 48) -> None:
        self.view, self.every = view, every
        self._due: list[tuple[float, int, str]] = []
        self._seq = itertools.count()
        self._cv = threading.Condition()
        self._steps: dict[str, int] = defaultdict(int)
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="trainer")
        self.sent = 0
        self.failed = 0
        view.on_generation.append(lambda job, gen, world: self._push(time.monotonic(), job))

    def add(self, job: str) -> None:
        """Start reporting for `job`, at a random point of the period (real jobs do not report in step)."""
        self._push(time.monotonic() + random.uniform(0, self.every), job, periodic=True)

    def report_all_from(self, step: int) -> None:
        """Send every job's report at once, its step (and every later one's) at least `step`: a marker
        that shows in a job's status only after a pass has mirrored the report sent now."""
        with self.view.lock:
            jobs = list(self.view.generation)
        for job in jobs:
            self._steps[job] = max(self._steps[job], step - 1)
            self._push(time.monotonic(), job)

    def _push(self, at: float, job: str, periodic: bool = False) -> None:
        with self._cv:
            # A periodic entry carries the job name; an immediate one is marked so it does not re-arm.
            heapq.heappush(self._due, (at, next(self._seq), job if periodic else "!" + job))
            self._cv.notify()

    def run(self) -> None:
        """Send reports as they come due until the view stops (call in a thread)."""
        while not self.view.stop.is_set():
            with self._cv:
                wait = self._due[0][0] - time.monotonic() if self._due else 0.5
                if wait > 0:
                    self._cv.wait(min(wait, 0.5))
                    continue
                _, _, entry = heapq.heappop(self._due)
            job = entry.removeprefix("!")
            if not entry.startswith("!"):
                self._push(time.monotonic() + self.every, job, periodic=True)
            self._pool.submit(self._report, job)

    def _report(self, job: str) -> None:
        with self.view.lock:
            gen, world = self.view.generation.get(job), self.view.world.get(job, 0)
        if gen is None or world < 1:
            return
        self._steps[job] += 1
        report = {"step": self._steps[job], "totalSteps": 1_000_000, "generation": gen, "worldSize": world,
                  "expertParallel": 1, "dataParallel": world, "loss": 3.0, "state": "running",
                  "updated": datetime.now(UTC).isoformat()}
        path = f"/api/v1/namespaces/{self.view.ns}/configmaps/{names({'metadata': {'name': job}})['progress']}"
        try:
            self.view.api.patch(path, {"data": {PROGRESS_KEY: json.dumps(report)}}, kind="merge-patch")
            self.sent += 1
        except Exception:
            self.failed += 1  # the ConfigMap may not exist yet on the first generation: the next report retries


@dataclass
class Preemptor:
    """Deletes `rate` worker pods a second, one job at a time, and times deletion -> next generation."""

    view: FleetView
    rate: float
    workers: int
    latencies: list[tuple[float, float]] = field(default_factory=list)
    """(time of the deletion, seconds until the job's next generation)."""
    pending: dict[str, tuple[float, int]] = field(default_factory=dict)
    """job -> (time of the deletion, the generation then) until a newer one is published."""
    deleted: int = 0
    active: threading.Event = field(default_factory=threading.Event)
    in_flight: int = 0
    """Deletions chosen and not yet answered (under the view's lock)."""

    def __post_init__(self) -> None:
        self.view.on_generation.append(self._published)

    def _published(self, job: str, gen: int, world: int) -> None:
        with self.view.lock:
            started = self.pending.get(job)
            if started is not None and gen > started[1]:
                del self.pending[job]
                self.latencies.append((started[0], time.monotonic() - started[0]))

    def run(self) -> None:
        """Delete while `active` is set, until the view stops (call in a thread). The deletions run in a pool:
        one after the other, a loaded API server's answer time (about 0.37 s at 100 jobs) capped the rate below R."""
        next_at = time.monotonic()
        with ThreadPoolExecutor(DELETERS, thread_name_prefix="preempt") as pool:
            while not self.view.stop.is_set():
                if not self.active.is_set() or self.rate <= 0:
                    self.view.stop.wait(0.2)
                    next_at = time.monotonic()
                    continue
                self.view.stop.wait(max(0.0, next_at - time.monotonic()))
                next_at += 1 / self.rate
                pool.submit(self._delete_one)

    def halt(self, timeout: float = 60.0) -> None:
        """Stop deleting, and return once no deletion is in flight: one submitted before (the loop submits after
        its wait) no longer lands after the caller has started checking that the fleet is whole."""
        self.active.clear()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.view.lock:
                if not self.in_flight:
                    return
            time.sleep(0.05)
        raise TimeoutError(f"{self.in_flight} pod deletions still unanswered after {timeout:.0f} s")

    def _delete_one(self) -> None:
        with self.view.lock:
            if not self.active.is_set():
                return
            # A job whose generation is whole and has no deletion still waiting for its next generation.
            ready = [j for j, w in self.view.world.items() if w == self.workers and j not in self.pending
                     and len(self.view.workers.get(j, {})) == self.workers]
            if not ready:
                return
            job = random.choice(ready)
            pod = random.choice(sorted(self.view.workers[job]))
            self.pending[job] = (time.monotonic(), self.view.generation[job])
            self.in_flight += 1
        try:
            self.view.api.delete(f"/api/v1/namespaces/{self.view.ns}/pods/{pod}")
            self.deleted += 1
        except Exception:
            with self.view.lock:
                self.pending.pop(job, None)
        finally:
            with self.view.lock:
                self.in_flight -= 1


DELETERS = 16
"""Deletions in flight at once at most (`Preemptor`)."""


@dataclass
class Churn:
    """Keeps `count` unrelated pods in namespace `ns`, replacing `rate` of them a second."""

    api: Api
    ns: str
    count: int
    rate: float
    stop: threading.Event
    _live: list[str] = field(default_factory=list)
    _names: itertools.count[int] = field(default_factory=itertools.count)

    def _create(self) -> None:
        name = f"churn-{next(self._names)}"
        self.api.post(f"/api/v1/namespaces/{self.ns}/pods", {
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": {"app": "churn"}},
            "spec": {"terminationGracePeriodSeconds": 1, "containers": [{"name": "c", "image": "unrelated"}]}})
        self._live.append(name)

    def fill(self) -> None:
        """Create the pods (before the measurement starts)."""
        with ThreadPoolExecutor(8) as pool:
            for f in [pool.submit(self._create) for _ in range(self.count)]:
                f.result()

    def run(self) -> None:
        """Replace pods at `rate` a second until stopped (call in a thread)."""
        next_at = time.monotonic()
        while self.rate > 0 and not self.stop.is_set():
            self.stop.wait(max(0.0, next_at - time.monotonic()))
            next_at += 1 / self.rate
            try:
                victim = self._live.pop(random.randrange(len(self._live)))
                self.api.delete(f"/api/v1/namespaces/{self.ns}/pods/{victim}")
                self._create()
            except Exception:  # the API server may be busy: churn is background load, not a measurement
                continue


@dataclass
class NodeReclaims:
    """Every `every` seconds while `active`: a fresh simulated node joins, then one of the others is reclaimed
    (cordoned, its pods deleted gracefully, the Node removed: `localcluster.faults.reclaim`), so a whole
    node's workers of many jobs go at once while the capacity stays."""

    sd: StateDir
    every: float
    stop: threading.Event
    active: threading.Event = field(default_factory=threading.Event)
    reclaimed: int = 0
    errors: list[str] = field(default_factory=list)
    _names: itertools.count[int] = field(default_factory=itertools.count)
    _busy: threading.Lock = field(default_factory=threading.Lock)

    def run(self) -> None:
        """Reclaim until stopped (call in a thread)."""
        while self.every > 0 and not self.stop.wait(self.every):
            with self._busy:
                if not self.active.is_set():
                    continue
                try:
                    victim = random.choice(fakenodes.names(self.sd))
                    fakenodes.add(self.sd, f"{fakenodes.PREFIX}granted-{next(self._names)}", taint=False)
                    faults.reclaim(self.sd, victim, progress=lambda _: None)
                    self.reclaimed += 1
                except Exception as e:  # said in the result: a reclaim that failed is not a fleet that broke
                    self.errors.append(f"{type(e).__name__}: {e}")

    def halt(self) -> None:
        """Stop reclaiming, and return once no reclaim is under way (as `Preemptor.halt`: none may land after
        the caller has started checking that the fleet is whole)."""
        self.active.clear()
        with self._busy:
            pass
