"""Prometheus metrics of one rank (prometheus-client), served on `train.metricsPort` + local rank.

Names are `dstj_trainer_*`; every series carries the rank. Recovery seconds are measured from the
previous generation's last finished step (rank 0 records it beside the checkpoints) to this
generation's first.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

from moe_trainer.membership import write_json_atomically

LAST_STEP_FILE = "last-step.json"


class TrainerMetrics:
    """The gauges a rank exports; a no-op registry when no port is configured."""

    def __init__(self, rank: int, port: int | None) -> None:
        self.registry = CollectorRegistry()
        labels = {"rank": str(rank)}

        def gauge(name: str, doc: str) -> Gauge:
            return Gauge(f"dstj_trainer_{name}", doc, list(labels), registry=self.registry).labels(**labels)

        self.step = gauge("step", "Optimizer steps finished.")
        self.loss = gauge("loss", "Mean token cross-entropy of the last step (nats).")
        self.tokens_per_second = gauge("tokens_per_second", "Training throughput over the last log interval.")
        self.max_violation = gauge("expert_max_violation", "max expert load / mean load - 1, worst MoE layer.")
        self.checkpoint_seconds = gauge("checkpoint_save_seconds", "Seconds training stalled for the last save.")
        self.last_checkpoint_step = gauge("last_checkpoint_step", "Step of the last completed checkpoint.")
        self.generation = gauge("generation", "Membership generation this rank runs in.")
        self.recovery_seconds = gauge(
            "recovery_seconds", "From the previous generation's last step to this generation's first."
        )
        self.restarts = Counter("dstj_trainer_restarts", "Generations seen before this one (restarts).",
                                list(labels), registry=self.registry).labels(**labels)
        if port is not None:
            start_http_server(port + int(os.environ.get("LOCAL_RANK", "0")), registry=self.registry)


def record_last_step(root: Path | None, generation: int, step: int) -> None:
    """Rank 0 notes when its last step finished, for the next generation's recovery time."""
    if root is not None:
        write_json_atomically(root / LAST_STEP_FILE, json.dumps({"generation": generation, "step": step,
                                                                 "time": time.time()}))


def previous_step_time(root: Path | None, generation: int) -> float | None:
    """When the last step of an earlier generation finished (None for a first start)."""
    if root is None:
        return None
    try:
        data = json.loads((root / LAST_STEP_FILE).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return float(data["time"]) if int(data["generation"]) < generation else None
