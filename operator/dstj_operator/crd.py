"""The CustomResourceDefinition, generated from the spec models: `python -m dstj_operator.crd > crds/...`.

Kubernetes wants a structural OpenAPI v3.0 schema: no `$ref`, no `anyOf` of types, `nullable`
instead of a null type, boolean `exclusiveMinimum`. `structural` rewrites pydantic's JSON Schema
into that form. Cross-field rules go in as CEL (`x-kubernetes-validations`) rendered from the same
`RULES` the pydantic models check (`dstj_api.cel`), so the API server itself refuses a bad spec with a
message that names the field. A test keeps `crds/` in sync.
"""

from __future__ import annotations

import sys
from typing import Any

import yaml

from dstj_api.cel import DirectScope, Tree, tree_validations, validation
from dstj_api.contract import GROUP, KIND, PLURAL, SHORT_NAME, VERSION
from dstj_api.trainer_config import PRESETS
from dstj_operator.crd_revision import CRD_REVISION, REVISION_ANNOTATION
from dstj_operator.edits import IMMUTABLE_RULES, OPERATOR_SET_RULES
from dstj_operator.naming import JOB_NAME_RULES
from dstj_operator.spec import DeepSeekTrainingJobSpec
from dstj_operator.status import JobStatus

SHORT = SHORT_NAME
"""The old name of `dstj_api.contract.SHORT_NAME`, kept for code that imports it from here."""
CRD_FILE = f"crds/{GROUP}_{PLURAL}.yaml"

_DROP = {"title", "additionalProperties", "$defs"}

SPEC_TREE = Tree(DeepSeekTrainingJobSpec, {("trainer", "model"): PRESETS})
"""The spec's models, and where presets fill fields the user did not write."""


def structural(schema: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """Rewrite one pydantic JSON Schema node (and its children) as a structural OpenAPI node."""
    if "$ref" in schema:
        rest = {k: v for k, v in schema.items() if k != "$ref"}
        return structural(defs[schema["$ref"].split("/")[-1]], defs) | structural(rest, defs)
    out: dict[str, Any] = {}
    variants = schema.get("anyOf")
    if variants:
        non_null = [v for v in variants if v.get("type") != "null"]
        if len(non_null) < len(variants):
            out["nullable"] = True
        if len(non_null) == 1:
            out |= structural(non_null[0], defs)
        elif {v.get("type") for v in non_null} == {"string", "integer"}:
            out["x-kubernetes-int-or-string"] = True
        else:
            raise ValueError(f"cannot express anyOf {variants} structurally")
    for key, value in schema.items():
        if key in _DROP or key in ("anyOf", "$ref") or value is None:
            continue
        if key == "properties":
            out["properties"] = {name: structural(sub, defs) for name, sub in value.items()}
        elif key == "items":
            out["items"] = structural(value, defs)
        elif key == "const":
            out["enum"] = [value]
        elif key in ("exclusiveMinimum", "exclusiveMaximum"):
            out["minimum" if key == "exclusiveMinimum" else "maximum"] = value
            out[key] = True
        else:
            out[key] = value
    for sub in out.get("properties", {}).values():  # absent objects default to {} so nested defaults apply
        if sub.get("type") == "object" and "properties" in sub and "default" not in sub:
            sub["default"] = {}
    if out.get("type") == "object" and "properties" not in out:
        out["x-kubernetes-preserve-unknown-fields"] = True  # free-form Kubernetes fragments (affinity, ...)
    if "enum" in out and "type" not in out:
        out["type"] = "string"
    return out


def _node(schema: dict[str, Any], path: tuple[str, ...]) -> dict[str, Any]:
    """The schema node at `path` (property names from `schema` down)."""
    for key in path:
        schema = schema["properties"][key]
    return schema


def _rules_of(schema: dict[str, Any], path: tuple[str, ...]) -> list[dict[str, Any]]:
    """The CEL rules list of the node at `path`, created empty if it has none."""
    rules: list[dict[str, Any]] = _node(schema, path).setdefault("x-kubernetes-validations", [])
    return rules


def spec_schema() -> dict[str, Any]:
    """The structural schema of `.spec`, with its CEL rules."""
    raw = DeepSeekTrainingJobSpec.model_json_schema(by_alias=True)
    schema = structural(raw, raw.get("$defs", {}))
    model = schema["properties"]["trainer"]["properties"]["model"]
    # No server-side defaults inside the model: the API server would fill every field, and filled fields
    # override the preset (a job naming `preset: base` would train the default-sized model).
    _drop_defaults(model)
    model["default"] = {"preset": "tiny"}
    for path, rules in tree_validations(SPEC_TREE).items():
        _rules_of(schema, path).extend(rules)
    for path, message in IMMUTABLE_RULES.items():
        _rules_of(schema, path).append({"rule": "self == oldSelf", "message": message})
    for (*parents, leaf), message in OPERATOR_SET_RULES.items():
        _node(schema, (*parents, leaf))["description"] = ("Set by the operator; a job that sets it is refused (see "
                                                          "the rules).")
        _rules_of(schema, tuple(parents)).append({"rule": f"!has(self.{leaf})", "message": message,
                                                  "fieldPath": f".{leaf}", "reason": "FieldValueForbidden"})
    return schema


def status_schema() -> dict[str, Any]:
    """The structural schema of `.status`, generated from `status.JobStatus`.

    No defaults: the API server must not invent status. The membership and the progress report keep
    fields this schema does not know: they are documents between versions of the operator and the
    trainer, and the reading side ignores what it does not know.
    """
    raw = JobStatus.model_json_schema(by_alias=True)
    schema = structural(raw, raw.get("$defs", {}))
    _drop_defaults(schema)
    props = schema["properties"]
    for wire in ("membership", "progress"):
        props[wire]["x-kubernetes-preserve-unknown-fields"] = True
    props["conditions"] |= {"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]}
    return schema


def add_name_rules(root: dict[str, Any]) -> None:
    """CEL on the object's root: the job's name must leave room for every child's name."""
    # Declared so that the rule's fieldPath is valid (the API server allows `name` and `generateName` here).
    root["properties"]["metadata"] = {"type": "object", "properties": {"name": {"type": "string"}}}
    root["x-kubernetes-validations"] = [validation(rule, DirectScope(("metadata",))) for rule in JOB_NAME_RULES]


def _drop_defaults(node: dict[str, Any]) -> None:
    node.pop("default", None)
    for sub in (node.get("properties") or {}).values():
        _drop_defaults(sub)
    if isinstance(node.get("items"), dict):
        _drop_defaults(node["items"])


def build_crd() -> dict[str, Any]:
    """The whole CustomResourceDefinition object."""
    columns = [
        ("Phase", "string", ".status.phase"),
        ("Progressing", "string", '.status.conditions[?(@.type=="Progressing")].status'),
        ("Ready", "integer", ".status.readyReplicas"),
        ("Desired", "integer", ".spec.replicas"), ("Generation", "integer", ".status.membership.generation"),
        ("Layout", "string", ".status.layout"), ("Step", "integer", ".status.progress.step"),
        ("Loss", "number", ".status.progress.loss"), ("Checkpoint", "integer", ".status.progress.lastCheckpointStep"),
        ("Age", "date", ".metadata.creationTimestamp"),
    ]
    crd: dict[str, Any] = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{PLURAL}.{GROUP}", "annotations": {REVISION_ANNOTATION: str(CRD_REVISION)}},
        "spec": {
            "group": GROUP,
            "names": {"kind": KIND, "plural": PLURAL, "singular": KIND.lower(), "shortNames": [SHORT],
                      "listKind": f"{KIND}List"},
            "scope": "Namespaced",
            "versions": [{
                "name": VERSION, "served": True, "storage": True,
                "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                    "apiVersion": {"type": "string"}, "kind": {"type": "string"}, "metadata": {"type": "object"},
                    "spec": spec_schema(),
                    "status": status_schema(),
                }}},
                "subresources": {"status": {}, "scale": {
                    "specReplicasPath": ".spec.replicas", "statusReplicasPath": ".status.replicas",
                    "labelSelectorPath": ".status.selector"}},
                "additionalPrinterColumns": [{"name": n, "type": t, "jsonPath": p} for n, t, p in columns],
            }],
        },
    }
    add_name_rules(crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"])
    return crd


def render() -> str:
    """The CRD as YAML, as committed in `crds/`."""
    header = "# Generated by `python -m dstj_operator.crd` from dstj_operator/spec.py. Do not edit.\n"
    return header + yaml.safe_dump(build_crd(), sort_keys=False, width=120)


if __name__ == "__main__":
    sys.stdout.write(render())
