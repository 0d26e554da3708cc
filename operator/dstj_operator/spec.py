"""The DeepSeekTrainingJob spec: what users write, as pydantic models (the CRD is generated from them).

Field names are camelCase on the wire. Cross-field rules are data (`RULES`, see `dstj_api.rules`):
pydantic checks them here, so the operator never acts on a spec the API server would refuse (e.g. one
created before a CRD upgrade), and `crd.py` renders the same rules as CEL for the API server.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal, Self

from pydantic import Field, model_validator

from dstj_api import TrainerConfig
from dstj_api.lenient import read_lenient_naming
from dstj_api.rules import (
    ITEM,
    Every,
    Filled,
    Gcd,
    IsInt,
    Larger,
    Not,
    Present,
    Rule,
    all_of,
    any_of,
    enforce,
    f,
    implies,
    lit,
)
from dstj_api.wire import WireModel


class PodOverrides(WireModel):
    """What a user may set on worker pods (merged into the pods the operator builds).

    The rendezvous store pod takes the fields that say where and how the job's pods run: nodeSelector,
    tolerations, affinity, priorityClassName, schedulerName, runtimeClassName, imagePullSecrets,
    imagePullPolicy and both security contexts.
    """

    resources: dict[str, Any] | None = Field(None, description="Container resources (requests/limits).")
    node_selector: dict[str, str] | None = Field(
        None, description="Pod nodeSelector (workers and the rendezvous store)."
    )
    tolerations: list[dict[str, Any]] | None = Field(
        None, description="Extra pod tolerations (workers and the rendezvous store)."
    )
    affinity: dict[str, Any] | None = Field(None, description="Pod affinity (workers and the rendezvous store).")
    topology_spread_constraints: list[dict[str, Any]] | None = Field(None, description="Pod topology spread.")
    priority_class_name: str | None = Field(
        None, description="Pod priorityClassName (workers and the rendezvous store)."
    )
    env: list[dict[str, Any]] | None = Field(None, description="Extra container env entries.")
    volumes: list[dict[str, Any]] | None = Field(None, description="Extra pod volumes.")
    volume_mounts: list[dict[str, Any]] | None = Field(None, description="Extra container volumeMounts.")
    labels: dict[str, str] | None = Field(None, description="Extra pod labels (e.g. a Kueue queue name).")
    annotations: dict[str, str] | None = Field(None, description="Extra pod annotations.")
    image_pull_secrets: list[dict[str, str]] | None = Field(
        None, description="Pod imagePullSecrets (e.g. [{name: regcred}]), for a private registry; workers and the "
        "rendezvous store.",
    )
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] | None = Field(
        None, description="Container imagePullPolicy of workers and the rendezvous store (unset: Kubernetes' "
        "default for the image's tag).",
    )
    security_context: dict[str, Any] | None = Field(
        None, description="Pod securityContext, merged over the defaults key by key (a key you set replaces that "
        "default's whole value): runAsNonRoot true, runAsUser, runAsGroup and fsGroup 65532 (the images' user), "
        "seccompProfile RuntimeDefault, which pass the restricted Pod Security profile.",
    )
    container_security_context: dict[str, Any] | None = Field(
        None, description="Container securityContext, merged over the defaults key by key (a key you set replaces "
        "that default's whole value): allowPrivilegeEscalation false, capabilities drop ALL, readOnlyRootFilesystem "
        "true (the trainer writes only to its volumes: emptyDirs at /tmp and /dev/shm, and checkpoints).",
    )
    scheduler_name: str | None = Field(None, description="Pod schedulerName (workers and the rendezvous store).")
    runtime_class_name: str | None = Field(
        None, description="Pod runtimeClassName (workers and the rendezvous store)."
    )


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
        10, ge=1, description="How long a worker's (or the rendezvous store's) node may be unreachable before the "
        "pod is replaced."
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
#: ``spec.image``'s default: this release's trainer image, tagged like the chart's operator image
#: (its appVersion; a unit test keeps them equal). A versioned tag, not ``latest``: with ``latest``
#: the kubelet's default pull policy is ``Always``, which fails on a node that has the image but no
#: registry to ask (``spec.pod.imagePullPolicy`` sets the policy explicitly).
TRAINER_IMAGE = "moe-trainer:0.1.0"
"""The most workers a job may have."""
MAX_DEVICES_PER_WORKER = 16
"""The most GPUs (processes) per worker."""

_EP = f("trainer.parallel.expertParallel")
_PROCS = Larger(f("devicesPerWorker"), lit(1))
_EP_STEP = _EP // Gcd(_EP, _PROCS, MAX_DEVICES_PER_WORKER)
"""Workers per EP group: a world of n workers x PROCS processes is divisible by EP iff this divides n."""
_SOURCES = [Filled(f(f"checkpoint.{name}")) for name in ("pvc", "hostPath", "url")]


MAX_WORLD_SIZES = 64
"""The most entries `autoscaling.allowedWorldSizes` may list (the API server bounds a rule's cost by it)."""


class AutoscalingSpec(WireModel):
    """The operator chooses the world size itself (status.targetReplicas), between minReplicas and replicas.

    Off by default: then `spec.replicas` is the size, and `kubectl scale` and HPAs work as before. On,
    `spec.replicas` is the ceiling and the operator never writes it (GitOps tools would revert it).
    """

    enabled: bool = Field(False, description="Let the operator choose the world size between minReplicas and "
                          "replicas (the ceiling); its choice is status.targetReplicas.")
    policy: Literal["Capacity"] = Field("Capacity", description="Capacity: grow one eligible size at a time while "
                                        "workers schedule, settle at the size that fits.")
    unschedulable_seconds: int = Field(
        300, ge=10, description="Seconds a worker may stay unschedulable before it is removed and the job settles "
        "at the size that fits. Cluster autoscalers add nodes because pods are Pending, so keep it at or above "
        "their provisioning time (300 s or more) where one runs.",
    )
    growth_backoff_seconds: int = Field(
        60, ge=1, description="Seconds to wait before trying to grow again after capacity ran out; doubles with "
        "each failed try in a row. A new node or freed pods in the namespace retry at once.",
    )
    max_growth_backoff_seconds: int = Field(
        900, ge=1, description="The longest growth backoff in seconds (never less than growthBackoffSeconds).",
    )
    allowed_world_sizes: list[Annotated[int, Field(ge=1, le=MAX_REPLICAS)]] | None = Field(
        None, min_length=1, max_length=MAX_WORLD_SIZES, json_schema_extra={"x-kubernetes-list-type": "set"},
        description="Only these worker counts (each within [minReplicas, maxReplicas]); unset: every count whose "
        "layout is valid.",
    )
    powers_of_two: bool = Field(False, description="Only worker counts that are powers of two (1, 2, 4, ...).")
    min_scaling_efficiency: float = Field(
        0.0, ge=0.0, le=1.0, description="Stop growing when one more worker adds less than this fraction of a "
        "worker's share of tokens/s (0 = rule off). On, the job starts at the smallest eligible size and measures "
        "each step.",
    )
    cooldown_seconds: int = Field(
        3600, ge=0, description="Seconds before a size found not to pay (minScalingEfficiency) is tried again.",
    )
    surplus_priority_class_name: str | None = Field(
        None, description="PriorityClass of workers above minReplicas: name a lower one so surplus workers yield "
        "to other workloads; the operator itself never preempts to grow.",
    )

    RULES: ClassVar[tuple[Rule, ...]] = (
        Rule("powersOfTwo", Not(all_of(Present(f("allowedWorldSizes")), f("powersOfTwo"))),
             "autoscaling: set allowedWorldSizes or powersOfTwo, not both (list only powers of two in "
             "allowedWorldSizes)"),
    )

    @model_validator(mode="after")
    def _check_sizes(self) -> Self:
        sizes = self.allowed_world_sizes or []
        if len(set(sizes)) != len(sizes):  # the CRD makes it a set: the API server refuses duplicates itself
            raise ValueError(f"autoscaling.allowedWorldSizes lists a size twice ({sizes}); list each once")
        return enforce(self)


class DeepSeekTrainingJobSpec(WireModel):
    """An elastic training run of a DeepSeek-style MoE model."""

    replicas: int = Field(2, ge=1, le=MAX_REPLICAS, description="Workers wanted (the scale subresource's replicas).")
    min_replicas: int = Field(
        1, ge=1, le=MAX_REPLICAS, description="Fewest workers to train on; below it the job waits."
    )
    max_replicas: int = Field(8, ge=1, le=MAX_REPLICAS, description="Most workers the job may scale to.")
    image: str = Field(
        TRAINER_IMAGE, description="Trainer image (default: the trainer image of this release, as the chart's "
        "appVersion tags the operator's)."
    )
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
    autoscaling: AutoscalingSpec = Field(default_factory=lambda: AutoscalingSpec(),
                                         description="Let the operator choose the world size (off by default).")

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
        Rule("autoscaling.allowedWorldSizes",
             Every(f("autoscaling.allowedWorldSizes"),
                   all_of(f("minReplicas") <= f(ITEM), f(ITEM) <= f("maxReplicas"))),
             "every autoscaling.allowedWorldSizes entry must lie within minReplicas ({minReplicas}) to maxReplicas "
             "({maxReplicas}); drop the others or widen the bounds"),
        # Each allowed size needs a layout: the same divisibility as above, entry by entry.
        Rule("autoscaling.allowedWorldSizes",
             implies(all_of(IsInt(_EP), _EP >= 1), Every(f("autoscaling.allowedWorldSizes"),
                                                         (f(ITEM) % _EP_STEP).eq(0))),
             "every autoscaling.allowedWorldSizes entry must be a multiple of the workers one expert-parallel group "
             "spans ({step}), from trainer.parallel.expertParallel ({trainer.parallel.expertParallel}) and "
             "devicesPerWorker ({procs} processes per worker); drop the others or set expertParallel: auto",
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
