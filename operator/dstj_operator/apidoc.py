"""The API reference (docs/api.md), generated from the CRD: `python -m dstj_operator.apidoc > docs/api.md`.

Reads only what `crd.build_crd()` produces (the schema the API server enforces: types, defaults,
bounds, descriptions, CEL rules, printer columns) plus the presets and the status models from
`dstj_api`, so the reference cannot drift from the API; a unit test fails when docs/api.md is
stale (`make docs` rewrites it). Pure text, no cluster, no torch.
"""

from __future__ import annotations

import ast
import inspect
import json
import sys
from collections.abc import Iterator
from itertools import pairwise
from types import ModuleType
from typing import Any

from pydantic.alias_generators import to_camel

from dstj_api.trainer_config import PRESETS
from dstj_operator import conditions
from dstj_operator.crd import GROUP, KIND, PLURAL, SHORT, VERSION, build_crd
from dstj_operator.edits import EDITS

DOC_FILE = "docs/api.md"


def _cell(text: str) -> str:
    """Text safe inside a Markdown table cell."""
    return text.replace("|", "\\|").replace("\n", " ")


def _code(value: Any) -> str:
    return f"`{json.dumps(value) if not isinstance(value, str) else value}`"


def field_type(node: dict[str, Any]) -> str:
    """The field's type as a reader wants it: `[]object`, `int or string`, `object (free-form)`, ..."""
    if node.get("x-kubernetes-int-or-string"):
        kind = "int or string"
    elif node.get("type") == "array":
        kind = "[]" + field_type(node.get("items", {}))
    elif node.get("type") == "object" and node.get("x-kubernetes-preserve-unknown-fields"):
        kind = "object (keeps unknown fields)" if "properties" in node else "object (free-form)"
    else:
        kind = str(node.get("type", "any"))
        if "format" in node:
            kind += f" ({node['format']})"
    return f"{kind}, nullable" if node.get("nullable") else kind


def bounds(node: dict[str, Any]) -> str:
    """Minimum, maximum, allowed values and immutability, as `>= 1, <= 1024`."""
    out = []
    if "minimum" in node:
        out.append(f"{'>' if node.get('exclusiveMinimum') is True else '>='} {node['minimum']}")
    if "maximum" in node:
        out.append(f"{'<' if node.get('exclusiveMaximum') is True else '<='} {node['maximum']}")
    if "enum" in node:
        out.append("one of " + ", ".join(_code(v) for v in node["enum"]))
    if any(r.get("rule") == "self == oldSelf" for r in node.get("x-kubernetes-validations", [])):
        out.append("immutable")
    return ", ".join(out)


def fields(node: dict[str, Any], path: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every field under `node` with its dotted path, parents before children, in schema order."""
    for name, sub in node.get("properties", {}).items():
        yield f"{path}.{name}", sub
        yield from fields(sub, f"{path}.{name}")


def _default(node: dict[str, Any]) -> str:
    # An object defaulted to {} only makes its children's defaults apply; the children say them.
    if "default" not in node or (node["default"] == {} and "properties" in node):
        return ""
    return _code(node["default"])


def field_table(schema: dict[str, Any], root: str) -> list[str]:
    """A Markdown table of every field of `schema`, paths starting at `root`."""
    rows = ["| Field | Type | Default | Bounds | Description |", "|---|---|---|---|---|"]
    for path, node in fields(schema, root):
        rows.append(f"| `{path}` | {_cell(field_type(node))} | {_cell(_default(node))} | {_cell(bounds(node))} "
                    f"| {_cell(node.get('description', ''))} |")
    return rows


def cel_rules(schema: dict[str, Any], path: str = "spec") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every CEL rule (x-kubernetes-validations) with the path of the node it sits on."""
    for rule in schema.get("x-kubernetes-validations", []):
        yield path, rule
    for name, sub in schema.get("properties", {}).items():
        yield from cel_rules(sub, f"{path}.{name}")


def _docs(module: ModuleType) -> dict[str, str]:
    """The docstrings written under a module's constants (`NAME = ...` then a string)."""
    body = ast.parse(inspect.getsource(module)).body
    return {a.targets[0].id: b.value.value for a, b in pairwise(body)
            if isinstance(a, ast.Assign) and isinstance(a.targets[0], ast.Name) and isinstance(b, ast.Expr)
            and isinstance(b.value, ast.Constant) and isinstance(b.value.value, str)}


def _constant(module: ModuleType, value: str) -> str:
    return next(name for name, v in vars(module).items() if name.isupper() and v == value)


def _presets() -> list[str]:
    keys = ["vocab_size", "dim", "n_layers", "n_heads", "max_seq_len", "n_dense_layers", "dense_dim"]
    moe_keys = ["n_routed", "n_shared", "top_k", "expert_dim"]
    head = ["preset", "vocabSize", "dim", "nLayers", "nHeads", "maxSeqLen", "nDenseLayers", "denseDim",
            "moe.nRouted", "moe.nShared", "moe.topK", "moe.expertDim", "other moe fields"]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, p in PRESETS.items():
        moe = p.get("moe", {})
        rest = ", ".join(f"{to_camel(k)}={v}" for k, v in moe.items() if k not in moe_keys)
        cells = [f"`{name}`", *(str(p.get(k, "")) for k in keys), *(str(moe.get(k, "")) for k in moe_keys), rest]
        rows.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return rows


def render() -> str:
    """docs/api.md."""
    crd = build_crd()
    version = crd["spec"]["versions"][0]
    spec = version["schema"]["openAPIV3Schema"]["properties"]["spec"]
    scale = version["subresources"]["scale"]
    out = [
        "<!-- Generated by `python -m dstj_operator.apidoc` (make docs) from the CRD. Do not edit. -->",
        f"# API reference: {KIND} ({GROUP}/{VERSION})",
        "",
        f"`kubectl get {SHORT}` (plural `{PLURAL}`, short name `{SHORT}`), namespaced. Subresources: `status`, and "
        f"`scale` (replicas `{scale['specReplicasPath']}`, status `{scale['statusReplicasPath']}`, "
        f"selector `{scale['labelSelectorPath']}`), so `kubectl scale dstj/NAME --replicas=N` and an HPA work.",
        "",
        "The API server checks every field below (types, bounds, allowed values) and the CEL rules, and fills "
        "in the defaults; unknown fields are refused. Field names are camelCase. Sizes and counts are plain "
        "integers; the trainer's units are in each description.",
        "",
        "## Printer columns (`kubectl get dstj`)",
        "",
        "| Column | Type | From |",
        "|---|---|---|",
        *(f"| {c['name']} | {c['type']} | `{c['jsonPath']}` |" for c in version["additionalPrinterColumns"]),
        "",
        "## Cross-field rules (CEL)",
        "",
        "Checked by the API server on create and update, from the same rules the operator and the trainer "
        "check (`RULES` in `dstj_api/trainer_config.py`, `dstj_operator/spec.py` and `dstj_operator/naming.py`). "
        "A field left out counts with its preset's value, else its default. `kubectl` prints the message "
        "with the values of the object (here without them).",
        "",
        "| On | Message |",
        "|---|---|",
        *(f"| `{(path + rule.get('fieldPath', '')).lstrip('.')}` | {_cell(rule['message'])} |"
          for path, rule in cel_rules(version["schema"]["openAPIV3Schema"], "")),
        "",
        "## `spec`",
        "",
        *field_table(spec, "spec"),
        "",
        "## Editing a running job",
        "",
        "What an edit of each field does to an existing job (`kubectl edit`, `kubectl apply`, a GitOps sync). "
        "*live*: the operator acts on it in the pass the edit triggers; *new pods*: pods created after the edit "
        "get it, running ones keep theirs; *immutable*: the API server refuses the edit with the message shown.",
        "",
        "| Field | Edit | What happens |",
        "|---|---|---|",
        *(f"| `{row.path}` | {row.effect.value} | {_cell(row.what)} |" for row in EDITS),
        "",
        "## Model presets (`spec.trainer.model.preset`)",
        "",
        "A preset fills the model fields; fields you set override it (but see "
        "[operations.md, Known limitations](operations.md#known-limitations)).",
        "",
        *_presets(),
        "",
        "## `status` (written by the operator)",
        "",
        "Generated from the operator's status model; the API server checks what the operator writes. "
        "`membership` and `progress` keep fields this version does not know (documents between versions of "
        "the operator and the trainer). `bookkeeping` is the operator's memory between passes, not an "
        "interface. What each condition and reason means: "
        "[operations.md](operations.md#conditions-and-reasons).",
        "",
        *field_table(version["schema"]["openAPIV3Schema"]["properties"]["status"], "status"),
        "",
        "### Conditions and their reasons",
        "",
        "| Condition | Meaning | Reasons |",
        "|---|---|---|",
        *(f"| `{type_}` | {_cell(_docs(conditions).get(_constant(conditions, type_), ''))} | "
          f"{', '.join(f'`{r}`' for r in reasons)} |" for type_, reasons in conditions.REASONS.items()),
        "",
    ]
    return "\n".join(out)


if __name__ == "__main__":
    sys.stdout.write(render())
