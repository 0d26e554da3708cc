"""A worker runs the trainer config its generation names: read again only when the digest differs."""

from __future__ import annotations

from pathlib import Path

import pytest

from dstj_api import ConfigError, TrainerConfig, config_digest
from moe_trainer.runtime import config_source
from moe_trainer.runtime.config_source import ConfigFollower, FileConfigSource


def _text(steps: int) -> str:
    return TrainerConfig.model_validate({"train": {"steps": steps}}).model_dump_json(by_alias=True)


@pytest.fixture(autouse=True)
def _no_read_delay(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(config_source, "READ_EVERY_S", 0.0)


def _follower(tmp_path: Path, steps: int) -> ConfigFollower:
    path = tmp_path / "trainer.json"
    path.write_text(_text(steps))
    return ConfigFollower.from_text(path.read_text(), FileConfigSource(path), str(path), lenient=True)


def test_a_generation_naming_the_running_config_or_none_keeps_it_without_reading(tmp_path: Path) -> None:
    follower = _follower(tmp_path, 10)
    (tmp_path / "trainer.json").unlink()  # nothing to read: the answer must come from memory
    assert follower.for_generation(config_digest(_text(10))) is follower.cfg
    assert follower.for_generation(None) is follower.cfg


def test_another_digest_is_read_from_the_source_and_adopted_once_it_matches(tmp_path: Path) -> None:
    follower = _follower(tmp_path, 10)
    wanted = config_digest(_text(20))
    assert follower.for_generation(wanted) is None  # the source still has the old config: wait
    (tmp_path / "trainer.json").write_text(_text(20))
    cfg = follower.for_generation(wanted)
    assert cfg is not None and cfg.train.steps == 20 and follower.digest == wanted


def test_a_matching_config_this_trainer_cannot_read_is_a_config_error(tmp_path: Path) -> None:
    follower = _follower(tmp_path, 10)
    bad = '{"train": {"steps": 0}}'
    (tmp_path / "trainer.json").write_text(bad)
    with pytest.raises(ConfigError, match="steps"):
        follower.for_generation(config_digest(bad))
