"""Render the `RULES` of a pydantic model tree as CEL `x-kubernetes-validations` for a CRD.

The API server sees what the user wrote plus the CRD's defaults; pydantic sees the model after its
defaults and presets. So each field a rule reads renders as its effective value, with CEL's optional
syntax: the value when present, else its preset's, else its default,

    self.?moe.?topK.orValue({"tiny": 2, "small": 4, ...}[?self.?preset.orValue("")].orValue(2))

Below a model with presets the CRD carries no defaults (they would override the preset), and the API
server also checks the rules against each default object as written (`{}`, without the defaults of
its children), so no field is assumed present, even one the CRD defaults. A rule attaches at its
model's node, or at the model with the presets when it lives below one (its fields need `preset`);
`fieldPath` points at the field the message names, and `messageExpression` shows the same values as
the Python message. A null value reads as absent in CEL (the API server drops it), as None does here.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel
from pydantic.alias_generators import to_snake

from dstj_api.rules import Rule, cel_literal

Path = tuple[str, ...]
PRESET_FIELD = "preset"


def _field(cls: type[BaseModel], wire_name: str) -> Any:
    """The pydantic FieldInfo of `wire_name` (camelCase) in `cls`."""
    return cls.model_fields[to_snake(wire_name)]


def _model_class(annotation: Any) -> type[BaseModel] | None:
    return annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None


def models(cls: type[BaseModel], path: Path = ()) -> Iterator[tuple[Path, type[BaseModel]]]:
    """Every model class in the tree under `cls`, with its wire path."""
    yield path, cls
    for name, info in cls.model_fields.items():
        sub = _model_class(info.annotation)
        if sub is not None:
            yield from models(sub, (*path, info.alias or name))


@dataclass(frozen=True)
class Tree:
    """The model tree the CRD is generated from, and the preset tables of the models that have them."""

    root: type[BaseModel]
    presets: Mapping[Path, Mapping[str, Mapping[str, Any]]]

    def _class_at(self, path: Path) -> type[BaseModel]:
        cls = self.root
        for key in path:
            sub = _model_class(_field(cls, key).annotation)
            if sub is None:
                raise ValueError(f"{'.'.join(path)} is not a model: a rule reads a field below a leaf")
            cls = sub
        return cls

    def default(self, path: Path) -> Any:
        """The default of a leaf field (None when it has none)."""
        info = _field(self._class_at(path[:-1]), path[-1])
        return None if info.is_required() else info.get_default(call_default_factory=True)

    def owner(self, path: Path) -> Path | None:
        """The model with presets strictly above `path`, if any."""
        for owner in self.presets:
            if path[: len(owner)] == owner and len(path) > len(owner):
                return owner
        return None



def _preset_value(table: Mapping[str, Any], rel: Path) -> Any:
    node: Any = table
    for key in rel:
        if not isinstance(node, Mapping) or to_snake(key) not in node:
            return None
        node = node[to_snake(key)]
    return node


class CelScope:
    """Renders the fields of rules that belong to the model at `scope`, for a rule attached at `node`."""

    def __init__(self, tree: Tree, node: Path, scope: Path) -> None:
        self.tree, self.node, self.scope = tree, node, scope

    def _optional(self, full: Path) -> str:
        """The field as a CEL optional (none when it, or any parent, is absent)."""
        return "self" + "".join(f".?{key}" for key in full[len(self.node):])

    def _full(self, path: str) -> Path:
        return (*self.scope, *path.split("."))

    def present(self, path: str) -> str:
        return f"{self._optional(self._full(path))}.hasValue()"

    def raw(self, path: str) -> str:
        return ".".join(("self", *self._full(path)[len(self.node):]))

    def value(self, path: str) -> str:
        full = self._full(path)
        return f"{self._optional(full)}.orValue({self._fallback(full)})"

    def _fallback(self, full: Path) -> str:
        default = self.tree.default(full)
        owner = self.tree.owner(full)
        if owner is None:
            return cel_literal(default)
        table = self.tree.presets[owner]
        values = {name: _preset_value(preset, full[len(owner):]) for name, preset in table.items()}
        values = {name: default if v is None else v for name, v in values.items()}
        if all(v == default for v in values.values()):
            return cel_literal(default)
        entries = ", ".join(f"{cel_literal(k)}: {cel_literal(v)}" for k, v in values.items())
        preset = self._optional((*owner, PRESET_FIELD))
        return f'{{{entries}}}[?{preset}.orValue("")].orValue({cel_literal(default)})'


class DirectScope:
    """Renders fields the API server always sets (such as `metadata.name`) as plain accesses."""

    def __init__(self, scope: Path) -> None:
        self.node: Path = ()
        self.scope = scope

    def value(self, path: str) -> str:
        return ".".join(("self", *self.scope, path))

    def present(self, path: str) -> str:
        return "true"

    def raw(self, path: str) -> str:
        return self.value(path)


def validation(rule: Rule, scope: CelScope | DirectScope) -> dict[str, Any]:
    """One `x-kubernetes-validations` entry."""
    # `format`, not `+` and `string()`: the API server estimates the cost of a concatenation of
    # `string(int)` as unbounded and refuses the CRD; `format`'s cost it bounds.
    parts = rule.parts()
    template = "".join(p.replace("%", "%%") if isinstance(p, str) else "%s" for p in parts)
    shown = [p.cel(scope) for p in parts if not isinstance(p, str)]
    message = f"{cel_literal(template)}.format([{', '.join(shown)}])" if shown else cel_literal(template)
    field_path = "." + ".".join((*scope.scope[len(scope.node):], *rule.field.split(".")))
    return {"rule": rule.holds.cel(scope), "message": rule.static_message(),
            "messageExpression": message, "fieldPath": field_path, "reason": "FieldValueInvalid"}


def tree_validations(tree: Tree) -> dict[Path, list[dict[str, Any]]]:
    """The CEL rules of every model in the tree, keyed by the schema node they attach to."""
    out: dict[Path, list[dict[str, Any]]] = {}
    for path, cls in models(tree.root):
        rules: tuple[Rule, ...] = getattr(cls, "RULES", ())
        if not rules:
            continue
        owner = tree.owner(path)
        node = owner if owner is not None else path
        out.setdefault(node, []).extend(validation(r, CelScope(tree, node, path)) for r in rules)
    return out
