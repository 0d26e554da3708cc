"""Upgrading the operator: it refuses an older CRD than its own (Helm never upgrades `crds/`), and a newer
operator taking over a running job keeps the workers that run the previous trainer code training.

On the local cluster every pod runs this checkout's code, so "workers with the previous trainer code" are
the workers already running when the operator changes: the test keeps exactly those pods (same names,
no replacement) through the switch. What makes the second operator "newer" is what it writes that the
running workers have never seen: a membership generation with one more field, and a trainer config
with one more field. A newer operator writes them through the same API, so the test writes them
itself, between the two operators, as the newer one's first pass would (no test-only code in the
product); then the operator starts again and must carry the job to Succeeded.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from dstj_operator.crd import PLURAL
from dstj_operator.crd_revision import APPLY_CRDS, CRD_NAME, CRD_REVISION, REVISION_ANNOTATION
from localcluster.kubectl import Kubectl
from localcluster.waiting import wait_until
from scripts.timeline import JobWatcher
from tests.conftest import install_crd
from tests.operator.conftest import StartOperator, job_status, tiny_job, training, worker_pods

NAME = "upgrade"
NEWER_FIELD = "fromANewerOperator"
"""A field no model of this checkout declares, in the membership and in the trainer config."""


def test_an_operator_refuses_to_start_against_an_older_crd(
    crd: Kubectl, start_operator: StartOperator, tmp_path: Path,
) -> None:
    older = CRD_REVISION - 1
    crd("annotate", "crd", CRD_NAME, f"{REVISION_ANNOTATION}={older}", "--overwrite")
    try:
        proc = start_operator("old-crd")
        code = proc.wait(60)
    finally:
        install_crd(crd)  # this checkout's CRD again, for the tests after this one
    log = (tmp_path / "old-crd.log").read_text()
    assert code == 2, log[-2000:]
    assert f"is revision {older}, older than this operator's revision {CRD_REVISION}" in log, log[-2000:]
    assert APPLY_CRDS in log


def _training(kube: Kubectl, ns: str, generation: int | None = None, after: int = 0) -> dict[str, Any] | None:
    """The progress while the published generation (`generation`, where given) trains past step `after`."""
    report = training(kube, ns, NAME, after=after)
    return report if report is not None and generation in (None, report.get("generation")) else None


def _worker_names(kube: Kubectl, ns: str) -> list[str]:
    return sorted(p["metadata"]["name"] for p in worker_pods(kube, ns, NAME))


def _workers_created(kube: Kubectl, ns: str) -> list[str]:
    """The job's WorkerCreated Events (each names the pods a pass created): every worker any operator made,
    including pods gone since (a job that finishes removes its workers)."""
    out = kube("get", "events", "-n", ns, "--field-selector", f"reason=WorkerCreated,involvedObject.name={NAME}",
               "-o", "json")
    return sorted(e["message"] for e in json.loads(out.stdout)["items"])


@pytest.mark.slow
def test_a_newer_operator_takes_over_a_running_job_and_its_workers_finish_it(
    kube_nodes: Kubectl, ns: str, start_operator: StartOperator, tmp_path: Path,
) -> None:
    kube = kube_nodes
    steps = 30
    op_a = start_operator("op-a")
    kube("apply", "-f", "-", stdin=json.dumps(tiny_job(ns, NAME, tmp_path, steps=steps, interval=5)))
    watcher = JobWatcher(kube, ns, NAME).start()
    before = wait_until(lambda: _training(kube, ns, after=2), timeout=180, what="training at W=2 past step 2")
    workers = _worker_names(kube, ns)
    assert len(workers) == 2
    created = _workers_created(kube, ns)

    # The upgrade: the old operator stops (a rollout's SIGTERM) ...
    op_a.terminate()
    assert op_a.wait(60) == 0
    watcher.mark("operator A stopped")

    # ... and the newer one's first pass publishes a generation and a trainer config with a field
    # the running workers do not know (the same members: a re-formed group, handing off its checkpoint).
    status = job_status(kube, ns, NAME)
    membership = status["membership"]
    newer = membership | {"generation": membership["generation"] + 1, "handoffFrom": membership["generation"],
                          NEWER_FIELD: "a field of the next release"}
    kube("patch", PLURAL, NAME, "-n", ns, "--subresource=status", "--type=merge", "-p",
         json.dumps({"status": {"membership": newer}}))
    published = job_status(kube, ns, NAME)["membership"]
    assert published.get(NEWER_FIELD), f"the API server pruned {NEWER_FIELD} from status.membership: {published}"
    config = json.loads(kube("get", "configmap", f"{NAME}-config", "-n", ns, "-o", "json").stdout)
    trainer = json.loads(config["data"]["trainer.json"]) | {NEWER_FIELD: {"enabled": True}}
    kube("patch", "configmap", f"{NAME}-config", "-n", ns, "--type=merge", "-p",
         json.dumps({"data": {"trainer.json": json.dumps(trainer, indent=2)}}))
    start_operator("op-b")
    watcher.mark("operator B started")

    # The running workers (the previous trainer code) join the newer generation and train on; nobody
    # replaced them, and no index has two workers.
    wait_until(lambda: _training(kube, ns, generation=newer["generation"], after=before["step"]), timeout=180,
               what=f"the running workers to train in generation {newer['generation']}")
    # Asked of the Events, not only of the live pods: on a loaded machine the job can finish (and its pods go)
    # before the pods are listed.
    assert _workers_created(kube, ns) == created, "the operator switch replaced or duplicated workers"
    assert set(_worker_names(kube, ns)) <= set(workers), "the operator switch replaced or duplicated workers"
    final = wait_until(lambda: (s := job_status(kube, ns, NAME)).get("phase") in ("Succeeded", "Failed") and s,
                       timeout=300, what="the job to finish under operator B")
    watcher.stop()
    record = watcher.timeline()
    assert final["phase"] == "Succeeded", record
    assert final["progress"]["step"] == steps and final.get("crashes", 0) == 0, final
    assert json.loads((tmp_path / "checkpoints" / "latest.json").read_text())["step"] == steps
    # No lost step: the step the trainer reports never goes back (a resume from an older checkpoint would).
    seen = [s.step for s in watcher.samples if s.step is not None]
    assert seen == sorted(seen), record
    kube("delete", PLURAL, NAME, "-n", ns, "--wait=false")
