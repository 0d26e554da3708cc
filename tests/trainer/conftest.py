"""Shared fixtures for trainer tests: a small real-text corpus and a tiny config over it."""

from __future__ import annotations

from pathlib import Path

import pytest

from dstj_api import TrainerConfig, load_trainer_config


@pytest.fixture(scope="session")
def real_text_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A few hundred KB of the Python language reference: real prose, no download."""
    from pydoc_data.topics import topics

    path = tmp_path_factory.mktemp("corpus") / "reference.txt"
    path.write_text("\n\n".join(topics[k] for k in sorted(topics)))
    return path


@pytest.fixture(scope="session")
def data_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data cache shared by the session's tests (and the worker processes they start)."""
    return tmp_path_factory.mktemp("dstj-cache")


@pytest.fixture
def tiny_config(real_text_file: Path, data_cache: Path, monkeypatch: pytest.MonkeyPatch) -> TrainerConfig:
    """The tiny preset on byte tokens, its data cached once per session."""
    monkeypatch.setenv("DSTJ_CACHE", str(data_cache))
    return load_trainer_config({
        "model": {"preset": "tiny", "vocabSize": 256, "moe": {"biasUpdateRate": 0.01}},
        "train": {"steps": 30, "globalBatch": 8, "microBatch": 8, "seqLen": 32, "logEvery": 10},
        "optim": {"lr": 0.003, "warmupSteps": 3},
        "data": {"source": "path", "path": str(real_text_file), "tokenizer": "bytes", "minChars": 100},
    })
