"""Conditions: every reason the operator writes is declared under its condition, and every declared one is
written somewhere."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from dstj_operator import conditions
from dstj_operator.status import Condition

OPERATOR = Path(conditions.__file__).parent


def _referenced() -> set[str]:
    names = set()
    for path in OPERATOR.rglob("*.py"):
        if path.name == "conditions.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "conditions":
                names.add(node.attr)
    return names


def _reason_constants() -> dict[str, str]:
    declared = {r for reasons in conditions.REASONS.values() for r in reasons}
    return {name: value for name, value in vars(conditions).items()
            if name.isupper() and isinstance(value, str) and value in declared}


def test_every_declared_reason_is_written_by_the_operator() -> None:
    unused = sorted(set(_reason_constants()) - _referenced())
    assert not unused, f"declared in conditions.py but never written: {unused}"


def test_every_reason_constant_is_declared_under_some_condition() -> None:
    declared = {r for reasons in conditions.REASONS.values() for r in reasons}
    module = ast.parse(Path(conditions.__file__).read_text())
    constants = [n.targets[0].id for n in module.body if isinstance(n, ast.Assign)
                 and isinstance(n.targets[0], ast.Name) and isinstance(n.value, ast.Constant)]
    types = {conditions.SYNCED, conditions.RUNNING, conditions.DEGRADED, conditions.RESTARTING, conditions.STALLED,
             conditions.PROGRESSING, conditions.SUSPENDED, conditions.SUCCEEDED, conditions.FAILED, conditions.SCALING}
    stray = [c for c in constants if getattr(conditions, c) not in declared | types]
    assert not stray, f"constants in conditions.py that are neither a type nor a declared reason: {stray}"
    assert set(conditions.REASONS) == types


def test_an_undeclared_reason_is_refused_when_written() -> None:
    with pytest.raises(ValueError, match="not declared"):
        conditions.set_condition([], conditions.RUNNING, True, "Whatever", "")


def test_the_transition_time_moves_only_when_the_status_flips() -> None:
    conds: list[Condition] = []
    assert conditions.set_condition(conds, conditions.STALLED, False, conditions.MAKING_PROGRESS, "", at="t0")
    assert not conditions.set_condition(conds, conditions.STALLED, False, conditions.MAKING_PROGRESS, "", at="t1")
    assert conditions.set_condition(conds, conditions.STALLED, False, conditions.MAKING_PROGRESS, "new", at="t2")
    assert conds[0].last_transition_time == "t0"
    assert conditions.set_condition(conds, conditions.STALLED, True, conditions.NO_PROGRESS, "", at="t3")
    assert conds[0].last_transition_time == "t3"
