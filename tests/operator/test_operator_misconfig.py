"""What only run time can find reaches the job with what to change: the worker's message, not a bare exit code."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from dstj_operator.children import CHECKPOINT_MOUNT
from localcluster.kubectl import Kubectl
from localcluster.waiting import wait_until
from tests.operator.conftest import job_status, tiny_job


def _messages(kube: Kubectl, ns: str, name: str) -> list[str]:
    """What the job says about itself: its events' and its conditions' messages."""
    events = json.loads(kube("get", "events", "-n", ns, "--field-selector", f"involvedObject.name={name}",
                             "-o", "json").stdout)["items"]
    conditions = job_status(kube, ns, name).get("conditions") or []
    return [e.get("message", "") for e in events] + [c.get("message", "") for c in conditions]


@pytest.mark.slow
def test_a_resume_from_that_holds_no_checkpoint_reaches_the_job_as_the_workers_message(
    kube_nodes: Kubectl, ns: str, operator: subprocess.Popen[bytes], tmp_path: Path,
) -> None:
    # Relative: a directory of the job's own checkpoint storage, so the pod sees it (and sees it empty).
    (tmp_path / "checkpoints" / "empty").mkdir(parents=True)
    job = tiny_job(ns, "noresume", tmp_path, replicas=1,
                   checkpoint={"hostPath": str(tmp_path / "checkpoints"), "resumeFrom": "empty"})
    kube_nodes("apply", "-f", "-", stdin=json.dumps(job))

    said = wait_until(lambda: [m for m in _messages(kube_nodes, ns, "noresume") if "holds no checkpoint" in m],
                      timeout=120, what="the worker's termination message on the job")

    assert f"checkpoint.resumeFrom {CHECKPOINT_MOUNT + '/empty'!r}" in said[0] and "unset it to start afresh" in said[0]
    # Retrying cannot help: the job fails at once on the worker's word, with no crash budget spent on retries.
    status = wait_until(lambda: (s := job_status(kube_nodes, ns, "noresume")).get("phase") == "Failed" and s,
                        timeout=60, what="the job to fail on the config error")
    failed = next(c for c in status["conditions"] if c["type"] == "Failed")
    assert failed["reason"] == "WorkerConfigError" and "holds no checkpoint" in failed["message"]
    assert status["crashes"] == 1
