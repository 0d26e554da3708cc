"""Rolled edits (spec.image, spec.pod, spec.devicesPerWorker): every worker of a generation runs one pod template.

A worker pod records the template it was built from (`TEMPLATE_ANNOTATION`). When the spec asks for another:
1. a replacement for each index starts beside the running pod (surge): the running group keeps training;
2. once as many replacements are Ready as the group has members (at least minReplicas), the running
   generation is stopped (a `suspended`-state generation handing off from it): the group checkpoints at
   the next step boundary and reports `stopped`;
3. then the replacements form the next generation from that checkpoint (no step lost), and the old pods
   are deleted.
A replacement that cannot start (a missing image, unschedulable) blocks the rollout: the old pods keep
training, and the Progressing condition says why. The surge needs room for a second set of workers for
the time of a start: that is the price of never leaving the job with nothing training.

Pods built by an operator older than the annotation name no template: taken as current, so an operator
upgrade replaces no running worker.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from dstj_api import Membership, ProgressReport
from dstj_operator.decide import Worker
from dstj_operator.policies.clock import age
from dstj_operator.spec import DeepSeekTrainingJobSpec


@dataclass(frozen=True, slots=True)
class RollPlan:
    """What a pass does about pods of another template."""

    candidates: list[Worker]
    """The workers the next generation may seat (all of one template)."""
    surge: list[int] = field(default_factory=list)
    """Indices to start a replacement for, beside their running pod."""
    retire: list[Worker] = field(default_factory=list)
    """Pods of the old template to delete: the group no longer needs them."""
    stop: bool = False
    """Stop the running generation now (its group checkpoints), before the replacements form the next."""
    hold: bool = False
    """Publish nothing this pass: the stopped group has not reported its checkpoint yet."""
    stale_members: int = 0
    """Members of the published generation on pods of the old template."""
    blocked: str = ""
    """Why replacements cannot start ("" when none is stuck)."""


def current_template(w: Worker, template: str) -> bool:
    """Whether a worker runs pods of `template` (an unannotated pod counts as current)."""
    return w.template is None or w.template == template


def plan(spec: DeepSeekTrainingJobSpec, live: list[Worker], current: Membership | None,
         progress: ProgressReport | None, template: str, generation_time: str | None, now: datetime) -> RollPlan:
    """The plan for the `live` workers (alive, wanted) of a job whose pods should run `template`."""
    old = [w for w in live if not current_template(w, template)]
    new = [w for w in live if current_template(w, template)]
    members = set(current.members) if current is not None and current.state == "running" else set()
    stale_members = [w for w in old if w.name in members]
    if not old:
        return RollPlan(candidates=live)
    covered = {w.index for w in new}
    surge = sorted({w.index for w in old} - covered)
    stuck = [w for w in new if w.stuck]
    blocked = (f"{len(stuck)} replacement pod(s) cannot start, so the running pods keep training: {stuck[0].name}: "
               f"{stuck[0].stuck}" if stuck else "")
    if not stale_members:  # nothing trains on the old pods: they go, once a stopped group has checkpointed
        if current is not None and current.state == "suspended" \
                and not _stop_reported(current, progress, old, spec, generation_time, now):
            return RollPlan(candidates=[], surge=surge, hold=True, blocked=blocked)
        return RollPlan(candidates=new, surge=surge, retire=old, blocked=blocked)
    ready = [w for w in new if w.ready]
    if len(ready) >= min(spec.replicas, max(len(stale_members), spec.min_replicas)):
        return RollPlan(candidates=[], surge=surge, stop=True, stale_members=len(stale_members))
    # Too few replacements ready: the old pods train on (and may form a new generation among themselves).
    return RollPlan(candidates=old, surge=surge, stale_members=len(stale_members), blocked=blocked)


def _stop_reported(stop: Membership, progress: ProgressReport | None, old: list[Worker],
                   spec: DeepSeekTrainingJobSpec, generation_time: str | None, now: datetime) -> bool:
    """Whether the group the stop generation ended has committed its checkpoint (its report says stopped), or
    can no longer: its pods are gone, or it did not report within rendezvous.joinTimeoutSeconds."""
    stopped = stop.handoff_from
    if stopped is None or progress is None or progress.generation > stopped:
        return True
    if progress.generation == stopped and progress.state == "stopped":
        return True
    if not old:
        return True
    waited = age(generation_time, now)
    return waited is not None and waited >= spec.rendezvous.join_timeout_seconds
