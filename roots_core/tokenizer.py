"""The tokenizer loader: a sentencepiece model with roots_scale's fixed special ids, and its fingerprint.

Training a tokenizer is a data-tools stage (`data_tools.tokenizer`); loading one is needed on both
sides (tokenizing shards, generating text, checking a store's vocabulary, exporting to Hugging Face),
so it lives here. `model_proto` is the one place a model file is parsed.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import sentencepiece as spm
from sentencepiece import sentencepiece_model_pb2 as model_pb2

from roots_core.errors import TokenizerError
from roots_core.word_encoder import WordEncoder, word_path_allowed

SPECIAL_TOKENS: dict[str, int] = {"pad": 0, "unk": 1, "eod": 2, "mask": 3, "cls": 4, "sep": 5}


def read_model_bytes(path: str | os.PathLike[str]) -> bytes:
    """The bytes of the `.model` file at `path`; TokenizerError naming it if it cannot be read."""
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise TokenizerError(f"cannot read tokenizer model {path}: {exc.strerror} "
                             "(expected the PREFIX.model written by `roots-data train-tokenizer`)") from exc


def model_proto(model_bytes: bytes) -> model_pb2.ModelProto:
    """The parsed sentencepiece model (pieces, normalizer and trainer specs)."""
    proto = model_pb2.ModelProto()
    proto.ParseFromString(model_bytes)
    return proto


def fingerprint_of(model_bytes: bytes) -> str:
    """The sha256 a store's manifest records for the tokenizer it was made with."""
    return hashlib.sha256(model_bytes).hexdigest()


class Tokenizer:
    """A trained sentencepiece model with the fixed special ids, and its fingerprint."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        """Load the `.model` file at `path`; TokenizerError if unreadable or its special ids differ."""
        self.path = Path(path)
        model_bytes = read_model_bytes(self.path)
        self._sp = spm.SentencePieceProcessor()
        try:
            self._sp.LoadFromSerializedProto(model_bytes)
        except RuntimeError as exc:
            raise TokenizerError(f"{self.path} is not a sentencepiece model: {exc}") from exc
        self.fingerprint = fingerprint_of(model_bytes)
        found = {
            "pad": self._sp.pad_id(),
            "unk": self._sp.unk_id(),
            "eod": self._sp.eos_id(),
            **{name: self._sp.piece_to_id(f"<{name}>") for name in ("mask", "cls", "sep")},
        }
        if found != SPECIAL_TOKENS:
            raise TokenizerError(
                f"tokenizer {self.path} has special ids {found}; roots_scale needs {SPECIAL_TOKENS} "
                "(train it with `roots-data train-tokenizer`)"
            )
        self.special_tokens = dict(SPECIAL_TOKENS)
        # The word path when the model's settings prove it gives sentencepiece's ids; else sentencepiece alone.
        self._words = WordEncoder(self._sp) if word_path_allowed(model_proto(model_bytes)) else None

    @property
    def word_path(self) -> bool:
        """Whether `encode_batch` encodes each distinct word once (roots_core.word_encoder) rather than every text."""
        return self._words is not None

    @property
    def vocab_size(self) -> int:
        """Number of ids (every id is < vocab_size)."""
        return self._sp.get_piece_size()

    def encode(self, text: str) -> list[int]:
        """Token ids of `text` (no eod appended)."""
        return self._sp.encode(text, out_type=int)

    def encode_batch(self, texts: list[str], num_threads: int = 1) -> list[np.ndarray]:
        """Token ids (int32 arrays) of each text, as `encode` gives them: word by word when allowed, else in one call."""
        if self._words is not None:
            return self._words.encode_batch(texts, num_threads)
        return self.encode_batch_reference(texts, num_threads)

    def encode_batch_reference(self, texts: list[str], num_threads: int = 1) -> list[np.ndarray]:
        """Token ids (int32 arrays) of each text by sentencepiece's own batch encode: the word path's reference."""
        return self._sp.encode(texts, out_type="numpy", num_threads=num_threads)

    def decode(self, ids: Sequence[int] | np.ndarray) -> str:
        """The text of token ids (a list or a numpy array, e.g. from the token store)."""
        return self._sp.decode(ids.tolist() if isinstance(ids, np.ndarray) else list(ids))
