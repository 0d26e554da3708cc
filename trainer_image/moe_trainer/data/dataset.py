"""Tokenized datasets and the sample order: which samples make up the global batch of step s.

A sample is a window of `seq_len + 1` tokens of the concatenated, EOS-separated documents. The
global batch of step s is `sample_ids(s)`, a pure function of (seed, step, dataset size, global
batch size): epoch e is a permutation drawn from a generator seeded with (seed, e), so no sample is
seen twice in an epoch and a run resumed at step s draws exactly what an uninterrupted run would.
With curriculum on, documents are laid out easiest first and epoch 0 shuffles only within blocks,
so early steps see easier text.

Built data is cached on disk keyed by everything that shapes it (beside the checkpoints when they are in
a directory, so a run tokenizes once and newcomers only map it); workers that need it at once (several ranks)
wait for one builder (`build_lock`) and, should two build, the first complete directory wins by an atomic
rename. Token arrays are memory-mapped.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from dstj_api import TrainerConfig
from moe_trainer.data.build_lock import build_once
from moe_trainer.data.corpus import builtin_documents, path_documents
from moe_trainer.data.tokenizer import BPETokenizer, ByteTokenizer, TextTokenizer

_FORMAT = 1
_ENCODE_CHUNK = 4096
"""Documents tokenized at a time while building (bounds the tokenizer's working memory)."""
_CURRICULUM_BLOCK = 16
"""Epoch 0 under curriculum shuffles within blocks of this many global batches."""


@dataclass(slots=True)
class TokenDataset:
    """Fixed-length windows over one token stream, served in the order of `sample_ids`."""

    tokens: np.ndarray
    seq_len: int
    seed: int
    curriculum: bool = False

    def __len__(self) -> int:
        return max(0, (len(self.tokens) - 1) // self.seq_len)

    def sample_ids(self, step: int, global_batch: int) -> list[int]:
        """The sample ids of the global batch of optimizer step `step` (0-based)."""
        n = len(self)
        first = step * global_batch
        return [self._sample_at(g, n, global_batch) for g in range(first, first + global_batch)]

    def _sample_at(self, position: int, n: int, global_batch: int) -> int:
        epoch, offset = divmod(position, n)
        rng = np.random.default_rng([self.seed, epoch])
        if self.curriculum and epoch == 0:
            block = _CURRICULUM_BLOCK * global_batch
            start = offset - offset % block
            size = min(block, n - start)
            return start + int(rng.permutation(size)[offset - start]) if size > 1 else start
        return int(_permutation(self.seed, epoch, n)[offset])

    def batch(self, ids: list[int]) -> Tensor:
        """Windows `[len(ids), seq_len + 1]` (inputs are [:, :-1], targets [:, 1:])."""
        rows = [self.tokens[i * self.seq_len : i * self.seq_len + self.seq_len + 1] for i in ids]
        return torch.from_numpy(np.stack(rows).astype(np.int64))


_PERM_CACHE: dict[tuple[int, int, int], np.ndarray] = {}


def _permutation(seed: int, epoch: int, n: int) -> np.ndarray:
    key = (seed, epoch, n)
    if key not in _PERM_CACHE:
        _PERM_CACHE.clear()
        _PERM_CACHE[key] = np.random.default_rng([seed, epoch]).permutation(n)
    return _PERM_CACHE[key]


@dataclass(slots=True, frozen=True, kw_only=True)
class DataInfo:
    """What was built, for the run's summary."""

    documents_in: int
    documents_kept: int
    removed_short: int
    removed_symbolic: int
    removed_exact_dup: int
    removed_near_dup: int
    train_tokens: int
    eval_tokens: int
    vocab_size: int
    unigram_entropy_nats: float
    """Entropy of the training tokens' unigram distribution: the loss of a model that ignores context."""


def default_cache_dir() -> Path:
    """`$DSTJ_CACHE/data` (default ~/.cache/dstj/data)."""
    return Path(os.environ.get("DSTJ_CACHE", Path.home() / ".cache" / "dstj")) / "data"


def _cache_key(cfg: TrainerConfig) -> str:
    spec = {"format": _FORMAT, "data": cfg.data.model_dump(), "vocab": cfg.model.vocab_size,
            "python": sys.version}
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def _is_holdout(doc: str, fraction: float) -> bool:
    return zlib.crc32(doc.encode()) % 10_000 < fraction * 10_000


def _encode(tok: TextTokenizer, docs: list[str]) -> tuple[np.ndarray, list[int]]:
    """Every document's ids followed by EOS (0), as one int32 array, and each document's token count.

    Encoded a chunk at a time: the tokenizer's per-token objects for a whole large corpus would take many times
    the memory of the ids (bytes per token: ~4 as int32, tens as Python ints or encodings).
    """
    parts: list[np.ndarray] = []
    lengths: list[int] = []
    for start in range(0, len(docs), _ENCODE_CHUNK):
        ids = tok.encode_batch(docs[start : start + _ENCODE_CHUNK])
        lengths.extend(len(x) for x in ids)
        parts.append(np.fromiter((t for x in ids for t in (*x, 0)), dtype=np.int32))
    return (np.concatenate(parts) if parts else np.zeros(0, dtype=np.int32)), lengths


def _build(cfg: TrainerConfig, out: Path) -> None:
    # Imported here: only a cold build needs datasketch, and its import (~0.3-0.5 s) would otherwise
    # delay every worker's start, a new member's arrival included.
    from moe_trainer.data.clean import clean_documents

    d = cfg.data
    raw = builtin_documents() if d.source == "builtin" else path_documents(d.path or "")
    docs, report = clean_documents(
        raw, min_chars=d.min_chars, max_symbol_ratio=d.max_symbol_ratio, dedup=d.dedup,
        threshold=d.dedup_threshold,
    )
    train_docs = [t for t in docs if not _is_holdout(t, d.holdout_fraction)]
    eval_docs = [t for t in docs if _is_holdout(t, d.holdout_fraction)]
    if len(train_docs) < 2 or not eval_docs:
        raise ValueError(
            f"data: only {len(train_docs)} training and {len(eval_docs)} held-out documents survive cleaning; "
            "add data or relax data.minChars / data.maxSymbolRatio / data.holdoutFraction"
        )
    tok: TextTokenizer = (
        BPETokenizer.train(train_docs, cfg.model.vocab_size) if d.tokenizer == "bpe" else ByteTokenizer()
    )
    train, train_lengths = _encode(tok, train_docs)
    held, _ = _encode(tok, eval_docs)
    if d.curriculum:  # easiest first: fewer tokens per character means more common words
        order = sorted(range(len(train_docs)), key=lambda i: (train_lengths[i] / len(train_docs[i]), i))
        ends = np.cumsum(np.asarray(train_lengths, dtype=np.int64) + 1)
        train = np.concatenate([train[ends[i] - train_lengths[i] - 1 : ends[i]] for i in order])
    counts = np.bincount(train, minlength=tok.vocab_size).astype(np.float64)
    p = counts[counts > 0] / counts.sum()
    info = DataInfo(
        documents_in=report.input_docs, documents_kept=report.kept, removed_short=report.too_short,
        removed_symbolic=report.too_symbolic, removed_exact_dup=report.exact_duplicates,
        removed_near_dup=report.near_duplicates, train_tokens=len(train), eval_tokens=len(held),
        vocab_size=tok.vocab_size, unigram_entropy_nats=float(-(p * np.log(p)).sum()),
    )
    np.save(out / "train.npy", train)
    np.save(out / "eval.npy", held)
    (out / "tokenizer.json").write_text(tok.to_json())
    (out / "info.json").write_text(json.dumps(asdict(info), indent=2))


def _build_into(cfg: TrainerConfig, root: Path) -> None:
    """Build (or copy from this machine's cache) into a temporary directory, then rename it to `root`."""
    tmp = Path(tempfile.mkdtemp(dir=root.parent, prefix=".building-"))
    local = default_cache_dir() / root.name
    try:
        if local != root and (local / "info.json").exists():
            shutil.copytree(local, tmp, dirs_exist_ok=True)
        else:
            _build(cfg, tmp)
        os.rename(tmp, root)
    except OSError:
        if not (root / "info.json").exists():
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def build_datasets(
    cfg: TrainerConfig, cache_dir: Path | None = None
) -> tuple[TokenDataset, TokenDataset, DataInfo]:
    """Train and held-out datasets for `cfg` (built once, then read from the cache).

    `cache_dir` may be shared by the run's workers (beside the checkpoints): the first to need the data
    builds it there (or copies it from this machine's own cache, when that has it) while the others wait
    (`build_lock`), and every later worker, a newcomer included, maps it instead of cleaning and tokenizing the
    corpus again.
    """
    key = _cache_key(cfg)
    root = (cache_dir or default_cache_dir()) / key
    root.parent.mkdir(parents=True, exist_ok=True)
    build_once(lambda: (root / "info.json").exists(), root.parent / f".{key}.lock", lambda: _build_into(cfg, root))
    info = DataInfo(**json.loads((root / "info.json").read_text()))
    if info.vocab_size > cfg.model.vocab_size:
        raise ValueError(f"tokenizer has {info.vocab_size} ids but model.vocabSize is {cfg.model.vocab_size}")
    seq, seed = cfg.train.seq_len, cfg.train.seed
    # Memory-mapped: a worker's memory holds the windows it reads, not the corpus, and workers on one
    # machine share the pages.
    train = TokenDataset(np.load(root / "train.npy", mmap_mode="r"), seq, seed, cfg.data.curriculum)
    held = TokenDataset(np.load(root / "eval.npy", mmap_mode="r"), seq, seed + 1)
    if len(train) < cfg.train.global_batch or len(held) == 0:
        raise ValueError(
            f"data: {len(train)} training windows of train.seqLen={seq} tokens is fewer than "
            f"train.globalBatch={cfg.train.global_batch}; add data or shorten train.seqLen"
        )
    return train, held, info


def tokens_per_step(cfg: TrainerConfig) -> int:
    """Target tokens in one optimizer step (the loss is normalised by this, whatever the world size)."""
    return cfg.train.global_batch * cfg.train.seq_len


__all__ = ["DataInfo", "TokenDataset", "build_datasets", "default_cache_dir", "tokens_per_step"]
