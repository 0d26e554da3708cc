"""spec.autoscaling: off by default, and every cross-field mistake named with its fix."""

from __future__ import annotations

import re
from typing import Any

import pytest

from dstj_operator.spec import DeepSeekTrainingJobSpec


def _spec(**autoscaling: Any) -> DeepSeekTrainingJobSpec:
    return DeepSeekTrainingJobSpec.model_validate({"replicas": 4, "maxReplicas": 8, "autoscaling": autoscaling})


def test_autoscaling_is_off_by_default_and_waits_long_enough_for_a_cluster_autoscaler() -> None:
    auto = DeepSeekTrainingJobSpec().autoscaling
    assert (auto.enabled, auto.policy, auto.min_scaling_efficiency) == (False, "Capacity", 0.0)
    assert auto.unschedulable_seconds >= 300


def test_the_fields_are_camel_case_on_the_wire() -> None:
    auto = _spec(enabled=True, unschedulableSeconds=60, allowedWorldSizes=[2, 4], minScalingEfficiency=0.5,
                 cooldownSeconds=10, surplusPriorityClassName="spot").autoscaling
    assert (auto.unschedulable_seconds, auto.allowed_world_sizes, auto.surplus_priority_class_name) == \
        (60, [2, 4], "spot")


@pytest.mark.parametrize(("autoscaling", "extra", "message"), [
    pytest.param({"allowedWorldSizes": [0]}, {}, "greater than or equal to 1", id="size-zero"),
    pytest.param({"allowedWorldSizes": [2, 2]}, {}, "lists a size twice", id="size-twice"),
    pytest.param({"allowedWorldSizes": []}, {}, "at least 1 item", id="empty-list"),
    pytest.param({"allowedWorldSizes": list(range(1, 66))}, {"maxReplicas": 1024}, "at most 64",
                 id="too-many-sizes"),
    pytest.param({"allowedWorldSizes": [9]}, {}, "every autoscaling.allowedWorldSizes entry must lie within "
                 "minReplicas (1) to maxReplicas (8); drop the others", id="above-max"),
    pytest.param({"allowedWorldSizes": [1, 4]}, {"minReplicas": 2}, "must lie within minReplicas (2)", id="below-min"),
    pytest.param({"allowedWorldSizes": [3, 4]}, {"trainer": {"parallel": {"expertParallel": 2}}},
                 "entry must be a multiple of the workers one expert-parallel group spans (2), from "
                 "trainer.parallel.expertParallel (2)", id="no-layout"),
    pytest.param({"powersOfTwo": True, "allowedWorldSizes": [4]}, {}, "not both", id="both-restrictions"),
    pytest.param({"minScalingEfficiency": 1.5}, {}, "less than or equal to 1", id="efficiency-above-one"),
    pytest.param({"unschedulableSeconds": 1}, {}, "greater than or equal to 10", id="too-short-to-schedule"),
])
def test_a_bad_autoscaling_spec_is_refused_naming_the_field(autoscaling: dict[str, Any], extra: dict[str, Any],
                                                             message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        DeepSeekTrainingJobSpec.model_validate({"replicas": 4, "maxReplicas": 8, **extra, "autoscaling": autoscaling})


def test_allowed_sizes_count_workers_not_ranks() -> None:
    spec = DeepSeekTrainingJobSpec.model_validate({
        "replicas": 2, "devicesPerWorker": 2, "trainer": {"parallel": {"expertParallel": 4}},
        "autoscaling": {"allowedWorldSizes": [2, 4]}})
    assert spec.autoscaling.allowed_world_sizes == [2, 4]  # 2 workers x 2 GPUs = 4 ranks: EP 4 fits
