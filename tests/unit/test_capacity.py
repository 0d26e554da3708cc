"""Capacity signals as data: which Node events say the cluster has room for a job waiting to grow."""

from __future__ import annotations

from typing import Any

import pytest

from dstj_operator import capacity
from tests.unit.policies.builders import NOW


def node(name: str, ready: bool = True, cordoned: bool = False) -> dict[str, Any]:
    return {"metadata": {"name": name}, "spec": {"unschedulable": cordoned},
            "status": {"conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}}


@pytest.fixture(autouse=True)
def fresh() -> None:
    capacity._nodes.clear()
    capacity._waiting.clear()


@pytest.mark.parametrize(("events", "signals"), [
    pytest.param([(None, node("a"))], [False], id="the-initial-listing-is-no-signal"),
    pytest.param([("ADDED", node("a"))], [True], id="a-new-ready-node"),
    pytest.param([("ADDED", node("a", ready=False)), ("MODIFIED", node("a"))], [False, True],
                 id="a-new-node-once-it-turns-ready"),
    pytest.param([(None, node("a", cordoned=True)), ("MODIFIED", node("a"))], [False, True], id="an-uncordoned-node"),
    pytest.param([(None, node("a")), ("MODIFIED", node("a"))], [False, False], id="a-heartbeat-of-a-known-node"),
    pytest.param([(None, node("a")), ("MODIFIED", node("a", cordoned=True))], [False, False], id="a-cordoned-node"),
])
def test_a_node_signals_capacity_when_it_becomes_schedulable(events: list[tuple[str | None, dict[str, Any]]],
                                                               signals: list[bool]) -> None:
    assert [capacity.node_seen(t, n) for t, n in events] == signals


def test_a_signal_reaches_the_jobs_waiting_to_grow_in_its_scope() -> None:
    capacity.waiting(("a", "one"), True)
    capacity.waiting(("b", "two"), True)
    capacity.waiting(("b", "done"), False)
    assert capacity.signal("b", NOW) == [("b", "two")]
    assert capacity.signal(None, NOW) == [("a", "one"), ("b", "two")]
    assert capacity.last_signal("a") == NOW
