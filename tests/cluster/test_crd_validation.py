"""The real API server refuses bad DeepSeekTrainingJobs with a message that names the field."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dstj_api.contract import GROUP, KIND, VERSION
from dstj_operator.crd import PLURAL
from localcluster.kubectl import Kubectl
from tests.conftest import install_crd

ROOT = Path(__file__).resolve().parents[2]
NS = "crd-validation"


def job(name: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": KIND,
            "metadata": {"name": name, "namespace": NS}, "spec": spec}


def _set(tree: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    out = copy.deepcopy(tree)
    node = out
    *parents, leaf = path.split(".")
    for key in parents:
        node = node.setdefault(key, {})
    node[leaf] = value
    return out


@pytest.fixture(scope="module")
def crd(kube: Kubectl) -> Iterator[Kubectl]:
    install_crd(kube)
    kube("create", "namespace", NS, check=False)
    yield kube
    kube("delete", "namespace", NS, "--wait=false", check=False)


BAD_CREATES = [
    pytest.param({"replicas": 9, "maxReplicas": 8}, "spec.replicas must lie within", id="replicas-above-max"),
    pytest.param({"minReplicas": 0}, "spec.minReplicas", id="min-replicas-zero"),
    pytest.param({"replicaz": 2}, 'unknown field "spec.replicaz"', id="unknown-field"),
    pytest.param({"replicas": "two"}, "spec.replicas", id="replicas-not-a-number"),
    pytest.param({"checkpoint": {"pvc": "data", "hostPath": "/srv/ckpt"}},
                 "set at most one of pvc, hostPath and url", id="two-checkpoint-sources"),
    pytest.param({"trainer": {"model": {"moe": {"nRouted": 8}}, "parallel": {"expertParallel": 3}}},
                 "expertParallel must divide", id="expert-parallel-not-dividing-experts"),
    pytest.param({"trainer": {"model": {"moe": {"scoreFunc": "relu"}}}}, "spec.trainer.model.moe.scoreFunc",
                 id="unknown-score-function"),
    pytest.param({"trainer": {"train": {"precision": "fp8"}}}, "spec.trainer.train.precision",
                 id="unsupported-precision"),
    pytest.param({"devicesPerWorker": 17}, "spec.devicesPerWorker", id="too-many-devices"),
    pytest.param({"trainer": {"optim": {"lr": 0}}}, "spec.trainer.optim.lr", id="zero-learning-rate"),
    pytest.param({"faultPolicy": {"crashBudget": -1}}, "spec.faultPolicy.crashBudget", id="negative-crash-budget"),
    pytest.param({"autoscaling": {"allowedWorldSizes": [2, 16]}}, "spec.autoscaling.allowedWorldSizes: every entry",
                 id="allowed-size-above-max"),
    pytest.param({"autoscaling": {"allowedWorldSizes": [2, 2]}}, "spec.autoscaling.allowedWorldSizes",
                 id="allowed-size-twice"),
    pytest.param({"autoscaling": {"allowedWorldSizes": [2], "powersOfTwo": True}},
                 "set allowedWorldSizes or powersOfTwo, not both", id="sizes-and-powers-of-two"),
]


@pytest.mark.parametrize(("spec", "message"), BAD_CREATES)
def test_a_bad_manifest_is_refused_on_create_naming_the_field(crd: Kubectl, spec: dict[str, Any],
                                                               message: str) -> None:
    res = crd("create", "-f", "-", stdin=json.dumps(job("bad", **spec)), check=False)
    assert res.returncode != 0, "the API server accepted a bad manifest"
    assert message in res.stderr, res.stderr


BAD_UPDATES = [
    pytest.param("spec.trainer.model.dim", 128, "spec.trainer.model is immutable", id="model-changed"),
    pytest.param("spec.replicas", 20, "spec.replicas must lie within", id="scaled-above-max"),
    pytest.param("spec.rendezvous.port", 70000, "spec.rendezvous.port", id="port-out-of-range"),
]


@pytest.mark.parametrize(("path", "value", "message"), BAD_UPDATES)
def test_a_bad_update_is_refused_naming_the_field(crd: Kubectl, path: str, value: Any, message: str) -> None:
    name = f"good-{path.split('.')[-1].lower()}"
    good = job(name, replicas=2, maxReplicas=4, trainer={"model": {"preset": "tiny", "dim": 64}})
    crd("create", "-f", "-", stdin=json.dumps(good))
    current = json.loads(crd("get", PLURAL, name, "-n", NS, "-o", "json").stdout)
    res = crd("replace", "-f", "-", stdin=json.dumps(_set(current, path, value)), check=False)
    assert res.returncode != 0, "the API server accepted a bad update"
    assert message in res.stderr, res.stderr


def test_defaults_are_filled_in_by_the_api_server(crd: Kubectl) -> None:
    crd("create", "-f", "-", stdin=json.dumps(job("defaults")))
    spec = json.loads(crd("get", PLURAL, "defaults", "-n", NS, "-o", "json").stdout)["spec"]
    assert (spec["replicas"], spec["minReplicas"], spec["maxReplicas"]) == (2, 1, 8)
    assert spec["faultPolicy"]["crashBudget"] == 3
    assert spec["trainer"]["parallel"]["expertParallel"] == "auto"


def test_kubectl_scale_uses_the_scale_subresource(crd: Kubectl) -> None:
    crd("create", "-f", "-", stdin=json.dumps(job("scalable", replicas=2, maxReplicas=4)))
    crd("scale", f"{PLURAL}/scalable", "-n", NS, "--replicas=3")
    assert crd("get", PLURAL, "scalable", "-n", NS, "-o", "jsonpath={.spec.replicas}").stdout == "3"
    refused = crd("scale", f"{PLURAL}/scalable", "-n", NS, "--replicas=9", check=False)
    assert refused.returncode != 0 and "spec.replicas must lie within" in refused.stderr
