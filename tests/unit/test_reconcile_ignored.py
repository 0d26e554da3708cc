"""A job an older CRD admitted with a field the operator sets itself: the pass ignores it and says so once."""

from __future__ import annotations

import json

from dstj_operator import children
from dstj_operator.edits import operator_set_fields
from dstj_operator.reconcile import reconcile
from dstj_operator.spec import parse_spec
from tests.unit.policies.builders import NOW
from tests.unit.test_reconcile_autoscale import PodsOnly, job, pod, training


def test_only_a_set_operator_set_field_is_reported() -> None:
    assert operator_set_fields({"trainer": {"checkpoint": {"dir": "/srv/ckpt", "interval": 5}}}) == [
        "spec.trainer.checkpoint.dir"]
    assert operator_set_fields({"trainer": {"checkpoint": {"dir": None}}}) == []
    assert operator_set_fields({"trainer": {"checkpoint": {"interval": 5}}}) == []
    assert operator_set_fields({}) == []


def test_a_stored_checkpoint_dir_is_ignored_with_one_warning_and_the_mount_is_used() -> None:
    stored = job(training(0, 1), trainer={"checkpoint": {"dir": "/srv/elsewhere"}})
    cluster = PodsOnly([pod(0), pod(1), pod(0, role="rendezvous")])
    first = reconcile(cluster, stored, NOW)  # type: ignore[arg-type]
    assert first.status.ignored_fields == ["spec.trainer.checkpoint.dir"]
    warnings = [e for e in first.events if e.reason == "OperatorSetFields"]
    assert len(warnings) == 1 and "remove it" in warnings[0].message
    again = reconcile(cluster, {**stored, "status": first.status.dump()}, NOW)  # type: ignore[arg-type]
    assert again.status.ignored_fields == ["spec.trainer.checkpoint.dir"]
    assert not [e for e in again.events if e.reason == "OperatorSetFields"]
    spec, _ = parse_spec(stored["spec"])
    config = json.loads(children.trainer_config_map(stored, spec)["data"][children.CONFIG_KEY])
    assert config["checkpoint"]["dir"] == children.CHECKPOINT_MOUNT
