"""What one side reads from the other ignores unknown fields; what users write stays strict."""

from __future__ import annotations

import copy
import json
import logging
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from dstj_api import ConfigError, Membership, ProgressReport, load_trainer_config, read_lenient
from dstj_operator.cluster import parse_progress
from moe_trainer.runtime.k8s_membership import membership_of
from moe_trainer.runtime.membership import FileMembershipSource

MEMBERSHIP = {"generation": 3, "worldSize": 2, "members": ["w-0", "w-1"], "rdzvEndpoint": "rdzv:29400",
              "handoffFrom": 2, "state": "running"}
REPORT = {"step": 40, "totalSteps": 100, "generation": 3, "worldSize": 2, "expertParallel": 2, "dataParallel": 1,
          "loss": 3.2, "state": "running", "updated": "2026-12-02T12:00:00Z"}
CONFIG = {"model": {"preset": "tiny", "moe": {"topK": 2}}, "train": {"steps": 10}}


def newer(data: dict[str, Any], *path: str) -> dict[str, Any]:
    """`data` as a newer writer would send it: one field this version does not know, at `path`."""
    out = copy.deepcopy(data)
    node = out
    for key in path[:-1]:
        node = node.setdefault(key, {})
    node[path[-1]] = {"nested": [1, 2]}
    return out


def test_a_trainer_reads_a_membership_with_a_field_it_does_not_know() -> None:
    job = {"status": {"membership": newer(MEMBERSHIP, "placement")}}
    assert membership_of(job) == Membership.model_validate(MEMBERSHIP)


def test_a_trainer_reads_a_membership_file_with_a_field_it_does_not_know(tmp_path: Path) -> None:
    path = tmp_path / "membership.json"
    path.write_text(json.dumps(newer(MEMBERSHIP, "placement")))
    assert FileMembershipSource(path).current() == Membership.model_validate(MEMBERSHIP)


def test_the_operator_reads_a_progress_report_with_a_field_it_does_not_know() -> None:
    report = parse_progress(json.dumps(newer(REPORT, "memory", "peakBytes")), "ns/job-progress")
    assert report == ProgressReport.model_validate(REPORT)


@pytest.mark.parametrize("raw", [
    pytest.param("{not json", id="not JSON"),
    pytest.param(json.dumps({**REPORT, "step": -1}), id="a known field out of range"),
    pytest.param(json.dumps([1, 2]), id="not an object"),
])
def test_a_malformed_progress_report_is_none_and_a_warning(raw: str, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        assert parse_progress(raw, "ns/job-progress") is None
    assert "malformed progress report in ns/job-progress" in caplog.text


@pytest.mark.parametrize("raw", ["", "null", None])
def test_an_empty_progress_report_is_none(raw: str | None) -> None:
    assert parse_progress(raw, "ns/job-progress") is None


def test_a_worker_reads_the_operators_config_with_a_nested_field_it_does_not_know(
        caplog: pytest.LogCaptureFixture) -> None:
    data = newer(newer(CONFIG, "model", "moe", "routerJitter"), "profiler")
    with caplog.at_level(logging.DEBUG, logger="dstj_api.lenient"):
        cfg = load_trainer_config(data, lenient=True)
    assert cfg == load_trainer_config(CONFIG)
    assert "model.moe.routerJitter" in caplog.text and "profiler" in caplog.text


def test_a_config_a_user_wrote_still_refuses_an_unknown_field() -> None:
    with pytest.raises(ConfigError, match=r"model\.moe\.routerJitter: unknown field"):
        load_trainer_config(newer(CONFIG, "model", "moe", "routerJitter"))


def test_a_config_file_is_read_leniently_only_when_asked(tmp_path: Path) -> None:
    path = tmp_path / "trainer.json"
    path.write_text(json.dumps(newer(CONFIG, "train", "warmupShape")))
    assert load_trainer_config(path, lenient=True).train.steps == 10
    with pytest.raises(ConfigError, match=r"train\.warmupShape"):
        load_trainer_config(path)


def test_lenience_forgives_unknown_fields_only_never_bad_values() -> None:
    bad = newer({**MEMBERSHIP, "worldSize": 3}, "placement")
    with pytest.raises(ValidationError) as e:
        read_lenient(Membership, bad, "membership")
    assert [err["loc"] for err in e.value.errors()] == [()]  # the member-count rule, not the extra field


def test_reading_leniently_leaves_the_callers_data_as_it_was() -> None:
    data = newer(MEMBERSHIP, "placement")
    before = copy.deepcopy(data)
    read_lenient(Membership, data, "membership")
    assert data == before
