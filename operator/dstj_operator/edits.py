"""What an edit of each spec field does to an existing job: the one table the CRD's immutability rules and
the API reference's edit table are generated from (a test fails when a spec field has no row).

Immutable are the inputs the checkpoints and the sample stream depend on: the model (a checkpoint of one
architecture cannot resume another), the data and what orders it (seed, sequence length, global batch:
exactly-once data across resizes relies on the global batch of step s being a pure function of them), and
the checkpoint storage. The rest of the trainer config is live: each generation names the config it runs
(`Membership.configHash`), so an edit publishes a new generation with the same members; the running group
stops at the next step boundary with a checkpoint, and every member reads the new config before it joins.
One generation never trains with two configs.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Effect(StrEnum):
    """How an edit reaches a running job."""

    LIVE = "live"
    """The operator acts on it in the pass the edit triggers."""
    NEXT_STEP = "live, next step boundary"
    """A new generation with the same members: the group checkpoints, reads the new config and resumes."""
    ROLLED = "rolled"
    """Every worker is replaced; the replacements take over at one step boundary."""
    NEW_PODS = "new pods"
    """Pods created after the edit get it; running pods keep what they started with."""
    IMMUTABLE = "immutable"
    """Refused by the API server, with what to do instead."""
    OPERATOR_SET = "set by the operator"
    """The operator fills it in from another field: a job that sets it is refused (create or edit), with the field
    to set instead. A job stored before the rule keeps its value through other edits (the API server ratchets an
    unchanged field) and the operator reports it ignored."""


@dataclass(frozen=True, slots=True)
class Row:
    """One row of the edit table: a field (or a field and everything under it) and what an edit does."""

    path: str
    effect: Effect
    what: str


NEW_JOB = "create a new job with spec.checkpoint.resumeFrom pointing at this job's checkpoints to carry on from them"
MODEL_IMMUTABLE = ("spec.trainer.model is immutable: checkpoints of one architecture cannot resume another; create a "
                   "new job")
DATA_IMMUTABLE = (
    "{field} cannot change on an existing job: the sample stream, and with it exactly-once data across resizes, "
    f"depends on it; {NEW_JOB}"
)
CHECKPOINT_IMMUTABLE = (
    "{field} cannot change on an existing job: its checkpoints live in that storage and the job resumes "
    f"from them; {NEW_JOB}"
)
CHECKPOINT_DIR_SET = (
    "spec.trainer.checkpoint.dir is set by the operator to the job's checkpoint storage (the mounted volume, or "
    "spec.checkpoint.url); leave it unset and choose the storage with spec.checkpoint.pvc, .hostPath or .url"
)
NEXT_GENERATION = ("a new generation with the same members: the group stops at the next step boundary with a "
                   "checkpoint, every member reads the new config and resumes from it (no step lost)")
ROLLED_WORKERS = (
    "every worker is replaced: a replacement per index starts beside the running pods (room for a second set of "
    "workers is needed while they start); once they are Ready the running group stops at a step boundary with a "
    "checkpoint and the replacements resume from it (no step lost), then the old pods go, so one generation never "
    "mixes pod templates; a replacement that cannot start (a missing image, unschedulable) blocks the rollout "
    "(Progressing, reason RolloutBlocked) while the old pods keep training. The rendezvous store keeps its pod "
    "(replacing it would cost the group its store); the next store pod created has the edit"
)
PROCESS_BOUND = ("worker processes started after the edit (replacements, scale-ups) use it; a running process keeps "
                 "what it bound at start")

EDITS: tuple[Row, ...] = (
    Row("spec.replicas", Effect.LIVE, "workers are created or removed; a new generation forms at the next step "
        "boundary, after a checkpoint (no step lost)"),
    Row("spec.minReplicas", Effect.LIVE, "the PodDisruptionBudget follows; below it the job waits on its last "
        "generation"),
    Row("spec.maxReplicas", Effect.LIVE, "a bound for replicas (and for kubectl scale and HPAs)"),
    Row("spec.image", Effect.ROLLED, ROLLED_WORKERS),
    Row("spec.devicesPerWorker", Effect.ROLLED, "as image"),
    Row("spec.pod", Effect.ROLLED, "as image"),
    Row("spec.trainer.model", Effect.IMMUTABLE, MODEL_IMMUTABLE),
    Row("spec.trainer.data", Effect.IMMUTABLE, DATA_IMMUTABLE.format(field="spec.trainer.data")),
    *(Row(f"spec.trainer.train.{name}", Effect.IMMUTABLE, DATA_IMMUTABLE.format(field=f"spec.trainer.train.{name}"))
      for name in ("seed", "seqLen", "globalBatch")),
    Row("spec.trainer.train", Effect.NEXT_STEP, NEXT_GENERATION),
    Row("spec.trainer.train.device", Effect.NEW_PODS, PROCESS_BOUND),
    Row("spec.trainer.train.metricsPort", Effect.NEW_PODS, PROCESS_BOUND),
    Row("spec.trainer.optim", Effect.NEXT_STEP, NEXT_GENERATION),
    Row("spec.trainer.parallel", Effect.NEXT_STEP, NEXT_GENERATION + "; the EP x DP layout is planned again"),
    Row("spec.trainer.checkpoint", Effect.NEXT_STEP, NEXT_GENERATION),
    Row("spec.trainer.checkpoint.dir", Effect.OPERATOR_SET, CHECKPOINT_DIR_SET),
    Row("spec.trainer.checkpoint.resumeFrom", Effect.IMMUTABLE,
        CHECKPOINT_IMMUTABLE.format(field="spec.trainer.checkpoint.resumeFrom")),
    Row("spec.checkpoint", Effect.IMMUTABLE, CHECKPOINT_IMMUTABLE.format(field="spec.checkpoint")),
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
    Row("spec.autoscaling", Effect.LIVE, "the next pass chooses the size by the new values (off: spec.replicas is "
        "the size again); a changed size forms a new generation at the next step boundary (no step lost)"),
    Row("spec.autoscaling.surplusPriorityClassName", Effect.NEW_PODS, "workers created after the edit (indices "
        "from minReplicas up) carry it; running workers keep theirs. The one pod field allowed to differ between "
        "workers of a generation: it is not part of the pod-template hash, so it never rolls the workers"),
)

IMMUTABLE_RULES: dict[tuple[str, ...], str] = {
    tuple(row.path.split(".")[1:]): row.what for row in EDITS if row.effect is Effect.IMMUTABLE
}
"""Schema path under spec -> the message of its `self == oldSelf` rule."""

OPERATOR_SET_RULES: dict[tuple[str, ...], str] = {
    tuple(row.path.split(".")[1:]): row.what for row in EDITS if row.effect is Effect.OPERATOR_SET
}
"""Schema path under spec -> the message of the rule refusing it (placed on its parent, so that the API server
ratchets it with the parent: a job stored before the rule can still be edited elsewhere)."""


def operator_set_fields(raw_spec: dict[str, object]) -> list[str]:
    """The set-by-the-operator fields a stored spec sets anyway (admitted before the rule), as users write them."""
    out = []
    for path in OPERATOR_SET_RULES:
        node: object = raw_spec
        for key in path:
            node = node.get(key) if isinstance(node, dict) else None
        if node is not None:
            out.append("spec." + ".".join(path))
    return out


def row_for(path: str) -> Row | None:
    """The row that covers a spec field path (its own, or its nearest parent's)."""
    covering = [r for r in EDITS if path == r.path or path.startswith(r.path + ".")]
    return max(covering, key=lambda r: len(r.path)) if covering else None
