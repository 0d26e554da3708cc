"""`plan_layout`: the EP x DP layout of W ranks, shared by the trainer and the operator (no torch)."""

from __future__ import annotations

import pytest

from dstj_api.layout import DEFAULT_EP_CAP, Layout, LayoutError, plan_layout


@pytest.mark.parametrize(("world", "experts", "expected"), [
    pytest.param(1, 8, Layout(1, 1, 1), id="one rank holds every expert"),
    pytest.param(2, 8, Layout(2, 2, 1), id="two ranks split the experts"),
    pytest.param(3, 8, Layout(3, 1, 3), id="three ranks replicate experts that three does not divide"),
    pytest.param(6, 8, Layout(6, 2, 3), id="six ranks take the largest common divisor as EP"),
    pytest.param(16, 64, Layout(16, DEFAULT_EP_CAP, 2), id="auto never exceeds the EP cap"),
])
def test_auto_picks_the_largest_ep_that_divides_the_world_and_the_experts(world: int, experts: int,
                                                                          expected: Layout) -> None:
    assert plan_layout(world, experts) == expected


def test_auto_honours_a_lower_cap() -> None:
    assert plan_layout(8, 8, cap=2) == Layout(8, 2, 4)


def test_a_fixed_ep_that_fits_is_used_as_asked() -> None:
    assert plan_layout(4, 8, 2) == Layout(4, 2, 2)


def test_a_fixed_ep_that_does_not_fit_names_the_ones_that_would() -> None:
    with pytest.raises(LayoutError, match=r"expertParallel=4 does not divide .* world size \(6\).*one of \[1, 2\]"):
        plan_layout(6, 8, 4)


def test_no_layout_exists_for_zero_ranks() -> None:
    with pytest.raises(LayoutError, match="world size must be >= 1"):
        plan_layout(0, 8)


def test_ranks_are_laid_out_ep_major_and_hold_consecutive_experts() -> None:
    layout = plan_layout(4, 8, 2)
    assert [layout.ep_rank(r) for r in range(4)] == [0, 1, 0, 1]
    assert [list(layout.experts_of(r, 8)) for r in range(2)] == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert layout.experts_of(2, 8) == layout.experts_of(0, 8)  # rank 2 is rank 0's DP replica
