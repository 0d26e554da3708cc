"""The DeepSeekTrainingJob status as a typed model: what users, dashboards and Argo CD read, plus the
operator's own bookkeeping in `status.bookkeeping`. The CRD's status schema is generated from it.

Read leniently (unknown fields ignored): a status may have been written by another version of the
operator (a standby during an upgrade). Written without nulls: an absent field and a null one would
compare unequal forever, and every pass would write.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel

from dstj_api import Membership, ProgressReport, read_lenient

log = logging.getLogger(__name__)

Phase = Literal["Pending", "Running", "Suspended", "Succeeded", "Failed"]
PHASES: tuple[str, ...] = ("Pending", "Running", "Suspended", "Succeeded", "Failed")
COUNTED_KEEP = 200
"""How many ended pod names the bookkeeping remembers, so each end is counted once."""


def stamp(when: datetime) -> str:
    """A time as status fields and conditions hold it: RFC 3339, whole seconds, UTC (as Kubernetes writes)."""
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class _StatusModel(BaseModel):
    model_config = ConfigDict(extra="ignore", alias_generator=to_camel, validate_by_name=True,
                              validate_by_alias=True)


class Condition(_StatusModel):
    """One condition, as Kubernetes writes them (`metav1.Condition`)."""

    type: str = Field(description="The condition type (see docs/api.md for the types and their reasons).")
    status: Literal["True", "False", "Unknown"] = Field(description="True, False or Unknown.")
    reason: str = Field("", description="A CamelCase word saying why.")
    message: str = Field("", description="What happened, for people.")
    last_transition_time: str = Field("", description="When status last changed (RFC 3339).")


class SizeThroughput(_StatusModel):
    """Steady training throughput measured at one world size (spec.autoscaling.minScalingEfficiency)."""

    world_size: int = Field(description="Workers training together.")
    tokens_per_second: float = Field(description="Steady tokens/s of the whole job at that size (not the first "
                                     "steps after a reconfiguration).")
    measured: str = Field(description="When it was measured (RFC 3339).")


class UnpaidSize(_StatusModel):
    """A world size found not to pay: not tried again within spec.autoscaling.cooldownSeconds."""

    world_size: int = Field(description="Workers.")
    since: str = Field(description="When it was found not to pay (RFC 3339).")


class Bookkeeping(_StatusModel):
    """What the operator remembers between passes; not an interface, read it only to debug the operator."""

    counted_pods: list[str] = Field(default_factory=list, description="Ended worker pods already counted "
                                    f"as preemptions or crashes (the last {COUNTED_KEEP}).")
    last_crash_time: str | None = Field(None, description="When the last crash was counted (backoff, stable run).")
    last_crash: str | None = Field(None, description="The last crashed worker and why (its log's last lines).")
    consecutive_crashes: int = Field(0, description="Crashes since the last stable run (backoff, crash budget).")
    generation_time: str | None = Field(None, description="When the current membership generation was seen first.")
    stall_generation: int | None = Field(None, description="The generation `generationTime` belongs to.")
    running_seconds: float = Field(0.0, description="Training time of finished running stretches "
                                   "(activeDeadlineSeconds counts only running time).")
    running_since: str | None = Field(None, description="Start of the current running stretch, if running.")
    gang_since: str | None = Field(None, description="When the job began waiting for its workers before a "
                                   "first generation (rendezvous.gangTimeoutSeconds).")
    sync_failures: int = Field(0, description="Passes in a row that failed on an API error (retry backoff).")
    growth_failures: int | None = Field(None, description="Autoscaling: tries in a row to grow that found no "
                                        "capacity (growth backoff).")
    growth_failed_at: str | None = Field(None, description="Autoscaling: when the last try to grow found no "
                                         "capacity.")
    target_since: str | None = Field(None, description="Autoscaling: when status.targetReplicas last changed "
                                     "(only throughput measured since counts for it).")
    unpaid_sizes: list[UnpaidSize] | None = Field(None, description="Autoscaling: sizes found not to pay, "
                                                  "each not tried again within cooldownSeconds.")


_TOP_LEVEL_BOOKKEEPING = ("countedPods", "lastCrashTime", "generationTime", "stallGeneration")


class JobStatus(_StatusModel):
    """`.status` of a DeepSeekTrainingJob."""

    phase: Phase | None = Field(None, description="Pending, Running, Suspended, Succeeded or Failed.")
    observed_generation: int | None = Field(None, description="The newest metadata.generation that is live: the "
                                            "training group runs it (or, with none training, the children match "
                                            "it). Behind metadata.generation while an edit rolls out (Progressing).")
    conditions: list[Condition] = Field(default_factory=list, description="Synced, Running, Degraded, "
                                        "Restarting, Stalled, Progressing, Suspended, Succeeded, Failed, Scaling.")
    replicas: int = Field(0, description="Live worker pods (the scale subresource's status replicas).")
    ready_replicas: int = Field(0, description="Workers that hold a seat in the training group.")
    desired_replicas: int | None = Field(None, description="spec.replicas as last acted on.")
    selector: str | None = Field(None, description="Label selector of the worker pods (scale subresource).")
    membership: Membership | None = Field(None, description="The published generation: the workers that "
                                          "train together now. Workers follow it.")
    progress: ProgressReport | None = Field(None, description="The trainer's last progress report.")
    layout: str | None = Field(None, description="Expert-parallel x data-parallel degrees of the last report.")
    target_replicas: int | None = Field(None, description="Autoscaling: the world size the operator chose (workers "
                                        "it runs), within [minReplicas, replicas]; see the Scaling condition.")
    schedulable_replicas: int | None = Field(None, description="Autoscaling: workers of the chosen size bound to "
                                             "a node (what the cluster fits now).")
    throughput: list[SizeThroughput] | None = Field(None, description="Autoscaling: steady tokens/s measured "
                                                    "per world size, ascending by size.")
    preemptions: int = Field(0, description="Worker pods that ended by preemption, eviction or node loss "
                             "(never counted against the crash budget).")
    crashes: int = Field(0, description="Worker pods that crashed (non-zero exit, OOM kill), in total.")
    start_time: str | None = Field(None, description="When the operator first acted on the job.")
    completion_time: str | None = Field(None, description="When the job succeeded or failed.")
    ignored_fields: list[str] | None = Field(None, description="Spec fields this operator ignored: ones it does "
                                             "not know (from a newer CRD: upgrade the operator), or ones it sets "
                                             "itself that an older CRD admitted (remove them).")
    bookkeeping: Bookkeeping = Field(default_factory=Bookkeeping, description="The operator's own "
                                     "bookkeeping between passes (not an interface).")

    @classmethod
    def read(cls, raw: dict[str, Any] | None) -> JobStatus:
        """The stored status; one that does not parse (hand-edited, or from an incompatible operator) is read
        without its progress report, or else starts afresh, with a warning, rather than failing every pass."""
        raw = dict(raw or {})
        if "bookkeeping" not in raw:  # written by an operator that kept its bookkeeping at the top level
            raw["bookkeeping"] = {k: raw.pop(k) for k in _TOP_LEVEL_BOOKKEEPING if k in raw}
        try:
            return read_lenient(cls, raw, "job status")
        except ValidationError as e:
            log.warning("a stored status does not parse (%s); reading it without its progress report", e)
        raw.pop("progress", None)  # mirrored afresh from the trainer's report on every pass
        try:
            return cls.model_validate(raw)
        except ValidationError as e:
            log.warning("ignoring a status that does not parse: %s", e)
            return cls()

    def dump(self) -> dict[str, Any]:
        """The status as written: camelCase, no nulls."""
        return self.model_dump(by_alias=True, mode="json", exclude_none=True)

    def condition(self, type_: str) -> Condition | None:
        """The condition of that type, if set."""
        return next((c for c in self.conditions if c.type == type_), None)

    def is_true(self, type_: str) -> bool:
        """Whether the condition of that type is set and True."""
        c = self.condition(type_)
        return c is not None and c.status == "True"
