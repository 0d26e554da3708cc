"""The DeepSeekTrainingJob spec: what users write, as pydantic models (the CRD is generated from them).

Field names are camelCase on the wire. Cross-field rules are data (`RULES`, see `dstj_api.rules`):
pydantic checks them here, so the operator never acts on a spec the API server would refuse (e.g. one
created before a CRD upgrade), and `crd.py` renders the same rules as CEL for the API server.
"""

from __future__ import annotations

from typing import Any, ClassVar, Self

from pydantic import Field, model_validator

from dstj_api import TrainerConfig
from dstj_api.lenient import read_lenient_naming
from dstj_api.rules import Filled, Gcd, IsInt, Larger, Not, Rule, all_of, any_of, enforce, f, implies, lit
from dstj_api.wire import WireModel


class PodOverrides(WireModel):
    """What a user may set on worker pods (merged into the pods the operator builds)."""

    resources: dict[str, Any] | None = Field(None, description="Container resources (requests/limits).")
    node_selector: dict[str, str] | None = Field(None, description="Pod nodeSelector.")
    tolerations: list[dict[str, Any]] | None = Field(None, description="Extra pod tolerations.")
    affinity: dict[str, Any] | None = Field(None, description="Pod affinity.")
    topology_spread_constraints: list[dict[str, Any]] | None = Field(None, description="Pod topology spread.")
    priority_class_name: str | None = Field(None, description="Pod priorityClassName.")
    env: list[dict[str, Any]] | None = Field(None, description="Extra container env entries.")
    volumes: list[dict[str, Any]] | None = Field(None, description="Extra pod volumes.")
    volume_mounts: list[dict[str, Any]] | None = Field(None, description="Extra container volumeMounts.")
    labels: dict[str, str] | None = Field(None, description="Extra pod labels (e.g. a Kueue queue name).")
    annotations: dict[str, str] | None = Field(None, description="Extra pod annotations.")


class CheckpointStorage(WireModel):
    """Where checkpoints live: a PVC (shared by all workers), a host path, or an fsspec URL.

    How often and how many are kept is the trainer's (`trainer.checkpoint.interval`, `.keep`).
    """

    pvc: str | None = Field(None, description="An existing PersistentVolumeClaim (ReadWriteMany for W > 1).")
    storage_class: str | None = Field(None, description="Create a PVC of this class (when pvc is unset).")
    size: str = Field("10Gi", description="Size of a PVC the operator creates.")
    host_path: str | None = Field(None, description="A directory every node shares (local clusters).")
    url: str | None = Field(
        None, description="An fsspec URL (s3://, gs://, ...); the backend package (s3fs, gcsfs) and its credentials "
        "must be in the trainer image and the pod's env.",
    )
    delete_with_job: bool = Field(False, description="Delete an operator-created PVC with the job (default: keep).")
    resume_from: str | None = Field(
        None, description="Until the job has committed a checkpoint of its own, start from this one: a URL, an "
        "absolute path in the workers, or a path relative to the job's checkpoint storage; a checkpoint directory or "
        "another run's checkpoint root (its latest).",
    )


class FaultPolicy(WireModel):
    """How failures are told apart and how many are tolerated. Preemptions never count."""

    crash_budget: int = Field(
        3, ge=0, description="Crashes (non-zero exits, OOM kills) in a row, with no stable run between them, that "
        "the job survives; one more fails it. status.crashes counts them all.",
    )
    backoff_seconds: int = Field(
        10, ge=0, description="Wait after a crash before replacing workers; doubles with each crash in a row."
    )
    max_backoff_seconds: int = Field(
        300, ge=0, description="The longest crash backoff (never less than backoffSeconds)."
    )
    stable_run_seconds: int = Field(
        600, ge=1, description="Running this long since the last crash resets the backoff and the crash budget."
    )
    unreachable_seconds: int = Field(
        10, ge=1, description="How long a worker's node may be unreachable before the worker is replaced."
    )
    stall_seconds: int = Field(600, ge=10, description="No progress for this long sets the Stalled condition.")
    restart_on_stall: bool = Field(False, description="Start a new generation when Stalled.")


class RendezvousSpec(WireModel):
    """The rendezvous store the operator runs for the job."""

    port: int = Field(29400, ge=1, le=65535, description="Port of the store and its headless Service.")
    join_timeout_seconds: int = Field(
        600, ge=10, description="A generation that sends no progress report this long after it is published (its "
        "group never formed) is published again with the same members and fresh rendezvous keys.",
    )
    gang_timeout_seconds: int = Field(
        120, ge=0, description="Before the first generation (and after a resume), wait this long for all replicas "
        "to be Ready, then start with those ready (at least minReplicas); 0 starts as soon as minReplicas are.",
    )


MAX_REPLICAS = 1024
"""The most workers a job may have."""
MAX_DEVICES_PER_WORKER = 16
"""The most GPUs (processes) per worker."""

_EP = f("trainer.parallel.expertParallel")
_PROCS = Larger(f("devicesPerWorker"), lit(1))
_EP_STEP = _EP // Gcd(_EP, _PROCS, MAX_DEVICES_PER_WORKER)
"""Workers per EP group: a world of n workers x PROCS processes is divisible by EP iff this divides n."""
_SOURCES = [Filled(f(f"checkpoint.{name}")) for name in ("pvc", "hostPath", "url")]


class DeepSeekTrainingJobSpec(WireModel):
    """An elastic training run of a DeepSeek-style MoE model."""

    replicas: int = Field(2, ge=1, le=MAX_REPLICAS, description="Workers wanted (the scale subresource's replicas).")
    min_replicas: int = Field(
        1, ge=1, le=MAX_REPLICAS, description="Fewest workers to train on; below it the job waits."
    )
    max_replicas: int = Field(8, ge=1, le=MAX_REPLICAS, description="Most workers the job may scale to.")
    image: str = Field("moe-trainer:latest", description="Trainer image.")
    devices_per_worker: int = Field(
        0, ge=0, le=MAX_DEVICES_PER_WORKER, description="GPUs per worker (one process each); 0 = CPU."
    )
    pod: PodOverrides = Field(default_factory=lambda: PodOverrides(), description="Worker pod overrides.")
    trainer: TrainerConfig = Field(default_factory=lambda: TrainerConfig(), description="The trainer config.")
    checkpoint: CheckpointStorage = Field(default_factory=lambda: CheckpointStorage(), description="Checkpoints.")
    fault_policy: FaultPolicy = Field(default_factory=lambda: FaultPolicy(), description="Failure handling.")
    rendezvous: RendezvousSpec = Field(default_factory=lambda: RendezvousSpec(), description="Rendezvous store.")
    suspend: bool = Field(False, description="true: checkpoint and remove the workers; false: resume.")
    ttl_seconds_after_finished: int | None = Field(None, ge=0, description="Delete the job this long after it ends.")
    active_deadline_seconds: int | None = Field(
        None, ge=1, description="Fail the job after it has trained this long; only time in phase Running counts "
        "(suspended or waiting for workers stops the clock).",
    )

    RULES: ClassVar[tuple[Rule, ...]] = (
        Rule("replicas", all_of(f("minReplicas") <= f("replicas"), f("replicas") <= f("maxReplicas")),
             "need minReplicas ({minReplicas}) <= replicas ({replicas}) <= maxReplicas ({maxReplicas}); "
             "change replicas or the bounds"),
        Rule("checkpoint",
             Not(any_of(all_of(_SOURCES[0], _SOURCES[1]), all_of(_SOURCES[0], _SOURCES[2]),
                        all_of(_SOURCES[1], _SOURCES[2]))),
             "checkpoint: set at most one of pvc, hostPath and url"),
        # The world size is workers x processes per worker, and EP must divide it (and nRouted).
        Rule("trainer.parallel.expertParallel",
             implies(all_of(IsInt(_EP), _EP >= 1), (f("maxReplicas") // _EP_STEP) * _EP_STEP >= f("minReplicas")),
             "trainer.parallel.expertParallel ({trainer.parallel.expertParallel}) divides no world size of "
             "minReplicas ({minReplicas}) to maxReplicas ({maxReplicas}) workers ({procs} process(es) each, so "
             "the worker count must be a multiple of {step}); widen the bounds or set expertParallel: auto",
             {"procs": _PROCS, "step": _EP_STEP}),
        Rule("trainer.train.precision",
             implies(f("trainer.train.precision").eq("fp8"),
                     any_of(f("devicesPerWorker") >= 1, f("trainer.train.precisionEmulation").eq(True))),
             "trainer.train.precision=fp8 needs GPUs (devicesPerWorker >= 1, got {devicesPerWorker}); on CPU set "
             "trainer.train.precisionEmulation: true (fp8 numerics, no speed-up) or use bf16"),
    )

    @model_validator(mode="after")
    def _check_bounds(self) -> Self:
        return enforce(self)


def parse_spec(raw: dict[str, Any]) -> tuple[DeepSeekTrainingJobSpec, list[str]]:
    """The spec as the operator reads it, and the fields it did not know and ignored.

    The API server has already validated and pruned the object against the installed CRD, so a field
    unknown here comes from a newer CRD than this operator: ignore it (and say so) rather than fail a
    running job during an upgrade. Any other error still raises.
    """
    return read_lenient_naming(DeepSeekTrainingJobSpec, raw, "job spec")
