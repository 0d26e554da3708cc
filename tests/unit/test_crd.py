"""The CRD is generated from the spec models, is structural, and stays in sync with crds/."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from dstj_operator.crd import CRD_FILE, build_crd, render, structural
from dstj_operator.spec import DeepSeekTrainingJobSpec

ROOT = Path(__file__).resolve().parents[2]


def test_the_committed_crd_matches_the_spec_models() -> None:
    assert (ROOT / CRD_FILE).read_text() == render(), (
        "crds/ is stale: run `.venv/bin/python -m dstj_operator.crd > " + CRD_FILE + "`"
    )


def _walk(node: Any) -> list[dict[str, Any]]:
    if isinstance(node, dict):
        return [node, *(n for v in node.values() for n in _walk(v))]
    if isinstance(node, list):
        return [n for v in node for n in _walk(v)]
    return []


def test_the_schema_is_structural() -> None:
    schema = build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for node in _walk(schema):
        assert not {"$ref", "anyOf", "oneOf", "allOf", "const", "$defs"} & node.keys(), node
        assert node.get("type") != "null"
        if "exclusiveMinimum" in node:
            assert node["exclusiveMinimum"] is True


def test_optional_fields_become_nullable_and_int_or_string_stays_one_field() -> None:
    spec = build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    trainer = spec["properties"]["trainer"]["properties"]
    assert trainer["parallel"]["properties"]["expertParallel"]["x-kubernetes-int-or-string"] is True
    assert spec["properties"]["ttlSecondsAfterFinished"]["nullable"] is True
    assert any(r["rule"] == "self == oldSelf" for r in trainer["model"]["x-kubernetes-validations"])


def test_structural_refuses_what_kubernetes_cannot_express() -> None:
    with pytest.raises(ValueError, match="cannot express"):
        structural({"anyOf": [{"type": "string"}, {"type": "object"}]}, {})


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        pytest.param({"replicas": 9, "maxReplicas": 8}, "minReplicas (1) <= replicas (9) <= maxReplicas (8)",
                     id="replicas-above-max"),
        pytest.param({"checkpoint": {"pvc": "a", "hostPath": "/b"}}, "at most one of pvc, hostPath and url",
                     id="two-checkpoint-sources"),
        pytest.param({"replicas": 2, "maxReplicas": 3, "trainer": {"parallel": {"expertParallel": 4}}},
                     "(4) divides no world size of minReplicas (1) to maxReplicas (3) workers (1 process(es) each, "
                     "so the worker count must be a multiple of 4)", id="expert-parallel-fitting-no-world-size"),
        pytest.param({"autoscaling": {"allowedWorldSizes": [2, 16]}},
                     "every autoscaling.allowedWorldSizes entry must lie within minReplicas (1) to maxReplicas (8)",
                     id="allowed-size-above-max"),
        pytest.param({"autoscaling": {"allowedWorldSizes": [2], "powersOfTwo": True}},
                     "set allowedWorldSizes or powersOfTwo, not both", id="sizes-and-powers-of-two"),
        pytest.param({"trainer": {"train": {"precision": "fp8"}}},
                     "trainer.train.precision=fp8 needs GPUs (devicesPerWorker >= 1, got 0)", id="fp8-on-cpu-workers"),
    ],
)
def test_the_operator_refuses_what_the_cel_rules_refuse(spec: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        DeepSeekTrainingJobSpec.model_validate(spec)


def test_fp8_is_admitted_on_gpus_or_with_emulation_asked_for() -> None:
    DeepSeekTrainingJobSpec.model_validate({"devicesPerWorker": 1, "trainer": {"train": {"precision": "fp8"}}})
    DeepSeekTrainingJobSpec.model_validate({"trainer": {"train": {"precision": "fp8", "precisionEmulation": True}}})
