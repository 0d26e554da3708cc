"""One long-running job through what spot capacity does to it: a worker deleted, scale up and down,
the rendezvous pod lost, suspend and resume. Real API server, scheduler, process nodes, trainer pods.

One scenario instead of five tests: each phase starts from the state the last one left, as in a
real cluster, and the job's start-up (a minute of pods importing torch) is paid once.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from dstj_api.contract import INDEX_LABEL, JOB_LABEL, ROLE_LABEL
from dstj_operator.crd import PLURAL
from localcluster.kubectl import Kubectl
from localcluster.waiting import wait_until
from tests.operator.conftest import job_status, tiny_job, training, worker_pods

NAME = "elastic"


def _progress(kube: Kubectl, ns: str) -> dict[str, Any]:
    return job_status(kube, ns, NAME).get("progress") or {}


def _trains_at(kube: Kubectl, ns: str, world: int, after_step: int, timeout: float = 120) -> dict[str, Any]:
    """Wait until the published generation reports steps beyond `after_step` at world size `world`."""
    def ok() -> dict[str, Any] | None:
        return training(kube, ns, NAME, world=world, after=after_step)
    return wait_until(ok, timeout=timeout, interval=0.5, what=f"training at W={world} past step {after_step}")


@pytest.mark.slow
def test_a_job_survives_deletion_scaling_rendezvous_loss_and_suspension(
    kube_nodes: Kubectl, ns: str, operator: subprocess.Popen[bytes], tmp_path: Path,
) -> None:
    kube = kube_nodes
    kube("apply", "-f", "-", stdin=json.dumps(tiny_job(ns, NAME, tmp_path, steps=100000, interval=5)))
    p = _trains_at(kube, ns, 2, 2, timeout=180)

    # A worker deleted (as a preemption would): replaced under a new name at once, new generation, resumed.
    gen = job_status(kube, ns, NAME)["membership"]["generation"]
    victim = worker_pods(kube, ns, NAME)[0]
    index = victim["metadata"]["labels"][INDEX_LABEL]
    kube("delete", "pod", victim["metadata"]["name"], "-n", ns, "--wait=false")
    started = time.monotonic()
    wait_until(lambda: any(w["metadata"]["labels"][INDEX_LABEL] == index
                           and w["metadata"]["name"] != victim["metadata"]["name"]
                           for w in worker_pods(kube, ns, NAME)), timeout=10, what="a replacement worker")
    replaced_in = time.monotonic() - started
    p = _trains_at(kube, ns, 2, p["step"])
    status = job_status(kube, ns, NAME)
    assert p["generation"] > gen  # _trains_at saw it equal to the published generation, in the same read
    assert status.get("preemptions", 0) >= 1 and status.get("crashes", 0) == 0, status
    assert replaced_in < 10

    # kubectl scale through the scale subresource: the layout follows the world size.
    kube("scale", PLURAL, NAME, "-n", ns, "--replicas=3")
    p = _trains_at(kube, ns, 3, p["step"])
    assert p["expertParallel"] * p["dataParallel"] == 3
    kube("scale", PLURAL, NAME, "-n", ns, "--replicas=1")
    p = _trains_at(kube, ns, 1, p["step"])
    assert (p["expertParallel"], p["dataParallel"]) == (1, 1)
    # Workers outside the new generation stop after their handoff checkpoint: wait for them to go.
    wait_until(lambda: len(worker_pods(kube, ns, NAME)) == 1, timeout=60, what="one worker left at W=1")

    # The rendezvous pod lost: recreated, and the next generation meets in the new store.
    sel = f"{JOB_LABEL}={NAME},{ROLE_LABEL}=rendezvous"
    old = kube("get", "pods", "-n", ns, "-l", sel, "-o", "jsonpath={.items[*].metadata.name}").stdout
    kube("delete", "pod", old, "-n", ns, "--wait=false")
    wait_until(lambda: (n := kube("get", "pods", "-n", ns, "-l", sel, "-o", "jsonpath={.items[?(@.status.phase=="
                                  "'Running')].metadata.name}").stdout) and n != old,
               timeout=60, what="a new rendezvous pod")
    kube("scale", PLURAL, NAME, "-n", ns, "--replicas=2")
    p = _trains_at(kube, ns, 2, p["step"])

    # Suspend: workers checkpoint at a step boundary and go; resume continues from that very step.
    kube("patch", PLURAL, NAME, "-n", ns, "--type=merge", "-p", '{"spec":{"suspend":true}}')
    wait_until(lambda: job_status(kube, ns, NAME).get("phase") == "Suspended", timeout=90,
               what="the job to be suspended")
    assert not worker_pods(kube, ns, NAME, live_only=False)  # Suspended means the workers are gone
    stopped = _progress(kube, ns)
    latest = json.loads((tmp_path / "checkpoints" / "latest.json").read_text())
    assert latest["step"] == stopped["step"] == stopped["lastCheckpointStep"], (latest, stopped)
    kube("patch", PLURAL, NAME, "-n", ns, "--type=merge", "-p", '{"spec":{"suspend":false}}')
    p = _trains_at(kube, ns, 2, stopped["step"], timeout=180)
    status = job_status(kube, ns, NAME)
    assert status.get("crashes", 0) == 0, status
    wanted = {"WorkerPreempted", "WorkerCreated", "GenerationBumped", "Scaled", "RendezvousCreated"}
    wait_until(lambda: wanted <= set(kube("get", "events", "-n", ns, "-o", "jsonpath={.items[*].reason}"
                                          ).stdout.split()), timeout=30, what=f"the events {sorted(wanted)}")
    kube("delete", PLURAL, NAME, "-n", ns, "--wait=false")
