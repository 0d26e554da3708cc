"""What an edit of each spec field does to an existing job: the one table the CRD's immutability rules and
the API reference's edit table are generated from (a test fails when a spec field has no row).

The trainer config and the checkpoint storage are immutable for now: running workers read the trainer
config once, when they start, so an edit would reach only the workers started after it, and one
generation would train with two configs (two learning rates, two step counts). Refusing the edit says so
at once, where a GitOps tool shows it, instead of applying it to some workers or to none.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Effect(StrEnum):
    """How an edit reaches a running job."""

    LIVE = "live"
    """The operator acts on it in the pass the edit triggers."""
    NEW_PODS = "new pods"
    """Pods created after the edit get it; running pods keep what they started with."""
    IMMUTABLE = "immutable"
    """Refused by the API server, with what to do instead."""


@dataclass(frozen=True, slots=True)
class Row:
    """One row of the edit table: a field (or a field and everything under it) and what an edit does."""

    path: str
    effect: Effect
    what: str


NEW_JOB = "create a new job with spec.checkpoint.resumeFrom pointing at this job's checkpoints to carry on from them"
TRAINER_IMMUTABLE = (
    "spec.trainer cannot change on an existing job: its workers read the trainer config once, when they start, "
    f"so an edit would split one training group between two configs; {NEW_JOB}"
)
CHECKPOINT_IMMUTABLE = (
    "spec.checkpoint cannot change on an existing job: its checkpoints live in that storage and the job resumes "
    f"from them; {NEW_JOB}"
)

EDITS: tuple[Row, ...] = (
    Row("spec.replicas", Effect.LIVE, "workers are created or removed; a new generation forms at the next step "
        "boundary, after a checkpoint (no step lost)"),
    Row("spec.minReplicas", Effect.LIVE, "the PodDisruptionBudget follows; below it the job waits on its last "
        "generation"),
    Row("spec.maxReplicas", Effect.LIVE, "a bound for replicas (and for kubectl scale and HPAs)"),
    Row("spec.image", Effect.NEW_PODS, "workers and the rendezvous store created after the edit (replacements, "
        "scale-ups) run it; running pods keep theirs (a rolling replacement at one step boundary is not built yet)"),
    Row("spec.devicesPerWorker", Effect.NEW_PODS, "as image"),
    Row("spec.pod", Effect.NEW_PODS, "as image"),
    Row("spec.trainer", Effect.IMMUTABLE, TRAINER_IMMUTABLE),
    Row("spec.checkpoint", Effect.IMMUTABLE, CHECKPOINT_IMMUTABLE),
    Row("spec.faultPolicy", Effect.LIVE, "the next pass judges crashes, backoff, stalls and node loss by the new "
        "values (unreachableSeconds: pods created after the edit)"),
    Row("spec.rendezvous.port", Effect.LIVE, "the Service, NetworkPolicy and store pod move to the new port; the "
        "same members form a new generation there"),
    Row("spec.rendezvous.joinTimeoutSeconds", Effect.LIVE, "the published generation is judged by the new value"),
    Row("spec.rendezvous.gangTimeoutSeconds", Effect.LIVE, "a job gathering its first generation waits the new "
        "value"),
    Row("spec.suspend", Effect.LIVE, "true: workers checkpoint and go; false: they come back and resume"),
    Row("spec.ttlSecondsAfterFinished", Effect.LIVE, "a finished job is deleted by the new value"),
    Row("spec.activeDeadlineSeconds", Effect.LIVE, "the running time so far is judged against the new value"),
)

IMMUTABLE_RULES: dict[tuple[str, ...], str] = {
    tuple(row.path.split(".")[1:]): row.what for row in EDITS if row.effect is Effect.IMMUTABLE
}
"""Schema path under spec -> the message of its `self == oldSelf` rule."""


def row_for(path: str) -> Row | None:
    """The row that covers a spec field path (its own, or its nearest parent's)."""
    covering = [r for r in EDITS if path == r.path or path.startswith(r.path + ".")]
    return max(covering, key=lambda r: len(r.path)) if covering else None
