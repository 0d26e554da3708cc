"""Membership and progress: what the operator publishes to the workers and what rank 0 reports back.

A membership generation is a fixed set of workers. The operator bumps `generation` on any loss,
arrival or resize; each generation is its own fixed-size torchrun rendezvous, and checkpoint
commits are fenced by it: only the published generation may move the "latest" marker.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal, Self

from pydantic import Field, model_validator

from dstj_api.wire import WireModel


class Membership(WireModel):
    """The published generation: which workers form the training group now."""

    generation: int = Field(ge=0, description="Bumped on every change of the member set.")
    world_size: int = Field(ge=0, description="Number of member workers (torchrun --nnodes).")
    members: list[str] = Field(default_factory=list, description="Member worker ids (pod names).")
    rdzv_endpoint: str | None = Field(None, description="host:port of the rendezvous store.")
    handoff_from: int | None = Field(
        None,
        description="A planned resize: this earlier generation may still commit the checkpoint it takes when "
        "stopping, so no step is lost. Unset after a failure.",
    )
    config_hash: str | None = Field(
        None, description="The digest (`config_digest`) of the trainer config this generation runs: a member whose "
        "config differs reads the current one before it joins. Unset by operators older than the field.",
    )
    state: Literal["running", "suspended", "finished"] = Field(
        "running", description="suspended: members stop with a checkpoint; finished: nothing more to run."
    )

    @model_validator(mode="after")
    def _check_members(self) -> Self:
        if self.members and len(self.members) != self.world_size:
            raise ValueError(f"worldSize ({self.world_size}) must equal the number of members ({len(self.members)})")
        return self


class ProgressReport(WireModel):
    """What rank 0 reports after each logged step (the operator mirrors it into the job status)."""

    step: int = Field(ge=0, description="Optimizer steps finished.")
    total_steps: int = Field(ge=1, description="train.steps: the step the run finishes at.")
    generation: int = Field(ge=0, description="The membership generation whose group ran these steps.")
    generation_start_step: int | None = Field(
        None, ge=0,
        description="The step this generation resumed from: it ran steps generationStartStep+1 .. step at worldSize, "
        "so every step's world size is known exactly. Unset by trainers older than the field.",
    )
    world_size: int = Field(ge=1, description="Ranks in the group (workers x processes per worker).")
    expert_parallel: int = Field(ge=1, description="Expert-parallel degree of the group's layout (EP).")
    data_parallel: int = Field(ge=1, description="Data-parallel degree of the group's layout (DP = worldSize / EP).")
    loss: float | None = Field(None, description="Training loss of the last step (nats per token).")
    tokens_per_second: float | None = Field(None, description="Training throughput over the last log interval.")
    steady_tokens_per_second: float | None = Field(
        None, ge=0, description="Steady throughput of this generation: tokens/s over its steps after the first few "
        "following a reconfiguration (warm-up), unset until enough steps ran. Unset by trainers older than the "
        "field (the operator then measures nothing for spec.autoscaling.minScalingEfficiency).",
    )
    max_violation: float | None = Field(
        None, description="Expert load balance of the last step: max load / mean load - 1, worst MoE layer."
    )
    last_checkpoint_step: int | None = Field(None, description="The step of the committed (latest) checkpoint.")
    last_checkpoint_time: datetime | None = Field(
        None, description="When this report saw that checkpoint committed (the report's time)."
    )
    state: Literal["running", "stopped", "finished"] = Field(
        "running", description="running; stopped: the group stopped at a step boundary (a new generation, a "
        "preemption); finished: train.steps reached."
    )
    updated: datetime = Field(description="When rank 0 wrote this report.")
