"""Children converge on the spec now, not the spec at creation: a child deleted or edited by hand heals, and
an edit of minReplicas or rendezvous.port reaches the PDB, the Service, the NetworkPolicy, the store and the
next generation. One running job serves every step (they do not interfere)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from dstj_operator.crd import PLURAL
from localcluster.kubectl import Kubectl
from localcluster.waiting import wait_until
from tests.operator.conftest import job_condition, job_status, tiny_job, trained_steps, training, worker_pods

NAME = "edits"


def _get(kube: Kubectl, ns: str, kind: str, name: str) -> dict[str, Any] | None:
    out = kube("get", kind, name, "-n", ns, "-o", "json", check=False)
    return json.loads(out.stdout) if out.returncode == 0 else None


@pytest.mark.slow
def test_children_heal_and_follow_live_edits_of_a_running_job(
    kube_nodes: Kubectl, ns: str, operator: subprocess.Popen[bytes], tmp_path: Path,
) -> None:
    kube = kube_nodes
    data_log = tmp_path / "data-log"  # each rank's record of the steps it trained, per generation
    job = tiny_job(ns, NAME, tmp_path, steps=100000, interval=5, data_log=data_log)
    kube("apply", "-f", "-", stdin=json.dumps(job))
    wait_until(lambda: training(kube, ns, NAME) is not None, timeout=180, what="training")

    # Deleted by hand: back within the pass their watch events trigger.
    kube("delete", "configmap", f"{NAME}-config", "-n", ns)
    kube("delete", "service", f"{NAME}-rdzv", "-n", ns)
    wait_until(lambda: _get(kube, ns, "configmap", f"{NAME}-config") is not None
               and _get(kube, ns, "service", f"{NAME}-rdzv") is not None, timeout=30,
               what="the deleted ConfigMap and Service to be restored")
    # Edited by hand: the operator's fields are taken back.
    kube("patch", "service", f"{NAME}-rdzv", "-n", ns, "--type=json",
         "-p", '[{"op": "replace", "path": "/spec/ports/0/port", "value": 1234}]')
    wait_until(lambda: (_get(kube, ns, "service", f"{NAME}-rdzv") or {})["spec"]["ports"][0]["port"] == 29400,
               timeout=30, what="the hand-edited Service port to be taken back")

    kube("patch", PLURAL, NAME, "-n", ns, "--type=merge", "-p", '{"spec":{"minReplicas":2}}')
    wait_until(lambda: (_get(kube, ns, "pdb", f"{NAME}-workers") or {})["spec"]["minAvailable"] == 2, timeout=30,
               what="the PodDisruptionBudget to follow minReplicas")

    before = job_status(kube, ns, NAME)["membership"]["generation"]
    kube("patch", PLURAL, NAME, "-n", ns, "--type=merge", "-p", '{"spec":{"rendezvous":{"port":29500}}}')
    wait_until(lambda: (_get(kube, ns, "service", f"{NAME}-rdzv") or {})["spec"]["ports"][0]["port"] == 29500,
               timeout=30, what="the rendezvous Service to move to the new port")
    policy = _get(kube, ns, "networkpolicy", f"{NAME}-rdzv-ingress") or {}
    assert policy["spec"]["ingress"][0]["ports"][0]["port"] == 29500
    status = wait_until(lambda: (s := job_status(kube, ns, NAME))["membership"]["generation"] > before and s,
                        timeout=60, what="a generation at the new endpoint")
    assert status["membership"]["rdzvEndpoint"].endswith(":29500")
    wait_until(lambda: training(kube, ns, NAME) is not None, timeout=120,
               what="training at the new endpoint")

    # And the next generation after a lost worker forms at the new port too.
    before = job_status(kube, ns, NAME)["membership"]["generation"]
    victim = worker_pods(kube, ns, NAME)[0]["metadata"]["name"]
    kube("delete", "pod", victim, "-n", ns, "--wait=false")
    wait_until(lambda: job_status(kube, ns, NAME)["membership"]["generation"] > before
               and training(kube, ns, NAME) is not None, timeout=180,
               what="the generation after the lost worker to train")

    # A rolled edit whose replacements cannot start (no such image): the old pods keep training, and the job says
    # why (Progressing, RolloutBlocked, naming the pull error).
    status = job_status(kube, ns, NAME)
    members, step = status["membership"]["members"], status["progress"]["step"]
    kube("patch", PLURAL, NAME, "-n", ns, "--type=merge", "-p", '{"spec":{"image":"moe-trainer-typo:1"}}')
    status = wait_until(lambda: (s := job_status(kube, ns, NAME)) and job_condition(s, "Progressing")["reason"]
                        == "RolloutBlocked" and s, timeout=60, what="the blocked rollout's condition")
    # The kubelet's reason moves from ErrImagePull to ImagePullBackOff between retries: either names the pull error.
    message = job_condition(status, "Progressing")["message"]
    assert "ErrImagePull" in message or "ImagePullBackOff" in message, message
    wait_until(lambda: training(kube, ns, NAME, after=step + 5) is not None, timeout=60,
               what="the old pods to keep training")
    assert job_status(kube, ns, NAME)["membership"]["members"] == members

    # The image edited again, to one that exists: every worker is replaced, all at one step boundary (the group
    # checkpoints and the replacements resume from it), and no generation mixes images.
    kube("patch", PLURAL, NAME, "-n", ns, "--type=merge", "-p", '{"spec":{"image":"moe-trainer:v2"}}')
    generation = int(kube("get", PLURAL, NAME, "-n", ns, "-o", "jsonpath={.metadata.generation}").stdout)
    status = wait_until(lambda: (s := job_status(kube, ns, NAME)).get("observedGeneration") == generation and s,
                        timeout=180, what="the rolled image to be live")
    pods = {p["metadata"]["name"]: p for p in worker_pods(kube, ns, NAME)}
    fresh = status["membership"]["members"]
    assert fresh and status["membership"]["state"] == "running", status["membership"]
    assert all(pods[m]["spec"]["containers"][0]["image"] == "moe-trainer:v2" for m in fresh), fresh
    assert not set(fresh) & set(members)
    wait_until(lambda: all(p["spec"]["containers"][0]["image"] == "moe-trainer:v2"
                           for p in worker_pods(kube, ns, NAME)), timeout=60, what="the old pods to be retired")
    trained = trained_steps(data_log)
    new_g = status["membership"]["generation"]
    last_old = max(max(steps) for g, steps in trained.items() if g < new_g)
    wait_until(lambda: trained_steps(data_log).get(new_g), timeout=60, what="the new generation's first step")
    assert min(trained_steps(data_log)[new_g]) == last_old + 1, "a step was lost or repeated across the rollout"
    events = kube("get", "events", "-n", ns, "-o", "jsonpath={.items[*].reason}").stdout.split()
    assert {"RolloutBlocked", "RolloutStop", "WorkerReplaced"} <= set(events)

    # An immutable field is refused by the API server, with what to do instead.
    refused = kube("patch", PLURAL, NAME, "-n", ns, "--type=merge", "-p", '{"spec":{"trainer":{"train":{"seed":7}}}}',
                   check=False)
    assert refused.returncode != 0 and "spec.trainer.train.seed cannot change" in refused.stderr, refused.stderr

    # spec.trainer.train.steps edited on the running job: the same members form a generation on the new config at
    # a step boundary, and the job ends at the new count. observedGeneration follows only once that generation
    # trains; until then the job is Progressing (False before the edit, so a later transition time means it was
    # True in between and went back).
    status = job_status(kube, ns, NAME)
    before, config = status["membership"]["generation"], status["membership"]["configHash"]
    assert job_condition(status, "Progressing")["status"] == "False"
    edited_at = job_condition(status, "Progressing")["lastTransitionTime"]
    target = status["progress"]["step"] + 60
    kube("patch", PLURAL, NAME, "-n", ns, "--type=merge",
         "-p", json.dumps({"spec": {"trainer": {"train": {"steps": target}, "optim": {"lr": 0.002}}}}))
    generation = int(kube("get", PLURAL, NAME, "-n", ns, "-o", "jsonpath={.metadata.generation}").stdout)
    status = wait_until(lambda: (s := job_status(kube, ns, NAME)).get("observedGeneration") == generation and s,
                        timeout=120, what="the edit to be live (observedGeneration)")
    assert status["membership"]["generation"] > before and status["membership"]["configHash"] != config
    progressing = job_condition(status, "Progressing")
    assert progressing["status"] == "False" and progressing["lastTransitionTime"] > edited_at, progressing
    if status["phase"] == "Running":
        assert status["progress"]["generation"] == status["membership"]["generation"]
    status = wait_until(lambda: (s := job_status(kube, ns, NAME)).get("phase") == "Succeeded" and s, timeout=240,
                        what=f"the job to finish at the edited step count {target}")
    assert status["progress"]["step"] == status["progress"]["totalSteps"] == target
