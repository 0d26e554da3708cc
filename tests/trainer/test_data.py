"""Data: order is a pure function of (seed, step); cleaning removes planted duplicates."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from dstj_api import TrainerConfig
from moe_trainer.data.clean import clean_documents
from moe_trainer.data.dataset import TokenDataset, build_datasets


def dataset(n_samples: int, seed: int = 0, curriculum: bool = False) -> TokenDataset:
    return TokenDataset(np.arange(n_samples * 8 + 1, dtype=np.int32), seq_len=8, seed=seed, curriculum=curriculum)


@pytest.mark.parametrize("curriculum", [False, True], ids=["shuffled", "curriculum"])
def test_sample_order_is_a_pure_function_of_seed_and_step(curriculum: bool) -> None:
    forward = dataset(100, curriculum=curriculum)
    fresh = dataset(100, curriculum=curriculum)
    in_order = [forward.sample_ids(s, 7) for s in range(40)]
    backwards = [fresh.sample_ids(s, 7) for s in reversed(range(40))][::-1]
    assert in_order == backwards
    assert dataset(100, seed=1).sample_ids(0, 7) != in_order[0]


@pytest.mark.parametrize("curriculum", [False, True], ids=["shuffled", "curriculum"])
def test_each_epoch_visits_every_sample_exactly_once(curriculum: bool) -> None:
    data = dataset(60, curriculum=curriculum)
    seen = [i for s in range(12) for i in data.sample_ids(s, 10)]  # two epochs of 60
    assert sorted(seen[:60]) == list(range(60))
    assert sorted(seen[60:]) == list(range(60))
    assert seen[:60] != seen[60:]


def test_curriculum_starts_with_the_first_laid_out_documents() -> None:
    data = dataset(1000, curriculum=True)
    early = data.sample_ids(0, 4)
    assert max(early) < 16 * 4  # within the first block of the easiest-first layout


def test_batches_hold_consecutive_windows_with_one_token_of_overlap() -> None:
    data = dataset(10)
    batch = data.batch([0, 3])
    assert batch.shape == (2, 9)
    assert batch[1, 0].item() == 24 and batch[1, -1].item() == 32


REAL_DOCS = [
    "The quick brown fox jumps over the lazy dog while the farmer watches from the old wooden porch nearby.",
    "Python's garbage collector reclaims cycles of objects that reference counting alone cannot free at all.",
    "A checkpoint is complete or invisible: the marker that names it is written only after every shard exists.",
    "Mixture-of-experts layers route each token to a few experts, so compute grows with k rather than with E.",
]


def test_dedup_removes_planted_exact_and_near_duplicates() -> None:
    near = REAL_DOCS[1] + " It runs now and then."  # a copy with a trailing line, as scraped pages have
    docs = [*REAL_DOCS, REAL_DOCS[0], "  " + REAL_DOCS[2].replace(" ", "  "), near]
    kept, report = clean_documents(docs, min_chars=10, max_symbol_ratio=0.5, dedup=True, threshold=0.7)
    assert kept == REAL_DOCS
    assert (report.exact_duplicates, report.near_duplicates) == (2, 1)


def test_quality_filters_drop_short_and_symbol_heavy_documents() -> None:
    docs = [*REAL_DOCS, "tiny", "{}[]()<>;;==++--**//" * 6]
    kept, report = clean_documents(docs, min_chars=50, max_symbol_ratio=0.3, dedup=False, threshold=0.8)
    assert kept == REAL_DOCS
    assert (report.too_short, report.too_symbolic) == (1, 1)


def test_a_worker_maps_the_data_another_built_beside_the_checkpoints_without_building_it(
    tiny_config: TrainerConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from moe_trainer.data import dataset as data_module

    shared = tmp_path / "ckpt" / "data"
    first, _, _ = build_datasets(tiny_config, shared)  # the first worker: from its own cache, or built
    monkeypatch.setenv("DSTJ_CACHE", str(tmp_path / "a-newcomers-empty-cache"))

    def never(*_: object) -> None:
        raise AssertionError("a newcomer cleaned and tokenized the corpus again")

    monkeypatch.setattr(data_module, "_build", never)
    newcomer, _, _ = build_datasets(tiny_config, shared)
    assert isinstance(newcomer.tokens, np.memmap)
    assert newcomer.sample_ids(3, 8) == first.sample_ids(3, 8)
    assert np.array_equal(newcomer.batch([0, 5]).numpy(), first.batch([0, 5]).numpy())
