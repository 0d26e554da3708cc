"""A bad trainer config is refused with a message that names the field and the fix."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from dstj_api import ConfigError, TrainerConfig, load_trainer_config, model_preset

BAD = [
    pytest.param({"train": {"stepz": 3}}, "train.stepz", "unknown field", id="typo-in-field-name"),
    pytest.param({"train": {"steps": 0}}, "train.steps", "greater than or equal to 1", id="zero-steps"),
    pytest.param({"model": {"preset": "huge"}}, "model", "unknown preset 'huge'", id="unknown-preset"),
    pytest.param({"model": {"preset": "tiny", "moe": {"topK": 9}}}, "model.moe", "topK (9) must be <= nRouted (8)",
                 id="top-k-above-experts"),
    pytest.param({"model": {"preset": "tiny", "moe": {"nGroups": 3}}}, "model.moe", "must divide nRouted",
                 id="groups-not-dividing-experts"),
    pytest.param({"model": {"preset": "tiny", "nHeads": 5}}, "model", "nHeads (5) must divide dim",
                 id="heads-not-dividing-dim"),
    pytest.param({"train": {"globalBatch": 10, "microBatch": 4}}, "train", "microBatch (4) must divide globalBatch",
                 id="micro-batch-not-dividing"),
    pytest.param({"train": {"seqLen": 4096}}, "(root)", "train.seqLen (4096) exceeds model.maxSeqLen",
                 id="sequence-longer-than-rope-tables"),
    pytest.param({"model": {"preset": "tiny", "moe": {"scoreFunc": "relu"}}}, "model.moe.scoreFunc",
                 "'softmax' or 'sigmoid'", id="unknown-score-function"),
    pytest.param({"data": {"source": "path"}}, "(root)", "data.source=path needs data.path", id="path-without-path"),
    pytest.param({"model": {"preset": "tiny", "moe": {"capacityFactor": -1}}}, "model.moe.capacityFactor",
                 "greater than 0", id="negative-capacity"),
    pytest.param({"model": {"preset": "tiny", "moe": {"nGroups": 2, "topkGroups": 3}}}, "model.moe",
                 "topkGroups (3) must be <= nGroups (2); lower topkGroups", id="more-group-picks-than-groups"),
    pytest.param({"model": {"preset": "base", "moe": {"topkGroups": 1, "topK": 9}}}, "model.moe",
                 "topK (9) exceeds the experts reachable in topkGroups groups (8)", id="top-k-beyond-reachable"),
    pytest.param({"model": {"preset": "tiny", "nDenseLayers": 3}}, "model", "nDenseLayers (3) must be <= nLayers (2)",
                 id="more-dense-layers-than-layers"),
    pytest.param({"model": {"preset": "tiny", "vocabSize": 255}, "data": {"tokenizer": "bytes"}}, "(root)",
                 "needs model.vocabSize >= 256 (got 255)", id="byte-tokenizer-with-a-small-vocabulary"),
    pytest.param({"parallel": {"expertParallel": 0}}, "parallel", "expertParallel must be auto or >= 1 (got 0)",
                 id="zero-expert-parallel"),
    pytest.param({"parallel": {"expertParallel": 3}}, "(root)",
                 "parallel.expertParallel (3) must divide model.moe.nRouted (8)", id="expert-parallel-not-dividing"),
]


@pytest.mark.parametrize(("config", "field", "message"), BAD)
def test_bad_config_is_refused_naming_the_field(config: dict[str, Any], field: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_trainer_config(config)
    text = str(err.value)
    assert f"  {field}: " in text, text
    assert message in text, text


def test_preset_fields_can_be_overridden_in_either_spelling() -> None:
    cfg = load_trainer_config({"model": {"preset": "tiny", "nLayers": 3, "moe": {"top_k": 3}}})
    assert (cfg.model.n_layers, cfg.model.moe.top_k) == (3, 3)
    assert cfg.model.moe.n_routed == model_preset("tiny").moe.n_routed


def test_missing_and_malformed_files_say_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        load_trainer_config(tmp_path / "absent.json")
    bad = tmp_path / "bad.json"
    bad.write_text('{"train": {"steps": 3,}}')
    with pytest.raises(ConfigError, match="not valid JSON at line 1"):
        load_trainer_config(bad)


def test_every_preset_is_a_valid_model() -> None:
    from dstj_api.trainer_config import PRESETS

    for name in PRESETS:
        assert model_preset(name).preset == name


def test_config_round_trips_through_camel_case_json() -> None:
    cfg = TrainerConfig()
    wire = json.loads(cfg.model_dump_json(by_alias=True))
    assert "globalBatch" in wire["train"]
    assert load_trainer_config(wire) == cfg
