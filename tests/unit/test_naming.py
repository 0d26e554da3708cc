"""A job name the API server admits gives every child a valid name; one character more is refused."""

from __future__ import annotations

import inspect
import re
from typing import Any

import pytest

from dstj_operator import children, naming
from dstj_operator.spec import DeepSeekTrainingJobSpec

DNS_1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS_1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


def every_child(name: str) -> list[dict[str, Any]]:
    """Every object the operator builds for a job of this name, workers at the highest index."""
    spec_data = {"replicas": 1024, "maxReplicas": 1024, "checkpoint": {"storageClass": "shared"}}
    job = {"metadata": {"name": name, "namespace": "team", "uid": "uid-1"}, "spec": spec_data}
    spec = DeepSeekTrainingJobSpec.model_validate(spec_data)
    suffix = naming.new_suffix()
    objs = [children.trainer_config_map(job, spec), children.rendezvous_service(job, spec),
            children.workers_service(job), children.rendezvous_pod(job, spec, suffix),
            children.worker_pod(job, spec, naming.MAX_WORKER_INDEX, suffix), *children.worker_rbac(job),
            children.progress_config_map(job), children.disruption_budget(job, spec),
            children.rendezvous_network_policy(job, spec), children.checkpoint_pvc(job, spec)]
    return [o for o in objs if o is not None]


def test_every_builder_is_covered_by_every_child() -> None:
    builders = {name for name, fn in inspect.getmembers(children, inspect.isfunction)
                if fn.__module__ == children.__name__ and "job" in inspect.signature(fn).parameters
                and name not in {"owner_reference", "names", "_meta"}}
    kinds = {o["kind"] for o in every_child("a")}
    assert len(builders) == 10, f"a new child builder: add it to every_child ({sorted(builders)})"
    assert kinds == {"ConfigMap", "Service", "Pod", "ServiceAccount", "Role", "RoleBinding",
                     "PodDisruptionBudget", "NetworkPolicy", "PersistentVolumeClaim"}


def test_the_longest_job_name_gives_every_child_a_valid_name() -> None:
    name = "j" + "0" * (naming.MAX_JOB_NAME_LENGTH - 1)
    assert naming.job_name_problem(name) is None
    for obj in every_child(name):
        meta = obj["metadata"]
        assert DNS_1123_LABEL.match(meta["name"]) and len(meta["name"]) <= 63, (obj["kind"], meta["name"])
        assert all(len(v) <= 63 for v in meta["labels"].values()), meta["labels"]
        if obj["kind"] == "Service":
            assert DNS_1035_LABEL.match(meta["name"]), meta["name"]
        if obj["kind"] == "Pod" and "hostname" in obj["spec"]:
            assert len(obj["spec"]["hostname"]) <= 63 and DNS_1123_LABEL.match(obj["spec"]["hostname"])
            assert DNS_1035_LABEL.match(obj["spec"]["subdomain"])


def test_the_limit_is_set_by_a_worker_hostname_at_the_highest_index() -> None:
    longest = naming.worker_name("j" * naming.MAX_JOB_NAME_LENGTH, naming.MAX_WORKER_INDEX, naming.new_suffix())
    assert len(longest) == naming.DNS_LABEL_MAX
    assert naming.MAX_JOB_NAME_LENGTH == 44


@pytest.mark.parametrize(("name", "why"), [
    pytest.param("j" * (naming.MAX_JOB_NAME_LENGTH + 1), "at most 44 characters", id="one-character-too-long"),
    pytest.param("1st-run", "a letter first", id="leading-digit"),
    pytest.param("moe.v2", "DNS-1035 label", id="dot"),
    pytest.param("moe-", "DNS-1035 label", id="trailing-dash"),
    pytest.param("Moe", "DNS-1035 label", id="upper-case"),
])
def test_a_name_that_cannot_name_every_child_is_refused(name: str, why: str) -> None:
    problem = naming.job_name_problem(name)
    assert problem is not None and why in problem and name in problem
