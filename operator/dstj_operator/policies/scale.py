"""Membership and worker count: which generation to publish, which workers to remove or create.

Membership rules: the members are the seated workers (lowest indices first, at most `replicas`).
Readiness admits: a worker takes a seat once its pod is Ready (it can join a group). A member keeps
its seat while its pod lives, even if its readiness probe later fails: a probe that times out on a
loaded node must not stop the whole group twice (out, then back in). It loses the seat when its pod
ends or is deleted, or when its node is lost (the node controller sets the pod's Ready to False and
leaves ContainersReady as the kubelet last reported it, True; a probe failure sets both to False).
A new generation is published when the seated set, the rendezvous endpoint (an edited port) or the
trainer config (an edited spec.trainer, named by its digest) changes, and only if it holds at least
`minReplicas` workers; otherwise the last generation stays published and the job waits (a
condition says why).
The new generation always names the old one in `handoffFrom`, so the old group may commit the
checkpoint it takes while stopping at a step boundary: after a planned resize, and equally after a
preemption with notice (SIGTERM: the leaving worker checkpoints with the others before it goes), no
finished step is lost. A group that lost a member without notice cannot take that checkpoint (its
collectives fail), and an old group can never commit over a newer generation's marker, so the
handoff gives a stale group nothing.
"""

from __future__ import annotations

from dstj_api import Membership
from dstj_operator.decide import EndKind, Worker
from dstj_operator.spec import DeepSeekTrainingJobSpec


def live(spec: DeepSeekTrainingJobSpec, workers: list[Worker]) -> list[Worker]:
    """Workers that count toward the job: alive, not terminating, and wanted (index below replicas)."""
    return [w for w in workers if w.end is None and not w.terminating and w.index < spec.replicas]


def seated(current: Membership | None, workers: list[Worker]) -> list[Worker]:
    """Workers that may hold a seat: Ready ones, and current members that may stay."""
    members = set(current.members) if current is not None and current.state == "running" else set()
    return [w for w in workers if w.ready or (w.name in members and w.may_stay)]


def next_membership(current: Membership | None, workers: list[Worker], replicas: int, min_replicas: int,
                    endpoint: str, config_hash: str) -> Membership | None:
    """The membership to publish now, or None when the current one stands."""
    members = [w.name for w in sorted(seated(current, workers), key=lambda w: w.index)[:replicas]]
    if (current is not None and current.members == members and current.rdzv_endpoint == endpoint
            and runs_config(current, config_hash)):
        return None
    if len(members) < min_replicas:
        return None
    generation = 0 if current is None else current.generation + 1
    return Membership(
        generation=generation, world_size=len(members), members=members, rdzv_endpoint=endpoint,
        handoff_from=current.generation if current is not None else None, config_hash=config_hash,
    )


def runs_config(current: Membership, config_hash: str) -> bool:
    """Whether generation `current` runs the trainer config named `config_hash`. One published by an operator
    older than configHash names none: taken as current, so an operator upgrade restarts no running job."""
    return current.config_hash is None or current.config_hash == config_hash


def republished(current: Membership) -> Membership:
    """The current members again as the next generation: fresh rendezvous keys, no handoff."""
    return current.model_copy(update={"generation": current.generation + 1, "handoff_from": None})


def to_delete(spec: DeepSeekTrainingJobSpec, workers: list[Worker]) -> list[Worker]:
    """Worker pods to delete: ended ones (replaced under new names), those above replicas, all when suspended.

    The last crashed pod of an index stays until its replacement runs, so `kubectl logs` still shows
    why it crashed. A pod already terminating is left to finish: never wait for one stuck on a lost node.
    """
    kept = _crash_evidence(workers)
    return [w for w in workers if (w.end is not None or w.index >= spec.replicas or spec.suspend)
            and not w.terminating and not (w.name in kept and w.index < spec.replicas and not spec.suspend)]


def _crash_evidence(workers: list[Worker]) -> set[str]:
    """The newest crashed pod of each index whose replacement does not run yet."""
    running = {w.index for w in workers if w.end is None and not w.terminating and w.phase == "Running"}
    newest: dict[int, Worker] = {}
    for w in workers:
        crashed = w.end in (EndKind.CRASHED, EndKind.MISCONFIGURED) and w.index not in running
        if crashed and (w.index not in newest or w.created > newest[w.index].created):
            newest[w.index] = w
    return {w.name for w in newest.values()}


def missing_indices(workers: list[Worker], replicas: int) -> list[int]:
    """Indices below `replicas` with no live worker pod (ended or terminating pods do not count)."""
    present = {w.index for w in workers if w.end is None and not w.terminating}
    return [i for i in range(replicas) if i not in present]
