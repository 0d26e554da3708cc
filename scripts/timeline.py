"""Watch a DeepSeekTrainingJob and tell its story: a readable timeline and a picture of the run.

`JobWatcher` polls the job's status and Events through kubectl (any cluster) in a thread and keeps
what changed: phase, membership generation and size, layout, step and loss, preemptions. `make demo`
prints the timeline and draws the picture; the e2e suite asserts on the same record.

The world size of each step is exact, not the one of the next report (which comes up to `logEvery`
steps later): every report names its generation and the step that generation resumed from, so
`world_segments` knows which group ran every step, including steps a group re-ran after a failure.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dstj_api.contract import PLURAL
from localcluster.kubectl import Kubectl


@dataclass(frozen=True, slots=True)
class Span:
    """What one generation trained: the steps after `start` (the step it resumed from), with `world` workers."""

    generation: int
    start: int
    world: int


def world_segments(spans: Iterable[Span]) -> list[tuple[int, int]]:
    """(start, world) pairs in step order: steps start+1 .. the next pair's start ran with `world` workers.

    A newer generation owns every step after the one it resumed from, also steps an older group had
    run past that point before it failed (they were trained again, and only the new run counts).
    """
    segments: list[tuple[int, int]] = []
    for span in sorted(spans, key=lambda s: s.generation):
        while segments and segments[-1][0] >= span.start:
            segments.pop()
        if not segments or segments[-1][1] != span.world:
            segments.append((span.start, span.world))
    return segments


def world_at(segments: list[tuple[int, int]], step: int) -> int | None:
    """The number of workers that ran `step` (steps count from 1), or None before any report."""
    return next((world for start, world in reversed(segments) if start < step), None)


@dataclass(frozen=True, slots=True)
class Sample:
    """One observation of the job's status."""

    t: float
    phase: str
    generation: int | None
    members: int | None
    step: int | None
    loss: float | None
    world: int | None
    """World size the trainer reported with `step` (the group that ran it)."""
    trained_generation: int | None
    """Generation of the group that reported `step`."""
    start_step: int | None
    """The step that group resumed from (its report's `generationStartStep`; None from older trainers)."""
    layout: str | None
    preemptions: int
    crashes: int
    checkpoint: int | None
    tokens_per_second: float | None = None
    """The trainer's steady tokens/s for its generation, else its last interval's."""


@dataclass
class JobWatcher:
    """Records a job's status and Events every `interval` seconds until `stop()`."""

    kube: Kubectl
    namespace: str
    name: str
    interval: float = 0.3
    samples: list[Sample] = field(default_factory=list)
    lines: list[tuple[float, str]] = field(default_factory=list)
    marks: list[tuple[float, str]] = field(default_factory=list)
    """Moments the caller wants on the timeline and the picture (e.g. "node reclaimed")."""
    _seen_events: set[str] = field(default_factory=set)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    start_time: float = field(default_factory=time.monotonic)

    def start(self) -> JobWatcher:
        """Start polling in a daemon thread."""
        self._thread = threading.Thread(target=self._run, name="job-watcher", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop polling (after one last observation)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
        self._observe()

    def mark(self, text: str) -> None:
        """Put a moment of the caller's on the timeline."""
        now = time.monotonic() - self.start_time
        self.marks.append((now, text))
        self.lines.append((now, f"** {text}"))

    def last(self) -> Sample | None:
        """The newest observation."""
        return self.samples[-1] if self.samples else None

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self._observe()
            except Exception as e:  # a slow or restarting API server must not end the record
                self.lines.append((time.monotonic() - self.start_time, f"(could not read the job: {e})"))

    def _observe(self) -> None:
        now = time.monotonic() - self.start_time
        out = self.kube("get", PLURAL, self.name, "-n", self.namespace, "-o", "json", check=False)
        if out.returncode != 0:
            return
        status: dict[str, Any] = json.loads(out.stdout).get("status") or {}
        m, p = status.get("membership") or {}, status.get("progress") or {}
        s = Sample(t=now, phase=status.get("phase", "Pending"), generation=m.get("generation"),
                   members=m.get("worldSize"), step=p.get("step"), loss=p.get("loss"), world=p.get("worldSize"),
                   layout=status.get("layout"), trained_generation=p.get("generation"),
                   start_step=p.get("generationStartStep"),
                   preemptions=status.get("preemptions", 0),
                   crashes=status.get("crashes", 0), checkpoint=p.get("lastCheckpointStep"),
                   tokens_per_second=p.get("steadyTokensPerSecond") or p.get("tokensPerSecond"))
        prev = self.last()
        if prev is None or s.phase != prev.phase:
            self.lines.append((now, f"phase {s.phase}"))
        if s.generation is not None and (prev is None or s.generation != prev.generation):
            change = "" if prev is None or prev.members is None or s.members is None else (
                " (shrink)" if s.members < prev.members else " (grow)" if s.members > prev.members else "")
            self.lines.append((now, f"generation {s.generation}: {s.members} workers{change}"))
        if s.step is not None and (prev is None or prev.trained_generation != s.trained_generation):
            start = s.step if s.start_step is None else s.start_step
            self.lines.append((now, f"training at W={s.world} layout {p.get('expertParallel')}x"
                                    f"{p.get('dataParallel')} (EPxDP) from step {start}"))
        if prev is not None and s.checkpoint is not None and s.checkpoint != prev.checkpoint:
            self.lines.append((now, f"checkpoint committed at step {s.checkpoint}"))
        if prev is None or s != prev:
            self.samples.append(s)
        self._events(now)

    def _events(self, now: float) -> None:
        out = self.kube("get", "events", "-n", self.namespace, "--field-selector",
                        f"involvedObject.name={self.name}", "-o", "json", check=False)
        if out.returncode != 0:
            return
        for e in sorted(json.loads(out.stdout)["items"], key=lambda e: e["metadata"]["creationTimestamp"]):
            uid = e["metadata"]["uid"]
            if uid not in self._seen_events:
                self._seen_events.add(uid)
                self.lines.append((now, f"event {e['reason']}: {e['message']}"))

    def spans(self) -> list[Span]:
        """What each generation that reported trained. A report without `generationStartStep` (an older
        trainer) counts from the first step it reported: up to `logEvery` steps late, as before the field."""
        first: dict[int, Span] = {}
        for s in self.samples:
            if s.trained_generation is None or s.step is None or s.world is None:
                continue
            g, start = s.trained_generation, s.start_step if s.start_step is not None else s.step - 1
            if g not in first or start < first[g].start:
                first[g] = Span(g, start, s.world)
        return list(first.values())

    def timeline(self) -> str:
        """The record as text, one line per moment, with step and loss at that moment."""
        rows = []
        for t, text in sorted(self.lines, key=lambda x: x[0]):
            at = max((s for s in self.samples if s.t <= t), key=lambda s: s.t, default=None)
            where = "" if at is None or at.step is None else f"step {at.step:>4}  loss {at.loss or 0:6.3f}  "
            rows.append(f"[{t:7.1f}s] {where}{text}")
        return "\n".join(rows)

    def picture(self, path: Path, title: str, capacity: list[tuple[float, int]] | None = None) -> Path:
        """Loss and world size over steps, with the caller's marks (e.g. a preemption) drawn in; with `capacity`
        (seconds since the start, workers the cluster fits), that too and a panel of tokens/s."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        trained = [s for s in self.samples if s.step is not None and s.loss is not None]
        rows = 3 if capacity else 2
        fig, axes = plt.subplots(rows, 1, sharex=True, figsize=(9, 3 * rows))
        ax_loss, ax_world = axes[0], axes[1]
        ax_loss.plot([s.step for s in trained], [s.loss for s in trained], color="tab:blue")
        ax_loss.set_ylabel("training loss (nats)")
        ax_loss.set_title(title)
        spans = self.spans()
        segments = world_segments(spans)
        end = max([s.step or 0 for s in trained] + [x for x, _ in segments] + [0])
        if segments:
            ax_world.step([x for x, _ in segments] + [end], [w for _, w in segments] + [segments[-1][1]],
                          where="post", color="tab:green", label="workers training")
        # A published generation is drawn from the step it resumed from when it trained (else where it was seen):
        # the step seen when the watcher read it is a report's, up to `logEvery` steps late.
        starts = {span.generation: span.start for span in spans}
        published = sorted((starts.get(s.generation, s.step) if s.generation is not None else s.step, s.members)
                           for s in self.samples if s.step is not None and s.members is not None)
        if published:
            ax_world.step([x for x, _ in published] + [end], [m for _, m in published] + [published[-1][1]],
                          where="post", color="tab:orange", linestyle="--", label="members published")
        if capacity:
            fits = [(self._step_at(t, trained), n) for t, n in capacity]
            ax_world.step([x for x, _ in fits] + [end], [n for _, n in fits] + [fits[-1][1]], where="post",
                          color="tab:gray", linestyle=":", label="workers the pool fits")
            ax_tps = axes[2]
            rated = [s for s in trained if s.tokens_per_second]
            ax_tps.plot([s.step for s in rated], [s.tokens_per_second for s in rated], color="tab:purple")
            ax_tps.set_ylabel("tokens/s")
            ax_tps.set_xlabel("step")
        ax_world.set_ylabel("world size")
        top = max([s.members or 0 for s in self.samples] + [s.world or 0 for s in self.samples] + [1])
        ax_world.set_ylim(0, top + 1)
        ax_world.set_yticks(range(top + 2))
        ax_world.set_xlabel("step")
        ax_world.legend(loc="lower left")
        for t, text in self.marks:
            at = max((s for s in trained if s.t <= t), key=lambda s: s.t, default=None)
            if at is not None:
                for ax in axes:
                    ax.axvline(at.step, color="tab:red", linestyle=":")
                ax_loss.annotate(text, (at.step, ax_loss.get_ylim()[1]), color="tab:red", fontsize=8,
                                 ha="left", va="top", rotation=90)
        fig.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=100)
        plt.close(fig)
        return path

    @staticmethod
    def _step_at(t: float, trained: list[Sample]) -> int:
        """The step the job had reached at `t` seconds (0 before its first report)."""
        at = max((s for s in trained if s.t <= t), key=lambda s: s.t, default=None)
        return at.step or 0 if at is not None else 0
