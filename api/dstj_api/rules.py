"""Cross-field rules written once, as data: pydantic checks them in Python, the API server as CEL.

A `Rule` is an expression that holds for a valid object, the field its message names, and a message
whose `{placeholders}` show values. A model lists its rules in a `RULES` class variable and calls
`enforce` from one `model_validator`; `dstj_api.cel` renders the same rules as
`x-kubernetes-validations` for the CRD. Expressions stay inside what both languages mean the same way
on the values the schema admits: integers >= 0 (CEL's `/` truncates, Python's `//` floors: the same
there), strings, and equality across types (an int never equals "auto" in either).

Field paths are written as users write them (camelCase, dotted) relative to the model the rule
belongs to. This module must not import the models that use it.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, TypeVar

from pydantic.alias_generators import to_snake


class Scope(Protocol):
    """How an expression reads fields: Python reads a model or a dict, CEL renders an access."""

    def value(self, path: str) -> Any:
        """The field's effective value (Python), or the CEL text that computes it."""
        ...

    def present(self, path: str) -> Any:
        """Whether the field is set (Python: not None), or the CEL text that tests it."""
        ...

    def raw(self, path: str) -> Any:
        """The field as written (Python: the value), or the CEL access without fallbacks (test `present` first)."""
        ...


@dataclass(frozen=True)
class Expr:
    """An expression over the fields of one object; operators build bigger ones."""

    def eval(self, scope: Scope) -> Any:
        """The value in Python."""
        raise NotImplementedError

    def cel(self, scope: Scope) -> str:
        """The CEL text (`scope.value(path)` renders each field)."""
        raise NotImplementedError

    def __add__(self, other: object) -> Expr:
        return Op("+", self, lit(other))

    def __sub__(self, other: object) -> Expr:
        return Op("-", self, lit(other))

    def __mul__(self, other: object) -> Expr:
        return Op("*", self, lit(other))

    def __floordiv__(self, other: object) -> Expr:
        return Op("/", self, lit(other))

    def __mod__(self, other: object) -> Expr:
        return Op("%", self, lit(other))

    def __lt__(self, other: object) -> Expr:
        return Op("<", self, lit(other))

    def __le__(self, other: object) -> Expr:
        return Op("<=", self, lit(other))

    def __gt__(self, other: object) -> Expr:
        return Op(">", self, lit(other))

    def __ge__(self, other: object) -> Expr:
        return Op(">=", self, lit(other))

    def eq(self, other: object) -> Expr:
        """`self == other` (a method: `==` keeps its meaning on expression trees)."""
        return Op("==", self, lit(other))

    def ne(self, other: object) -> Expr:
        """`self != other`."""
        return Op("!=", self, lit(other))


def lit(value: object) -> Expr:
    """An expression for `value` (expressions pass through)."""
    return value if isinstance(value, Expr) else Const(value)


@dataclass(frozen=True)
class Field(Expr):
    """The effective value of a field: what the user wrote, else the preset's, else the default."""

    path: str

    def eval(self, scope: Scope) -> Any:
        return scope.value(self.path)

    def cel(self, scope: Scope) -> str:
        return str(scope.value(self.path))


def f(path: str) -> Field:
    """The field at `path` (camelCase, dotted, relative to the rule's model)."""
    return Field(path)


@dataclass(frozen=True)
class Const(Expr):
    """A literal int, bool or string."""

    value: object

    def eval(self, scope: Scope) -> Any:
        return self.value

    def cel(self, scope: Scope) -> str:
        return cel_literal(self.value)


_PY_OPS: dict[str, Any] = {
    "+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b, "/": lambda a, b: a // b,
    "%": lambda a, b: a % b, "<": lambda a, b: a < b, "<=": lambda a, b: a <= b, ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b, "==": lambda a, b: a == b, "!=": lambda a, b: a != b,
}


@dataclass(frozen=True)
class Op(Expr):
    """A binary arithmetic or comparison operator (CEL spelling)."""

    op: str
    left: Expr
    right: Expr

    def eval(self, scope: Scope) -> Any:
        return _PY_OPS[self.op](self.left.eval(scope), self.right.eval(scope))

    def cel(self, scope: Scope) -> str:
        return f"({self.left.cel(scope)} {self.op} {self.right.cel(scope)})"


@dataclass(frozen=True)
class Logic(Expr):
    """`&&` or `||` over any number of terms, short-circuit in Python (CEL needs no order)."""

    op: str
    terms: tuple[Expr, ...]

    def eval(self, scope: Scope) -> Any:
        if self.op == "&&":
            return all(t.eval(scope) for t in self.terms)
        return any(t.eval(scope) for t in self.terms)

    def cel(self, scope: Scope) -> str:
        return "(" + f" {self.op} ".join(t.cel(scope) for t in self.terms) + ")"


def all_of(*terms: Expr) -> Expr:
    """Every term holds."""
    return Logic("&&", terms)


def any_of(*terms: Expr) -> Expr:
    """At least one term holds."""
    return Logic("||", terms)


@dataclass(frozen=True)
class Not(Expr):
    """Negation."""

    term: Expr

    def eval(self, scope: Scope) -> Any:
        return not self.term.eval(scope)

    def cel(self, scope: Scope) -> str:
        return f"!{self.term.cel(scope)}"


def implies(condition: Expr, then: Expr) -> Expr:
    """`then` holds wherever `condition` does."""
    return any_of(condition.term if isinstance(condition, Not) else Not(condition), then)


@dataclass(frozen=True)
class IsInt(Expr):
    """True when an int-or-string field holds an int."""

    term: Expr

    def eval(self, scope: Scope) -> Any:
        value = self.term.eval(scope)
        return isinstance(value, int) and not isinstance(value, bool)

    def cel(self, scope: Scope) -> str:
        return f"(type({self.term.cel(scope)}) == int)"


@dataclass(frozen=True)
class Filled(Expr):
    """True when an optional string field is set and not empty (Python: truthy)."""

    term: Field

    def eval(self, scope: Scope) -> Any:
        return bool(self.term.eval(scope))

    def cel(self, scope: Scope) -> str:
        present, value = scope.present(self.term.path), f'{scope.raw(self.term.path)} != ""'
        return value if present == "true" else f"({present} && {value})"


@dataclass(frozen=True)
class Size(Expr):
    """The length of a string."""

    term: Expr

    def eval(self, scope: Scope) -> Any:
        return len(self.term.eval(scope))

    def cel(self, scope: Scope) -> str:
        return f"size({self.term.cel(scope)})"


@dataclass(frozen=True)
class Matches(Expr):
    """The whole string matches an RE2 pattern (written anchored, `^...$`, so both mean the same)."""

    term: Expr
    pattern: str

    def eval(self, scope: Scope) -> Any:
        return re.search(self.pattern, self.term.eval(scope)) is not None

    def cel(self, scope: Scope) -> str:
        return f"{self.term.cel(scope)}.matches({cel_literal(self.pattern)})"


@dataclass(frozen=True)
class Larger(Expr):
    """The larger of two ints."""

    a: Expr
    b: Expr

    def eval(self, scope: Scope) -> Any:
        return max(self.a.eval(scope), self.b.eval(scope))

    def cel(self, scope: Scope) -> str:
        a, b = self.a.cel(scope), self.b.cel(scope)
        return f"({a} >= {b} ? {a} : {b})"


@dataclass(frozen=True)
class Gcd(Expr):
    """The greatest common divisor of two ints >= 1, the second at most `bound` (CEL has no gcd, so it
    renders as the largest of 1..bound dividing both)."""

    a: Expr
    b: Expr
    bound: int

    def eval(self, scope: Scope) -> Any:
        import math

        return math.gcd(self.a.eval(scope), self.b.eval(scope))

    def cel(self, scope: Scope) -> str:
        a, b = self.a.cel(scope), self.b.cel(scope)
        candidates = ", ".join(str(k) for k in range(self.bound, 0, -1))
        return f"[{candidates}].filter(k, {a} % k == 0 && {b} % k == 0)[0]"


@dataclass(frozen=True)
class Present(Expr):
    """True when an optional field is set (Python: not None; a null reads as absent in CEL too)."""

    term: Field

    def eval(self, scope: Scope) -> Any:
        return self.term.eval(scope) is not None

    def cel(self, scope: Scope) -> str:
        return str(scope.present(self.term.path))


ITEM = "item"
"""The name under which `Every`'s test reads the list item: `f(ITEM)`."""


class _ItemScope:
    """A scope in which `f(ITEM)` is the current list item (its value in Python, the variable in CEL)."""

    def __init__(self, outer: Scope, item: Any) -> None:
        self.outer, self.item = outer, item

    def value(self, path: str) -> Any:
        return self.item if path == ITEM else self.outer.value(path)

    def present(self, path: str) -> Any:
        return (self.item is not None) if path == ITEM else self.outer.present(path)

    def raw(self, path: str) -> Any:
        return self.item if path == ITEM else self.outer.raw(path)


@dataclass(frozen=True)
class Every(Expr):
    """`test` holds for every item of an optional list field (an absent list passes); `test` reads the
    item as `f(ITEM)`. Give the list a maxItems: the API server bounds the rule's cost by it."""

    items: Field
    test: Expr

    def eval(self, scope: Scope) -> Any:
        return all(self.test.eval(_ItemScope(scope, item)) for item in self.items.eval(scope) or ())

    def cel(self, scope: Scope) -> str:
        present, raw = scope.present(self.items.path), scope.raw(self.items.path)
        test = self.test.cel(_ItemScope(scope, ITEM))
        return f"{raw}.all({ITEM}, {test})" if present == "true" else f"(!{present} || {raw}.all({ITEM}, {test}))"


def cel_literal(value: object) -> str:
    """A Python constant as a CEL literal."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if value is None:
        return "null"
    raise TypeError(f"no CEL literal for {value!r}")


_PLACEHOLDER = re.compile(r"\{([A-Za-z0-9_.]+)\}")


@dataclass(frozen=True)
class Rule:
    """One cross-field rule: `holds` is true for a valid object, else `message` names `field` and the fix.

    `message` shows values through `{name}` placeholders: a field path, or a key of `values`.
    """

    field: str
    holds: Expr
    message: str
    values: Mapping[str, Expr] = dataclasses.field(default_factory=dict)

    def parts(self) -> list[str | Expr]:
        """The message as literal text and the expressions its placeholders show."""
        out: list[str | Expr] = []
        for i, piece in enumerate(_PLACEHOLDER.split(self.message)):
            if i % 2 == 0:
                if piece:
                    out.append(piece)
            else:
                out.append(self.values.get(piece) or f(piece))
        return out

    def explain(self, scope: Scope) -> str:
        """The message with the values of this object."""
        return "".join(p if isinstance(p, str) else str(p.eval(scope)) for p in self.parts())

    def static_message(self) -> str:
        """The message without values (the API server shows it if the message expression fails)."""
        text = re.sub(r"\s*\([^(){}]*\{[^}]+\}[^(){}]*\)", "", self.message)
        return _PLACEHOLDER.sub(lambda m: m.group(1), text)


class ModelScope:
    """Reads fields of a pydantic model (after defaults and presets) or of a plain dict."""

    def __init__(self, root: Any) -> None:
        self.root = root

    def value(self, path: str) -> Any:
        node = self.root
        for key in path.split("."):
            node = node.get(key) if isinstance(node, dict) else getattr(node, to_snake(key))
        return node

    def present(self, path: str) -> bool:
        return self.value(path) is not None

    def raw(self, path: str) -> Any:
        return self.value(path)


class HasRules(Protocol):
    """A model that lists its cross-field rules."""

    RULES: ClassVar[tuple[Rule, ...]]


M = TypeVar("M", bound=HasRules)


def violations(rules: tuple[Rule, ...], obj: Any) -> list[str]:
    """The messages of every rule `obj` breaks, in the order the rules are listed."""
    scope = ModelScope(obj)
    return [rule.explain(scope) for rule in rules if not rule.holds.eval(scope)]


def enforce(model: M) -> M:
    """Raise ValueError with the first broken rule's message, else return the model (for validators)."""
    broken = violations(type(model).RULES, model)
    if broken:
        raise ValueError(broken[0])
    return model
