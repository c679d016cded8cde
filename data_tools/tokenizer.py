"""The tokenizer: train a lossless sentencepiece model on document shards, and load it back.

Lossless means decode(encode(text)) == text for any text: identity normalization, no dummy
prefix, whitespace kept as is, and byte fallback for characters outside the vocabulary. (One
exception is sentencepiece's own: U+2581 "▁", its whitespace marker, decodes as a space.)
Special ids are fixed, whatever the corpus: pad=0, unk=1, eod=2 (sentencepiece's eos, the
end-of-document token), mask=3, cls=4, sep=5; there is no bos.
"""

from __future__ import annotations

import hashlib
import io
import os
import random
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import sentencepiece as spm
from sentencepiece import sentencepiece_model_pb2 as model_pb2

from data_tools.atomic import write_bytes_atomic
from data_tools.errors import DataToolsError
from data_tools.shards import iter_batches, list_shards

SPECIAL_TOKENS: dict[str, int] = {"pad": 0, "unk": 1, "eod": 2, "mask": 3, "cls": 4, "sep": 5}
_USER_DEFINED_SYMBOLS = ("<mask>", "<cls>", "<sep>")
MODEL_TYPES = ("bpe", "unigram")
MAX_SENTENCE_LENGTH = 4192  # bytes; sentencepiece's own default
_MIN_VOCAB_SIZE = len(SPECIAL_TOKENS) + 256 + 1  # specials + the 256 byte-fallback pieces + one more


def sentence_iterator(
    docs_dir: Path, max_sentences: int, max_sentence_length: int = MAX_SENTENCE_LENGTH, seed: int = 0
) -> Iterator[str]:
    """Yield a deterministic sample of at most `max_sentences` lines from the shards in `docs_dir`.

    Documents are split into lines; blank lines are dropped and longer lines are cut into pieces
    of at most `max_sentence_length` UTF-8 bytes. When there are more lines than
    `max_sentences`, a seeded reservoir sample (bounded memory) is kept, yielded in corpus order.
    """
    if max_sentence_length < 4:
        raise DataToolsError(f"max sentence length must be at least 4 bytes (one character), got {max_sentence_length}")
    reservoir: list[tuple[int, str]] = []
    rng = random.Random(seed)
    for index, sentence in enumerate(_sentences(docs_dir, max_sentence_length)):
        if len(reservoir) < max_sentences:
            reservoir.append((index, sentence))
        else:
            slot = rng.randint(0, index)
            if slot < max_sentences:
                reservoir[slot] = (index, sentence)
    reservoir.sort()
    for _, sentence in reservoir:
        yield sentence


def _sentences(docs_dir: Path, max_sentence_length: int) -> Iterator[str]:
    """Every non-blank line of every document, in shard order, cut to `max_sentence_length` bytes."""
    for shard in list_shards(docs_dir):
        for batch in iter_batches(shard, ["text"]):
            for text in batch.column(0).to_pylist():
                for line in text.split("\n"):
                    if line.strip():
                        yield from _cut(line, max_sentence_length)


def _cut(line: str, max_bytes: int) -> Iterator[str]:
    """`line` in consecutive pieces of at most `max_bytes` UTF-8 bytes, cut between characters."""
    encoded = line.encode("utf-8")
    start = 0
    while start < len(encoded):
        end = min(start + max_bytes, len(encoded))
        while end < len(encoded) and encoded[end] & 0xC0 == 0x80:  # a continuation byte: back off
            end -= 1
        yield encoded[start:end].decode("utf-8")
        start = end


def train_tokenizer(
    docs_dir: Path,
    prefix: Path,
    vocab_size: int,
    model_type: str = "bpe",
    max_sentences: int = 2_000_000,
) -> Path:
    """Train a sentencepiece model on `docs_dir`; write PREFIX.model and PREFIX.vocab; return the .model path."""
    if model_type not in MODEL_TYPES:
        raise DataToolsError(f"model type {model_type!r} is not supported; use one of {', '.join(MODEL_TYPES)}")
    if vocab_size < _MIN_VOCAB_SIZE:
        raise DataToolsError(
            f"vocab size {vocab_size} is too small: at least {_MIN_VOCAB_SIZE} "
            f"({len(SPECIAL_TOKENS)} special tokens + 256 byte-fallback pieces + 1)"
        )
    if max_sentences < 1:
        raise DataToolsError(f"max sentences must be at least 1, got {max_sentences}")
    sentences = sentence_iterator(docs_dir, max_sentences)
    first = next(sentences, None)
    if first is None:
        raise DataToolsError(f"the document shards in {docs_dir} contain no text to train a tokenizer on")
    model = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=_chain(first, sentences),
            model_writer=model,
            vocab_size=vocab_size,
            model_type=model_type,
            byte_fallback=True,
            normalization_rule_name="identity",
            remove_extra_whitespaces=False,
            add_dummy_prefix=False,
            split_digits=True,
            allow_whitespace_only_pieces=True,
            max_sentence_length=MAX_SENTENCE_LENGTH,
            pad_id=SPECIAL_TOKENS["pad"],
            unk_id=SPECIAL_TOKENS["unk"],
            eos_id=SPECIAL_TOKENS["eod"],
            bos_id=-1,
            user_defined_symbols=list(_USER_DEFINED_SYMBOLS),
            num_threads=os.cpu_count() or 1,
            minloglevel=2,
        )
    except RuntimeError as exc:
        raise DataToolsError(
            f"sentencepiece could not train a {model_type} vocabulary of {vocab_size} on {docs_dir}: {exc} "
            "(a smaller --vocab-size or more text fixes 'Vocabulary size too high')"
        ) from exc
    model_path = Path(f"{prefix}.model")
    write_bytes_atomic(model_path, model.getvalue())
    write_bytes_atomic(Path(f"{prefix}.vocab"), _vocab_file(model.getvalue()))
    return model_path


def _chain(first: str, rest: Iterator[str]) -> Iterator[str]:
    """`first`, then everything in `rest`."""
    yield first
    yield from rest


def _vocab_file(model_bytes: bytes) -> bytes:
    """The `.vocab` text sentencepiece writes beside a model: one `piece<TAB>score` line per id."""
    proto = model_pb2.ModelProto()
    proto.ParseFromString(model_bytes)
    return "".join(f"{piece.piece}\t{piece.score:g}\n" for piece in proto.pieces).encode("utf-8")


class Tokenizer:
    """A trained sentencepiece model with the fixed special ids, and its fingerprint."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        """Load the `.model` file at `path`; DataToolsError if unreadable or its special ids differ."""
        self.path = Path(path)
        try:
            model_bytes = self.path.read_bytes()
        except OSError as exc:
            raise DataToolsError(
                f"cannot read tokenizer model {self.path}: {exc.strerror} "
                "(expected the PREFIX.model written by `roots-data train-tokenizer`)"
            ) from exc
        self._sp = spm.SentencePieceProcessor()
        try:
            self._sp.LoadFromSerializedProto(model_bytes)
        except RuntimeError as exc:
            raise DataToolsError(f"{self.path} is not a sentencepiece model: {exc}") from exc
        self.fingerprint = hashlib.sha256(model_bytes).hexdigest()
        found = {
            "pad": self._sp.pad_id(),
            "unk": self._sp.unk_id(),
            "eod": self._sp.eos_id(),
            **{name: self._sp.piece_to_id(f"<{name}>") for name in ("mask", "cls", "sep")},
        }
        if found != SPECIAL_TOKENS:
            raise DataToolsError(
                f"tokenizer {self.path} has special ids {found}; roots_scale needs {SPECIAL_TOKENS} "
                "(train it with `roots-data train-tokenizer`)"
            )
        self.special_tokens = dict(SPECIAL_TOKENS)

    @property
    def vocab_size(self) -> int:
        """Number of ids (every id is < vocab_size)."""
        return self._sp.get_piece_size()

    def encode(self, text: str) -> list[int]:
        """Token ids of `text` (no eod appended)."""
        return self._sp.encode(text, out_type=int)

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        """Token ids of each text, in one call (faster than encoding one by one)."""
        return self._sp.encode(texts, out_type=int)

    def decode(self, ids: Sequence[int] | np.ndarray) -> str:
        """The text of token ids (a list or a numpy array, e.g. from the token store)."""
        return self._sp.decode(ids.tolist() if isinstance(ids, np.ndarray) else list(ids))
