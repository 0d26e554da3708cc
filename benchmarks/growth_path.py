"""Where the time of an autoscaling resize goes: wall-clock moments from watch streams and the workers' own lines.

`PathRecorder` watches the pool's Nodes, the job and its worker pods (Kubernetes watches, so a change is seen
when the API server sends it, not at the next poll) and keeps the first time it saw each fact. `growth` and
`shrink` turn that record (plus the workers' own lines, which carry their wall-clock times: `ready to join` with
the newcomer's imports, data, model and optimizer times; `stopped at step` of the old group; `rank r of W` once the new
group formed; `resumed from step` with each member's parallel groups, model, storage check and checkpoint load)
into the steps of one resize, each as seconds since the node joined or was reclaimed. Every process runs on this
machine, so one clock serves all.
"""

from __future__ import annotations

import calendar
import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from kubernetes import client, config, watch

from dstj_api.contract import GROUP, INDEX_LABEL, JOB_LABEL, PLURAL, PROGRESS_KEY, ROLE_LABEL, VERSION
from localcluster.kubectl import Kubectl

GROWTH_STEPS = ("target raised", "pods created", "pods scheduled", "containers started",
                "workers ready to join", "pods Ready", "generation published", "old group stopped", "group formed",
                "checkpoint loaded", "first step written", "first step stored", "first step")
"""The growth path in order; each is the moment the last worker needed got there."""
SHRINK_STEPS = ("pods deleted", "generation published", "old group stopped", "group formed", "checkpoint loaded",
                "first step written", "first step stored", "first step")

_LINE = re.compile(r"^(\d\d):(\d\d):(\d\d\.\d+) \[([^\]]+)\] (.*)$")
_READY = re.compile(r"ready to join ([\d.]+) s after the process started \(interpreter and imports ([\d.]+) s, "
                    r"data ([\d.]+) s(?:, model and optimizer ([\d.]+) s)?; ([\d.]+) s of CPU\)")
_RESUMED = re.compile(r"resumed from step \d+ \(([\d.]+) s parallel groups, ([\d.]+) s model, ([\d.]+) s storage "
                      r"check, ([\d.]+) s checkpoint load\)")
_STOP_SAVE = re.compile(r"stopped at step \d+ \(stop checkpoint ([\d.]+) s\)")
RESUME_PARTS = ("parallel groups", "model", "storage check", "checkpoint load")
"""The parts of a member's way from the group formed to the state loaded, as its `resumed from step` line gives
them."""


@dataclass
class PodSeen:
    """When the watch first saw each fact of one worker pod."""

    created: float
    index: int
    scheduled: float | None = None
    started: float | None = None
    ready: float | None = None
    deleted: float | None = None


@dataclass
class PathRecorder:
    """Records Nodes (by label), the job and its worker pods from watch streams, in daemon threads."""

    kube: Kubectl
    namespace: str
    name: str
    node_label: str
    nodes_ready: dict[str, float] = field(default_factory=dict)
    pods: dict[str, PodSeen] = field(default_factory=dict)
    targets: list[tuple[float, int]] = field(default_factory=list)
    generations: list[tuple[float, int, int]] = field(default_factory=list)
    """(seen, generation, world size) of each published membership."""
    first_steps: list[tuple[float, int, int, float]] = field(default_factory=list)
    """(seen, generation, world size, written) of each generation's first progress report (written: its `updated`,
    when rank 0 wrote it right after the step)."""
    stored: dict[int, float] = field(default_factory=dict)
    """Generation -> when its first running report reached the progress ConfigMap (rank 0's write, before the
    operator mirrors it into the status)."""
    status: dict[str, Any] = field(default_factory=dict)
    """The job's status as last seen: waiting on it costs no request, where polling the API server from this machine
    would take CPU from the workers being timed."""
    _api: Any = None
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> PathRecorder:
        api = config.new_client_from_config(config_file=str(self.kube.kubeconfig))
        core, custom = client.CoreV1Api(api), client.CustomObjectsApi(api)
        selector = f"{JOB_LABEL}={self.name},{ROLE_LABEL}=worker"
        streams: list[tuple[Callable[..., Any], dict[str, Any], Callable[[str, dict[str, Any]], None]]] = [
            (core.list_node, {"label_selector": self.node_label}, self._node),
            (core.list_namespaced_pod, {"namespace": self.namespace, "label_selector": selector}, self._pod),
            (core.list_namespaced_config_map, {"namespace": self.namespace,
             "field_selector": f"metadata.name={self.name}-progress"}, self._report),
            (custom.list_namespaced_custom_object, {"group": GROUP, "version": VERSION, "plural": PLURAL,
             "namespace": self.namespace, "field_selector": f"metadata.name={self.name}"}, self._job),
        ]
        self._api = api
        for lister, kwargs, handle in streams:
            threading.Thread(target=self._follow, args=(lister, kwargs, handle), daemon=True).start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _follow(self, lister: Callable[..., Any], kwargs: dict[str, Any],
                handle: Callable[[str, dict[str, Any]], None]) -> None:
        while not self._stop.is_set():
            try:
                for event in watch.Watch().stream(lister, timeout_seconds=30, **kwargs):
                    obj = event["object"]
                    handle(event["type"], obj if isinstance(obj, dict) else self._api.sanitize_for_serialization(obj))
                    if self._stop.is_set():
                        return
            except Exception:  # a broken stream is listed and watched again; the first-seen times stay
                time.sleep(0.2)

    def _node(self, kind: str, node: dict[str, Any]) -> None:
        ready = any(c.get("type") == "Ready" and c.get("status") == "True"
                    for c in (node.get("status") or {}).get("conditions") or [])
        with self._lock:
            if kind == "DELETED":  # a later node may reuse the name
                self.nodes_ready.pop(node["metadata"]["name"], None)
            elif ready:
                self.nodes_ready.setdefault(node["metadata"]["name"], time.time())

    def _pod(self, kind: str, pod: dict[str, Any]) -> None:
        now, meta, status = time.time(), pod["metadata"], pod.get("status") or {}
        with self._lock:
            seen = self.pods.setdefault(meta["name"], PodSeen(now, int(meta["labels"].get(INDEX_LABEL, -1))))
            if (pod.get("spec") or {}).get("nodeName") and seen.scheduled is None:
                seen.scheduled = now
            if any("running" in (c.get("state") or {}) for c in status.get("containerStatuses") or []):
                seen.started = seen.started or now
            if any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or []):
                seen.ready = seen.ready or now
            if (kind == "DELETED" or meta.get("deletionTimestamp")) and seen.deleted is None:
                seen.deleted = now

    def _report(self, kind: str, cm: dict[str, Any]) -> None:
        now = time.time()
        try:
            report = json.loads((cm.get("data") or {}).get(PROGRESS_KEY) or "null") or {}
        except ValueError:
            return
        if report.get("state") == "running" and isinstance(report.get("generation"), int):
            with self._lock:
                self.stored.setdefault(report["generation"], now)

    def _job(self, kind: str, job: dict[str, Any]) -> None:
        now, status = time.time(), job.get("status") or {}
        m, p = status.get("membership") or {}, status.get("progress") or {}
        with self._lock:
            self.status = status
            target = status.get("targetReplicas")
            if target is not None and (not self.targets or self.targets[-1][1] != target):
                self.targets.append((now, target))
            if m.get("generation") is not None and (not self.generations or self.generations[-1][1] != m["generation"]):
                self.generations.append((now, m["generation"], m.get("worldSize", 0)))
            g = p.get("generation")
            if p.get("state") == "running" and g == m.get("generation") and g not in {f[1] for f in self.first_steps}:
                self.first_steps.append((now, g, p.get("worldSize", 0), _epoch(p.get("updated"))))

    def training_at(self, world: int, after: int) -> dict[str, Any] | None:
        """The progress report, once the current generation trains at `world` workers past step `after`."""
        with self._lock:
            p, gen = self.status.get("progress") or {}, (self.status.get("membership") or {}).get("generation", -1)
        ok = p.get("worldSize") == world and p.get("generation") == gen and p.get("step", 0) > after \
            and p.get("state") == "running"
        return p if ok else None

    def first_step_seen(self, world: int, after: float) -> float | None:
        """When the first report of the first generation at `world` workers published after `after` was seen."""
        with self._lock:
            gen = next((g for t, g, w in self.generations if t >= after and w == world), None)
            return next((t for t, g, _, _ in self.first_steps if g == gen), None) if gen is not None else None

    def growth(self, t0: float, world: int) -> dict[str, float]:
        """The growth to `world` workers after a node's Ready was seen at `t0` (seconds after t0; steps not seen
        left out)."""
        with self._lock:
            new = [p for n, p in self.pods.items() if p.created >= t0 - 0.5]
            gen = next(((t, g) for t, g, w in self.generations if t >= t0 and w == world), None)
            times: dict[str, float | None] = {
                "target raised": next((t for t, n in self.targets if t >= t0 and n == world), None),
                "pods created": _last(p.created for p in new),
                "pods scheduled": _last(p.scheduled for p in new),
                "containers started": _last(p.started for p in new),
                "pods Ready": _last(p.ready for p in new),
                "generation published": gen[0] if gen else None,
                "first step written": next((w for _, g, _, w in self.first_steps if gen and g == gen[1]), None),
                "first step stored": self.stored.get(gen[1]) if gen else None,
                "first step": next((t for t, g, _, _ in self.first_steps if gen and g == gen[1]), None),
            }
            names = [n for n, p in self.pods.items() if p.created >= t0 - 0.5]
        lines = {n: _log_lines(self.kube, self.namespace, n) for n in names}
        ready = [_ready_line(v) for v in lines.values()]
        times["workers ready to join"] = _last(r[0] for r in ready if r)
        out = {k: v - t0 for k, v in times.items() if v is not None}
        if ready and all(ready):
            out["newcomer: interpreter and imports (s, slowest)"] = max(r[2] for r in ready if r)
            out["newcomer: data (s, slowest)"] = max(r[3] for r in ready if r)
            out["newcomer: model and optimizer (s, slowest)"] = max(r[4] for r in ready if r)
            out["newcomer: CPU until ready (s, slowest)"] = max(r[5] for r in ready if r)
        if gen is not None:
            out |= self._after_publish(gen[1], t0)
        return out

    def _after_publish(self, generation: int, t0: float) -> dict[str, float]:
        """When the old group stopped, the new one formed and loaded the state (seconds after t0: the last member
        to get there), and the slowest member's part of each step from the group formed to the state loaded."""
        with self._lock:
            names = list(self.pods)
        lines = [line for n in names for line in _log_lines(self.kube, self.namespace, n)]
        out: dict[str, float] = {}
        for step, prefix in (("old group stopped", f"generation {generation - 1}: stopped at step"),
                             ("group formed", f"generation {generation}: rank "),
                             ("checkpoint loaded", f"generation {generation}: resumed from step")):
            when = max((t for t, text in lines if text.startswith(prefix)), default=None)
            if when is not None:
                out[step] = when - t0
        saves = [float(m[1]) for _, text in lines
                 if text.startswith(f"generation {generation - 1}: ") and (m := _STOP_SAVE.search(text))]
        if saves:
            out["old member: stop checkpoint (s, slowest)"] = max(saves)
        parts = [m.groups() for _, text in lines
                 if text.startswith(f"generation {generation}: ") and (m := _RESUMED.search(text))]
        for i, part in enumerate(RESUME_PARTS):
            if parts:
                out[f"member: {part} (s, slowest)"] = max(float(p[i]) for p in parts)
        return out

    def shrink(self, t0: float, world: int) -> dict[str, float]:
        """The shrink to `world` workers after a reclaim began at `t0` (seconds after t0)."""
        with self._lock:
            deleted = _last(p.deleted for p in self.pods.values() if p.deleted is not None and p.deleted >= t0)
            gen = next(((t, g) for t, g, w in self.generations if t >= t0 and w == world), None)
            first = next(((t, w) for t, g, _, w in self.first_steps if gen and g == gen[1]), None)
        out = {"pods deleted": deleted, "generation published": gen[0] if gen else None,
               "first step written": first[1] if first else None,
               "first step stored": self.stored.get(gen[1]) if gen else None, "first step": first[0] if first else None}
        shrunk = {k: v - t0 for k, v in out.items() if v is not None}
        return shrunk | (self._after_publish(gen[1], t0) if gen is not None else {})


def _epoch(stamp: str | None) -> float:
    from datetime import datetime

    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp() if stamp else 0.0


def _last(times: Iterator[float | None] | Any) -> float | None:
    found = list(times)
    return None if not found or any(t is None for t in found) else max(found)


def _log_lines(kube: Kubectl, ns: str, pod: str) -> list[tuple[float, str]]:
    """A worker's timestamped lines (wall clock, today's UTC date)."""
    out = kube("logs", pod, "-n", ns, check=False)
    day = time.gmtime()
    midnight = calendar.timegm((day.tm_year, day.tm_mon, day.tm_mday, 0, 0, 0))
    lines = []
    for line in out.stdout.splitlines():
        m = _LINE.match(line)
        if m:
            lines.append((midnight + int(m[1]) * 3600 + int(m[2]) * 60 + float(m[3]), m[5]))
    return lines


def _ready_line(lines: list[tuple[float, str]]) -> tuple[float, float, float, float, float, float] | None:
    """(when, since process start, interpreter and imports, data, model, CPU) of the worker's `ready to join` line
    (model 0 when the worker built it after joining)."""
    for t, text in lines:
        m = _READY.search(text)
        if m:
            return t, float(m[1]), float(m[2]), float(m[3]), float(m[4] or 0), float(m[5])
    return None


def table(title: str, steps: tuple[str, ...], rounds: list[dict[str, float]]) -> str:
    """A markdown table: each step's time after the trigger, per round and the median."""
    import statistics

    extra = sorted({k for r in rounds for k in r} - set(steps))
    rows = [f"| {title} | " + " | ".join(f"round {i + 1}" for i in range(len(rounds))) + " | median |",
            "|---|" + "---|" * (len(rounds) + 1)]
    for step in (*steps, *extra):
        values = [r.get(step) for r in rounds]
        known = [v for v in values if v is not None]
        cells = [f"{v:.1f}" if v is not None else "-" for v in values]
        rows.append(f"| {step} | " + " | ".join(cells) + f" | {statistics.median(known):.1f} |" if known else
                    f"| {step} | " + " | ".join(cells) + " | - |")
    return "\n".join(rows)
