"""Pod facts as data: a lost node told from a failed probe, preemptions from crashes and config errors."""

from __future__ import annotations

from typing import Any

import pytest

from dstj_api import EXIT_CONFIG, EXIT_STOPPED
from dstj_operator.decide import MESSAGE_CHARS, EndKind, classify_end, observe


def _pod(ready: str, containers_ready: str) -> dict[str, Any]:
    return {"metadata": {"name": "w0", "labels": {"i": "0"}},
            "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": ready},
                                                          {"type": "ContainersReady", "status": containers_ready}]}}


@pytest.mark.parametrize(("ready", "containers_ready", "node_lost"), [
    ("True", "True", False), ("False", "False", False), ("False", "True", True)])
def test_a_lost_node_is_told_from_a_failed_probe(ready: str, containers_ready: str, node_lost: bool) -> None:
    # The node controller sets only the pod's Ready to False; a failed probe sets ContainersReady too.
    w = observe(_pod(ready, containers_ready), "i")
    assert (w.ready, w.node_lost) == (ready == "True", node_lost)


def failed(code: int, reason: str = "Error", message: str | None = None) -> dict[str, Any]:
    terminated = {"exitCode": code, "reason": reason} | ({"message": message} if message is not None else {})
    return {"status": {"phase": "Failed", "containerStatuses": [{"state": {"terminated": terminated}}]}}


@pytest.mark.parametrize(("pod", "kind"), [
    pytest.param({"status": {"phase": "Failed", "reason": "Evicted"}}, EndKind.PREEMPTED, id="evicted"),
    pytest.param({"status": {"phase": "Running", "conditions": [
        {"type": "DisruptionTarget", "status": "True", "reason": "PreemptionByScheduler"}]}},
        EndKind.PREEMPTED, id="disruption-target"),
    pytest.param(failed(EXIT_STOPPED), EndKind.PREEMPTED, id="trainer-stopped-on-request"),
    pytest.param(failed(143), EndKind.PREEMPTED, id="sigterm"),
    pytest.param(failed(1), EndKind.CRASHED, id="non-zero-exit"),
    pytest.param(failed(137, "OOMKilled"), EndKind.CRASHED, id="oom-killed"),
    pytest.param({"status": {"phase": "Succeeded"}}, EndKind.SUCCEEDED, id="succeeded"),
    pytest.param({"status": {"phase": "Running"}}, None, id="still-running"),
    pytest.param(failed(EXIT_CONFIG), EndKind.MISCONFIGURED, id="config-error"),
])
def test_preemptions_are_told_from_crashes(pod: dict[str, Any], kind: EndKind | None) -> None:
    assert classify_end(pod)[0] == kind


def test_a_config_error_is_a_misconfiguration_whose_reason_is_the_workers_message() -> None:
    message = ("checkpoint.resumeFrom '/ckpt/none' (checkpoint.resumeFrom, or the job's spec.checkpoint.resumeFrom) "
               "holds no checkpoint: name a checkpoint directory ...\n")
    assert classify_end(failed(EXIT_CONFIG, message=message)) == (EndKind.MISCONFIGURED, message.strip())


def test_a_long_termination_message_is_trimmed_to_stay_readable_in_conditions() -> None:
    kind, reason = classify_end(failed(EXIT_CONFIG, message="x" * 5000))
    assert kind is EndKind.MISCONFIGURED and len(reason) == MESSAGE_CHARS and reason.endswith("...")


def test_a_config_error_without_a_message_still_says_what_kind_of_end_it_was() -> None:
    assert classify_end(failed(EXIT_CONFIG)) == (EndKind.MISCONFIGURED,
                                                 "exit code 78 (a setting only run time could check)")


def test_a_crash_carries_the_end_of_the_workers_log_from_its_termination_message() -> None:
    log_tail = "Traceback (most recent call last):\n" + "  frame\n" * 400 + "ValueError: lr must be positive\n"
    kind, reason = classify_end(failed(1, message=log_tail))
    assert kind is EndKind.CRASHED and reason.startswith("exit code 1 (Error): ...")
    assert reason.endswith("ValueError: lr must be positive") and len(reason) < MESSAGE_CHARS + 30


def test_an_oom_kill_is_a_crash_that_says_so() -> None:
    assert classify_end(failed(137, "OOMKilled")) == (EndKind.CRASHED, "OOMKilled")


def test_a_worker_records_its_pod_template_and_why_it_cannot_start() -> None:
    pod = _pod("False", "False")
    pod["metadata"]["annotations"] = {"tmpl": "abc"}
    pod["status"]["containerStatuses"] = [{"state": {"waiting": {"reason": "ImagePullBackOff",
                                                                  "message": "Back-off pulling image \"nope:1\""}}}]
    w = observe(pod, "i", "tmpl")
    assert (w.template, w.stuck) == ("abc", 'ImagePullBackOff: Back-off pulling image "nope:1"')
    unscheduled = _pod("False", "False")
    unscheduled["status"]["conditions"].append({"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                                                "message": "0/2 nodes are available: 2 Insufficient cpu."})
    assert observe(unscheduled, "i").stuck == "Unschedulable: 0/2 nodes are available: 2 Insufficient cpu."
    assert observe(_pod("True", "True"), "i").stuck == ""
    # The checkpoint owner, an init container, runs the job's image: a bad image stops the pod there first.
    at_init = _pod("False", "False")
    at_init["status"]["initContainerStatuses"] = [{"state": {"waiting": {"reason": "ErrImagePull",
                                                                          "message": "pull \"nope:1\" failed"}}}]
    assert observe(at_init, "i").stuck == 'ErrImagePull: pull "nope:1" failed'
