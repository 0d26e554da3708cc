"""One rule, two languages: pydantic checks it in Python, the CRD carries it as CEL (checked here as text;
tests/cluster/test_admission_agreement.py checks the verdicts against the real API server)."""

from __future__ import annotations

import re
from typing import Any

import pytest

from dstj_api.cel import CelScope, Tree, tree_validations, validation
from dstj_api.rules import ITEM, Every, Present, Rule, cel_literal, f, violations
from dstj_api.trainer_config import PRESETS, MoEConfig
from dstj_operator.crd import SPEC_TREE, build_crd
from dstj_operator.spec import DeepSeekTrainingJobSpec

TOP_K = Rule("topK", f("topK") <= f("nRouted"), "topK ({topK}) must be <= nRouted ({nRouted}); lower topK")


def test_a_rule_checks_a_model_in_python_and_shows_its_values() -> None:
    ok, bad = MoEConfig(top_k=2, n_routed=8), MoEConfig.model_construct(top_k=9, n_routed=8)
    assert violations((TOP_K,), ok) == []
    assert violations((TOP_K,), bad) == ["topK (9) must be <= nRouted (8); lower topK"]
    assert violations((TOP_K,), {"topK": 3, "nRouted": 2}) == ["topK (3) must be <= nRouted (2); lower topK"]


def test_the_message_expression_shows_the_same_values_as_python() -> None:
    entry = validation(TOP_K, CelScope(SPEC_TREE, ("trainer", "model"), ("trainer", "model", "moe")))
    template, _ = entry["messageExpression"].split(".format(", 1)
    assert template == '"topK (%s) must be <= nRouted (%s); lower topK"'
    assert entry["message"] == "topK must be <= nRouted; lower topK"
    assert entry["fieldPath"] == ".moe.topK"


def test_a_field_below_the_presets_falls_back_to_its_preset_then_its_default() -> None:
    scope = CelScope(SPEC_TREE, ("trainer", "model"), ("trainer", "model", "moe"))
    table = ", ".join(f'"{name}": {p["moe"]["top_k"]}' for name, p in PRESETS.items())
    assert scope.value("topK") == f'self.?moe.?topK.orValue({{{table}}}[?self.?preset.orValue("")].orValue(2))'


def test_a_field_no_preset_sets_falls_back_to_its_default_alone() -> None:
    scope = CelScope(SPEC_TREE, ("trainer", "model"), ("trainer", "model", "moe"))
    assert scope.value("nShared") != scope.value("topK")
    assert scope.value("capacityFactor") == "self.?moe.?capacityFactor.orValue(null)"
    spec = CelScope(SPEC_TREE, (), ())
    assert spec.value("trainer.parallel.expertParallel") == 'self.?trainer.?parallel.?expertParallel.orValue("auto")'


def test_every_models_rules_reach_the_crd_once() -> None:
    from dstj_api.cel import models

    declared = sum(len(getattr(cls, "RULES", ())) for _, cls in models(DeepSeekTrainingJobSpec))
    rendered = sum(len(rules) for rules in tree_validations(SPEC_TREE).values())
    assert declared == rendered >= 16


def test_rules_below_the_presets_attach_where_preset_is_in_reach() -> None:
    nodes = tree_validations(Tree(DeepSeekTrainingJobSpec, {("trainer", "model"): PRESETS}))
    assert ("trainer", "model", "moe") not in nodes
    assert {".moe.topK", ".moe.nGroups", ".nHeads"} <= {r["fieldPath"] for r in nodes[("trainer", "model")]}


def test_cel_literals_quote_like_cel() -> None:
    assert cel_literal('say "hi"\\') == '"say \\"hi\\"\\\\"'
    assert (cel_literal(True), cel_literal(None), cel_literal(2)) == ("true", "null", "2")
    with pytest.raises(TypeError):
        cel_literal(object())


def _schema_nodes(node: Any) -> list[dict[str, Any]]:
    if not isinstance(node, dict):
        return []
    subs = [*node.get("properties", {}).values(), *([node["items"]] if "items" in node else [])]
    return [node, *(n for sub in subs for n in _schema_nodes(sub))]


def test_every_list_a_rule_reads_has_max_items() -> None:
    """The API server refuses a CRD whose rules may cost too much; an unbounded list a rule reads is the usual cause."""
    root = build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for node in _schema_nodes(root):
        read = {name for rule in node.get("x-kubernetes-validations", [])
                for name in re.findall(r"\.\??(\w+)", rule["rule"] + rule.get("messageExpression", ""))}
        for sub in _schema_nodes(node):
            for name, prop in sub.get("properties", {}).items():
                if prop.get("type") == "array" and name in read:
                    assert "maxItems" in prop, f"{name} is read by a rule: give it maxItems"


SIZES_IN_BOUNDS = Rule("sizes", Every(f("sizes"), f(ITEM) <= f("most")), "every size must be <= most ({most})")


@pytest.mark.parametrize(("obj", "broken"), [
    pytest.param({"sizes": [1, 3], "most": 3}, False, id="every-item-holds"),
    pytest.param({"sizes": [1, 4], "most": 3}, True, id="one-item-breaks-it"),
    pytest.param({"sizes": None, "most": 3}, False, id="an-absent-list-passes"),
])
def test_a_rule_over_every_item_of_a_list(obj: dict[str, Any], broken: bool) -> None:
    assert violations((SIZES_IN_BOUNDS,), obj) == (["every size must be <= most (3)"] if broken else [])


def test_every_renders_as_a_cel_all_guarded_by_presence() -> None:
    scope = CelScope(SPEC_TREE, (), ())
    rule = Every(f("autoscaling.allowedWorldSizes"), f(ITEM) <= f("maxReplicas")).cel(scope)
    assert rule == ("(!self.?autoscaling.?allowedWorldSizes.hasValue() || self.autoscaling.allowedWorldSizes.all(item, "
                    "(item <= self.?maxReplicas.orValue(8))))")
    assert Present(f("autoscaling.allowedWorldSizes")).cel(scope) == "self.?autoscaling.?allowedWorldSizes.hasValue()"
