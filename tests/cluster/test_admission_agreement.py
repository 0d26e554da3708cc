"""Pydantic and the real API server give the same verdict on every boundary config, and the same message.

The CEL rules are generated from the pydantic models' `RULES`; this checks the generation, the
preset tables and the defaults against the API server itself (server-side dry runs: nothing is
stored), on seeded configs at and around every rule's boundary (`boundary_specs`).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from pydantic import ValidationError

from dstj_api.contract import GROUP, KIND, PLURAL, VERSION
from dstj_operator.naming import job_name_problem
from dstj_operator.spec import DeepSeekTrainingJobSpec
from localcluster.kubectl import Kubectl
from tests.cluster.boundary_specs import boundary_specs
from tests.conftest import install_crd

NS = "admission-agreement"
SEED, COUNT = 12, 240


@pytest.fixture(scope="module")
def jobs_api(kube: Kubectl) -> Iterator[client.CustomObjectsApi]:
    install_crd(kube)
    kube("create", "namespace", NS, check=False)
    api = config.new_client_from_config(config_file=str(kube.kubeconfig))
    yield client.CustomObjectsApi(api)
    api.close()
    kube("delete", "namespace", NS, "--wait=false", check=False)


def python_verdict(name: str, spec: dict[str, Any]) -> list[str] | None:
    """None when pydantic admits the job, else the messages of the rules it broke (empty: a field's own bound)."""
    problem = job_name_problem(name)
    try:
        DeepSeekTrainingJobSpec.model_validate(spec)
    except ValidationError as e:
        return [err["msg"].removeprefix("Value error, ") for err in e.errors() if err["type"] == "value_error"]
    return None if problem is None else [problem]


def server_verdict(api: client.CustomObjectsApi, name: str, spec: dict[str, Any]) -> str | None:
    """None when the API server admits the job, else its message."""
    body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": KIND,
            "metadata": {"name": name, "namespace": NS}, "spec": spec}
    try:
        api.create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, body, dry_run="All")
    except ApiException as e:
        if e.status != 422:
            raise
        message: str = json.loads(e.body)["message"]
        return message
    return None


def test_pydantic_and_the_api_server_agree_on_every_boundary_config(jobs_api: client.CustomObjectsApi) -> None:
    cases = boundary_specs(SEED, COUNT)
    disagreements, admitted = [], 0
    for name, spec in cases:
        python, server = python_verdict(name, spec), server_verdict(jobs_api, name, spec)
        if (python is None) != (server is None):
            disagreements.append(f"{name} {json.dumps(spec)}: pydantic {python or 'admits'}; "
                                 f"API server {server or 'admits'}")
        elif python is not None and server is not None:
            # Same rule, same message: the first rule pydantic reports is among the API server's.
            missing = [m for m in python[:1] if m not in server]
            if missing:
                disagreements.append(f"{name} {json.dumps(spec)}: pydantic says {missing[0]!r}; API server {server}")
        admitted += python is None
    assert not disagreements, "\n".join(disagreements)
    assert 0.3 * COUNT < admitted < 0.7 * COUNT, f"{admitted} of {COUNT} admitted: the cases miss the boundaries"
