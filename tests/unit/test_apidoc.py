"""docs/api.md is generated from the CRD, lists every field and rule, and is never stale."""

from __future__ import annotations

from pathlib import Path

from dstj_operator.apidoc import DOC_FILE, bounds, cel_rules, field_type, fields, render
from dstj_operator.crd import build_crd

ROOT = Path(__file__).resolve().parents[2]
VERSION = build_crd()["spec"]["versions"][0]
SPEC = VERSION["schema"]["openAPIV3Schema"]["properties"]["spec"]


def test_the_committed_api_reference_matches_the_crd() -> None:
    assert (ROOT / DOC_FILE).read_text() == render(), f"{DOC_FILE} is stale: run `make docs`"


def test_every_spec_field_has_a_row_with_its_description() -> None:
    doc = render()
    for path, node in fields(SPEC, "spec"):
        assert f"| `{path}` |" in doc, path
        assert node.get("description", "").replace("|", "\\|") in doc, path


def test_every_cel_rule_and_printer_column_is_listed() -> None:
    doc = render()
    rules = list(cel_rules(VERSION["schema"]["openAPIV3Schema"], ""))
    assert len(rules) >= 18
    for _, rule in rules:
        assert rule["message"].replace("|", "\\|") in doc
    for column in VERSION["additionalPrinterColumns"]:
        assert f"| {column['name']} | {column['type']} | `{column['jsonPath']}` |" in doc


def test_types_and_bounds_read_as_a_user_writes_them() -> None:
    assert field_type({"type": "array", "items": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                       "nullable": True}) == "[]object (free-form), nullable"
    assert field_type({"x-kubernetes-int-or-string": True}) == "int or string"
    assert bounds({"minimum": 0, "exclusiveMinimum": True, "maximum": 1}) == "> 0, <= 1"
    assert bounds({"enum": ["fp32", "bf16"]}) == "one of `fp32`, `bf16`"
    assert bounds({"x-kubernetes-validations": [{"rule": "self == oldSelf"}]}) == "immutable"
