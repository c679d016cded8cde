"""Word-level BPE encoding: each distinct word encoded once by sentencepiece, ids identical to its whole-text encode.

sentencepiece's BPE merges two adjacent symbols only when the merged string is a piece of the
vocabulary, and merges by piece score (ties: leftmost), never by anything outside the pair. If no
piece has its whitespace marker "▁" after a non-"▁" character (true of every model
`roots-data train-tokenizer` writes: "▁" only leads a piece, or the piece is all "▁"), no merge
ever joins a non-space character to a following space, so the text splits there into "words"
(a run of spaces, then a run of non-spaces) that encode independently: the ids of the text are the
ids of its words, concatenated. `WordEncoder` splits each text so, encodes the distinct words not
seen before in one sentencepiece batch, keeps their ids in a cache shared by later batches, and
gathers every text's ids with numpy. Unigram models do not qualify: their Viterbi search sums
float32 scores along the whole text, and a unigram model trained by `train-tokenizer` was seen to
encode a real English document differently word by word. Other models keep sentencepiece alone.
"""

from __future__ import annotations

import itertools
import re

import numpy as np
import sentencepiece as spm
from sentencepiece import sentencepiece_model_pb2 as model_pb2

SPACE, MARKER = " ", "\u2581"  # sentencepiece writes a space as its marker "▁"; a "▁" in the text is one too
_WORDS = re.compile(f"[{SPACE}{MARKER}]+[^{SPACE}{MARKER}]*|[^{SPACE}{MARKER}]+")
_SPACE_WORDS = re.compile(f"{SPACE}*[^{SPACE}]+|{SPACE}+")  # the same cuts for a text without "▁", a third faster
_PIECE_WITHIN_A_WORD = re.compile(f"{MARKER}*[^{MARKER}]*")
_ATOMIC = (model_pb2.ModelProto.SentencePiece.CONTROL, model_pb2.ModelProto.SentencePiece.UNKNOWN,
           model_pb2.ModelProto.SentencePiece.BYTE)  # never matched against the text's characters
DEFAULT_MAX_CACHED_WORDS = 1 << 20  # about 100 MB of dict and strings
DEFAULT_MAX_CACHED_TOKENS = 1 << 24  # 64 MiB of int32 ids (long words: CJK runs, URLs)


def split_words(text: str) -> list[str]:
    """`text` cut before every space (or "▁") that follows another character: the cuts no piece can cross."""
    return (_WORDS if MARKER in text else _SPACE_WORDS).findall(text)


def word_path_allowed(proto: model_pb2.ModelProto) -> bool:
    """Whether the model's encode of a text is provably its words' encodes concatenated (BPE, identity, "▁" leading)."""
    normalizer = proto.normalizer_spec
    return (
        proto.trainer_spec.model_type == model_pb2.TrainerSpec.BPE
        and not proto.trainer_spec.treat_whitespace_as_suffix
        and normalizer.name == "identity"
        and not normalizer.precompiled_charsmap
        and not normalizer.add_dummy_prefix
        and not normalizer.remove_extra_whitespaces
        and normalizer.escape_whitespaces
        and all(_PIECE_WITHIN_A_WORD.fullmatch(piece.piece) for piece in proto.pieces if piece.type not in _ATOMIC)
    )


class WordEncoder:
    """Batch encoder for a `word_path_allowed` model: sentencepiece's ids, each distinct word encoded once."""

    def __init__(self, processor: spm.SentencePieceProcessor, max_cached_words: int = DEFAULT_MAX_CACHED_WORDS,
                 max_cached_tokens: int = DEFAULT_MAX_CACHED_TOKENS) -> None:
        """An empty cache over `processor`, started over by the first batch that finds it over either bound."""
        self._processor = processor
        self._max_cached_words, self._max_cached_tokens = max_cached_words, max_cached_tokens
        self._clear()

    def _clear(self) -> None:
        """Forget every cached word (bounds memory on corpora with endless distinct words)."""
        self._index: dict[str, int] = {}
        self._starts = np.zeros(1024, dtype=np.int64)  # per cached word: where its ids start in _ids
        self._lengths = np.zeros(1024, dtype=np.int64)
        self._ids = np.zeros(1 << 16, dtype=np.int32)
        self._used = 0  # ids held in _ids

    def encode_batch(self, texts: list[str], num_threads: int = 1) -> list[np.ndarray]:
        """Each text's int32 token ids, as sentencepiece's `encode(texts, out_type="numpy")` gives them."""
        if not texts:
            return []
        if len(self._index) > self._max_cached_words or self._used > self._max_cached_tokens:
            self._clear()
        per_text = list(map(split_words, texts))
        words = list(itertools.chain.from_iterable(per_text))
        rows = self._rows(words)
        unseen = np.flatnonzero(rows < 0)
        if unseen.size:
            unseen_words = [words[i] for i in unseen.tolist()]
            self._add(list(dict.fromkeys(unseen_words)), num_threads)
            rows[unseen] = self._rows(unseen_words)
        lengths = self._lengths[rows]
        ends = np.cumsum(lengths)
        sources = np.repeat(self._starts[rows] - (ends - lengths), lengths) + np.arange(ends[-1] if len(ends) else 0)
        word_bounds = np.cumsum(np.fromiter(map(len, per_text), dtype=np.int64, count=len(texts)))
        token_bounds = np.concatenate(([0], ends))[word_bounds[:-1]]
        return np.split(self._ids[sources], token_bounds)

    def _rows(self, words: list[str]) -> np.ndarray:
        """Each word's row in the cache, -1 for a word not in it."""
        return np.fromiter(map(self._index.get, words, itertools.repeat(-1)), dtype=np.int64, count=len(words))

    def _add(self, new: list[str], num_threads: int) -> None:
        """Encode the `new` words in one sentencepiece batch and cache their ids."""
        encoded = self._processor.encode(new, out_type=int, num_threads=num_threads)  # lists: cheaper than arrays
        lengths = np.fromiter(map(len, encoded), dtype=np.int64, count=len(encoded))
        added = int(lengths.sum())
        first = len(self._index)
        self._index.update(zip(new, range(first, first + len(new))))
        self._starts = _grown(self._starts, len(self._index))
        self._lengths = _grown(self._lengths, len(self._index))
        self._ids = _grown(self._ids, self._used + added)
        self._lengths[first:len(self._index)] = lengths
        self._starts[first:len(self._index)] = self._used + np.cumsum(lengths) - lengths
        self._ids[self._used:self._used + added] = np.fromiter(itertools.chain.from_iterable(encoded), np.int32, added)
        self._used += added


def _grown(array: np.ndarray, size: int) -> np.ndarray:
    """`array`, or a copy at least twice as long if it holds fewer than `size` items."""
    if size <= len(array):
        return array
    bigger = np.zeros(max(size, 2 * len(array)), dtype=array.dtype)
    bigger[:len(array)] = array
    return bigger
