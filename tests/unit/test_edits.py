"""The edit table covers every spec field, and its immutable rows are exactly the CRD's immutability rules."""

from __future__ import annotations

from typing import Any

from dstj_operator.apidoc import fields
from dstj_operator.crd import build_crd
from dstj_operator.edits import EDITS, Effect, row_for


def _spec() -> dict[str, Any]:
    schema: dict[str, Any] = build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    return schema


def test_every_spec_field_has_a_row_in_the_edit_table_its_own_or_a_parents() -> None:
    leaves = [path for path, node in fields(_spec(), "spec") if "properties" not in node]
    missing = [path for path in leaves if row_for(path) is None]
    assert not missing, f"spec fields with no row in dstj_operator/edits.py EDITS: {missing}"


def test_every_row_names_a_spec_field() -> None:
    paths = {path for path, _ in fields(_spec(), "spec")}
    assert not [row.path for row in EDITS if row.path not in paths]


def test_the_immutable_rows_are_the_crds_transition_rules() -> None:
    ruled = {path for path, node in fields(_spec(), "spec")
             if any(r.get("rule") == "self == oldSelf" for r in node.get("x-kubernetes-validations", []))}
    immutable = {row.path for row in EDITS if row.effect is Effect.IMMUTABLE}
    assert ruled == immutable
