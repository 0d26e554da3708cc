"""Values kept per spec generation: computed once while the spec stands, again when it moves."""

from __future__ import annotations

from typing import Any

from dstj_operator.perjob import PerGeneration


def job(generation: int, replicas: int, uid: str = "u1") -> dict[str, Any]:
    return {"metadata": {"uid": uid, "generation": generation}, "spec": {"replicas": replicas}}


def test_a_value_is_computed_once_per_spec_and_again_when_the_spec_moves() -> None:
    memo: PerGeneration[int] = PerGeneration()
    calls: list[int] = []

    def compute(j: dict[str, Any]) -> int:
        calls.append(1)
        return int(j["spec"]["replicas"])

    for j in (job(1, 4), job(1, 4), job(2, 8), job(2, 8), job(2, 2)):
        assert memo.get(j, lambda j=j: compute(j)) == j["spec"]["replicas"]
    assert len(calls) == 3  # generation 1, generation 2, and a spec that differs at the same generation


def test_the_least_recently_used_jobs_are_dropped_beyond_the_capacity() -> None:
    memo: PerGeneration[str] = PerGeneration(capacity=2)
    for uid in ("a", "b", "a", "c"):
        memo.get(job(1, 1, uid), lambda uid=uid: uid)
    assert list(memo._held) == ["a", "c"]
