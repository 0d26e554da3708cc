"""Tokenizers: a byte-level BPE trained on the corpus (tokenizers library), or raw bytes.

Id 0 is the end-of-document separator in both.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

EOS = "<|eos|>"


class TextTokenizer(Protocol):
    """Turns text into ids and back; id 0 separates documents."""

    vocab_size: int

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]: ...

    def decode(self, ids: Sequence[int]) -> str: ...

    def to_json(self) -> str: ...


class ByteTokenizer:
    """UTF-8 bytes as ids 1..255 shifted by nothing: NUL (0) never occurs in text, so it is the separator."""

    vocab_size = 256

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """Bytes of each text, NULs removed."""
        return [[b for b in t.encode("utf-8") if b] for t in texts]

    def decode(self, ids: Sequence[int]) -> str:
        """Bytes back to text (invalid sequences replaced)."""
        return bytes(i for i in ids if 0 < i < 256).decode("utf-8", errors="replace")

    def to_json(self) -> str:
        """Nothing to store: the byte tokenizer has no learned state."""
        return '{"type": "bytes"}'


class BPETokenizer:
    """A byte-level BPE (GPT-2 style pre-tokenization) wrapped from the tokenizers library."""

    def __init__(self, tok: Tokenizer) -> None:
        self._tok = tok
        self.vocab_size: int = tok.get_vocab_size()

    @classmethod
    def train(cls, docs: Sequence[str], vocab_size: int) -> BPETokenizer:
        """Learn merges on `docs` up to `vocab_size` ids (EOS is id 0)."""
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size, special_tokens=[EOS], show_progress=False,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        )
        tok.train_from_iterator(docs, trainer=trainer)
        return cls(tok)

    @classmethod
    def from_json(cls, text: str) -> BPETokenizer:
        """Load a tokenizer saved by `to_json`."""
        return cls(Tokenizer.from_str(text))

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of each text."""
        return [e.ids for e in self._tok.encode_batch(list(texts))]

    def decode(self, ids: Sequence[int]) -> str:
        """Ids back to text."""
        return str(self._tok.decode(list(ids)))

    def to_json(self) -> str:
        """The full tokenizer as JSON (stored beside the tokenized data)."""
        return str(self._tok.to_str())
