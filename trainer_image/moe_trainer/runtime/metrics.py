"""Prometheus metrics of one rank (prometheus-client), served on `train.metricsPort` + local rank.

Names are `dstj_trainer_*`; every series carries the rank. Recovery seconds are measured from the
previous generation's last finished step (rank 0 records it beside the checkpoints) to this
generation's first.
"""

from __future__ import annotations

import json
import os
import time

from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

from moe_trainer.checkpoint.storage import CheckpointStorage

LAST_STEP_FILE = "last-step.json"


class TrainerMetrics:
    """The gauges a rank exports; a no-op registry when no port is configured.

    A process that reconfigures in place keeps one registry and server and re-labels its series with
    each generation's rank (`bind`).
    """

    def __init__(self, rank: int, port: int | None) -> None:
        self.registry = CollectorRegistry()

        def gauge(name: str, doc: str) -> Gauge:
            return Gauge(f"dstj_trainer_{name}", doc, ["rank"], registry=self.registry)

        self._gauges = {
            "step": gauge("step", "Optimizer steps finished."),
            "loss": gauge("loss", "Mean token cross-entropy of the last step (nats)."),
            "tokens_per_second": gauge("tokens_per_second", "Training throughput over the last log interval."),
            "max_violation": gauge("expert_max_violation", "max expert load / mean load - 1, worst MoE layer."),
            "checkpoint_seconds": gauge("checkpoint_save_seconds", "Seconds training stalled for the last save."),
            "last_checkpoint_step": gauge("last_checkpoint_step", "Step of the last completed checkpoint."),
            "generation": gauge("generation", "Membership generation this rank runs in."),
            "mtp_loss": gauge("mtp_loss", "Mean token cross-entropy of the MTP modules in the last step (nats)."),
            "mtp_accuracy": gauge(
                "mtp_accuracy", "Share of the last step's extra tokens (t+2) the first MTP module predicted right."
            ),
            "recovery_seconds": gauge(
                "recovery_seconds", "From the previous generation's last step to this generation's first."
            ),
        }
        self._restarts = Counter("dstj_trainer_restarts", "Generations seen before this one (restarts).",
                                 ["rank"], registry=self.registry)
        self._rank: int | None = None
        self._restart_count = 0
        self.bind(rank)
        if port is not None:
            start_http_server(port + int(os.environ.get("LOCAL_RANK", "0")), registry=self.registry)

    def bind(self, rank: int) -> None:
        """Export under `rank` from now on (a new generation may seat this process elsewhere).

        The series of the old rank go: every gauge is set again within a step, and the restart count
        carries over.
        """
        if rank == self._rank:
            return
        if self._rank is not None:
            for family in (*self._gauges.values(), self._restarts):
                family.remove(str(self._rank))
        self._rank = rank
        self._restarts.labels(rank=str(rank)).inc(self._restart_count)
        g = {name: family.labels(rank=str(rank)) for name, family in self._gauges.items()}
        self.step, self.loss, self.tokens_per_second = g["step"], g["loss"], g["tokens_per_second"]
        self.max_violation, self.checkpoint_seconds = g["max_violation"], g["checkpoint_seconds"]
        self.last_checkpoint_step, self.generation = g["last_checkpoint_step"], g["generation"]
        self.recovery_seconds = g["recovery_seconds"]
        self.mtp_loss, self.mtp_accuracy = g["mtp_loss"], g["mtp_accuracy"]
        self._restart_series = self._restarts.labels(rank=str(rank))

    def count_restarts(self, n: int) -> None:
        """Count `n` more generations before the current one."""
        self._restart_count += n
        self._restart_series.inc(n)


def record_last_step(root: CheckpointStorage | None, generation: int, step: int) -> None:
    """Rank 0 notes when its last step finished, for the next generation's recovery time."""
    if root is not None:
        root.write_text(LAST_STEP_FILE, json.dumps({"generation": generation, "step": step, "time": time.time()}))


def previous_step_time(root: CheckpointStorage | None, generation: int) -> float | None:
    """When the last step of an earlier generation finished (None for a first start)."""
    text = root.read_text(LAST_STEP_FILE) if root is not None else None
    if not text:
        return None
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        return None
    return float(data["time"]) if int(data["generation"]) < generation else None
