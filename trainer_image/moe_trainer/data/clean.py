"""The cleaning stages: quality filters, then exact and near-duplicate removal.

Near duplicates are found with MinHash over word 5-gram shingles and LSH (datasketch); the first
document of each duplicate cluster (in corpus order) is kept, so the result is deterministic.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from datasketch import MinHash, MinHashLSH

_WORD = re.compile(r"\w+")
_NUM_PERM = 64
_SHINGLE = 5


@dataclass(slots=True, frozen=True, kw_only=True)
class CleanReport:
    """How many documents each stage removed."""

    input_docs: int
    too_short: int
    too_symbolic: int
    exact_duplicates: int
    near_duplicates: int
    kept: int


def symbol_ratio(text: str) -> float:
    """Share of characters that are neither letters nor whitespace (code, tables, markup)."""
    if not text:
        return 1.0
    plain = sum(1 for c in text if c.isalpha() or c.isspace())
    return 1.0 - plain / len(text)


def _minhash(text: str) -> MinHash:
    words = _WORD.findall(text.lower())
    grams = {" ".join(words[i : i + _SHINGLE]) for i in range(max(1, len(words) - _SHINGLE + 1))}
    mh = MinHash(num_perm=_NUM_PERM, seed=1)
    mh.update_batch([g.encode() for g in grams])
    return mh


def clean_documents(
    docs: list[str], *, min_chars: int, max_symbol_ratio: float, dedup: bool, threshold: float
) -> tuple[list[str], CleanReport]:
    """Filter by quality, then drop exact and near duplicates; returns the kept docs and a report."""
    short = symbolic = exact = near = 0
    kept: list[str] = []
    seen: set[str] = set()
    lsh = MinHashLSH(threshold=threshold, num_perm=_NUM_PERM) if dedup else None
    for doc in docs:
        if len(doc) < min_chars:
            short += 1
            continue
        if symbol_ratio(doc) > max_symbol_ratio:
            symbolic += 1
            continue
        if lsh is not None:
            digest = hashlib.sha256(" ".join(doc.split()).encode()).hexdigest()
            if digest in seen:
                exact += 1
                continue
            seen.add(digest)
            mh = _minhash(doc)
            if lsh.query(mh):
                near += 1
                continue
            lsh.insert(str(len(kept)), mh)
        kept.append(doc)
    report = CleanReport(
        input_docs=len(docs), too_short=short, too_symbolic=symbolic,
        exact_duplicates=exact, near_duplicates=near, kept=len(kept),
    )
    return kept, report
