"""status.observedGeneration and the Progressing condition: whether the training group runs the current spec.

GitOps tools read observedGeneration as "the edit is live", so it advances only when that is true:
- while a generation trains, once it runs the edited trainer config at the edited rendezvous endpoint, on
  pods built from the current pod template, and has reported a step (the edit took effect, not just got
  published);
- with no generation training (waiting for workers, suspended, finished), at once: the children already
  match the spec when this is asked, and the next generation is built from it.
Replica counts are not part of it: `replicas` and `readyReplicas` track them, so a scale beyond the
cluster's capacity does not leave a job Progressing for as long as the capacity is missing.
"""

from __future__ import annotations

from dataclasses import dataclass

from dstj_api import Membership, ProgressReport
from dstj_operator.policies.scale import runs_config


@dataclass(frozen=True, slots=True)
class RolloutVerdict:
    """Whether the running group runs the current spec; `waiting_for` says what it does not run yet."""

    up_to_date: bool
    waiting_for: str = ""


def evaluate(*, spec_changed: bool, running: bool, membership: Membership | None, progress: ProgressReport | None,
             config_hash: str, endpoint: str, stale_pods: int = 0, suspend: bool = False) -> RolloutVerdict:
    """The verdict for a pass. `spec_changed`: metadata.generation is newer than the observedGeneration stored;
    `running`: a generation trains now; `stale_pods`: members whose pods were built from an older template;
    `suspend`: spec.suspend (a stopped generation without it is a rolled edit's stop, not a suspension)."""
    if not spec_changed or membership is None:
        return RolloutVerdict(True)
    g = membership.generation
    if membership.state == "suspended" and not suspend:  # nothing trains in between, yet the edit is not live
        return RolloutVerdict(False, f"generation {g} stops the group at a step boundary; the replacements on the "
                              "edited pod template take over once it has checkpointed")
    if not running or membership.state != "running":
        return RolloutVerdict(True)
    if not runs_config(membership, config_hash):
        return RolloutVerdict(False, f"generation {g} runs the previous trainer config; the next generation takes "
                              "the edit at a step boundary")
    if membership.rdzv_endpoint != endpoint:
        return RolloutVerdict(False, f"generation {g} forms at {membership.rdzv_endpoint}; the next one at "
                              f"{endpoint}")
    if stale_pods:
        return RolloutVerdict(False, f"{stale_pods} members of generation {g} run pods of the previous template; "
                              "replacements start beside them and take over at a step boundary")
    if progress is None or progress.generation < g:
        return RolloutVerdict(False, f"generation {g} runs the edited spec and has not reported a step yet")
    return RolloutVerdict(True)
