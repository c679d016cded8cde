"""BERT samples: masked-language-model inputs over document chunks, with optional sentence-order prediction.

The index (built with vectorized numpy, cached like the GPT one): each epoch walks the documents in a
seeded shuffled order and cuts each into chunks of `chunk_tokens` = seq_length - 3 tokens
(seq_length - 2 without sentence order: one [SEP] fewer); a document's final, shorter chunk is
kept when it has at least MIN_CHUNK_TOKENS tokens, so shorter documents give no sample. The chunks of
as many whole epochs as `num_samples` takes are shuffled within each epoch into serving order
(order.py: a longer run sees the same samples first): `sample_index[i]` = (document, start, length).

Sample i is `[CLS] A [SEP] B [SEP] [PAD]…` (sentence order: the chunk cut in two at a sentence end
in its middle half when there is one, else at a random point there, and swapped half of the time)
or `[CLS] chunk [SEP] [PAD]…`. Of its non-special tokens, mask_prob (15 %) are chosen, as single
tokens or as whole words; of those 80 % become [MASK], 10 % a random non-special id, 10 % stay.
Every random choice comes from a generator seeded by (seed, i) alone, so a sample is the same on
every rank, worker and restart. Words and sentence ends come from the store's sentencepiece
model: a word is a piece beginning with "▁" (or following a newline, a tab or a special token) and
the pieces after it up to the next such piece.
"""

from __future__ import annotations

import functools
import math
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
from sentencepiece.sentencepiece_model_pb2 import ModelProto

from roots_core.tokenizer import fingerprint_of, model_proto, read_model_bytes

from roots_scale.data.gpt_dataset import DatasetError, documents_fingerprint
from roots_scale.data.index_cache import cached_arrays
from roots_scale.data.order import block_shuffle

if TYPE_CHECKING:
    from roots_core.token_store import TokenStore

MIN_CHUNK_TOKENS = 8  # a document's last chunk, if shorter, is dropped; so is any shorter document
MASK_FRACTION = 0.8  # of the chosen tokens: replaced by [MASK] ...
RANDOM_FRACTION = 0.1  # ... by a random non-special id; the rest keep their token
_SAMPLE_STREAM = 1  # last seed word of the per-sample generators: never equal to the index seed's
_WORD_MARKER = "\u2581"  # sentencepiece's whitespace marker "▁"
_SENTENCE_ENDS = (".", "!", "?")
_LINE_WHITESPACE = ("\n", "\r", "\t")  # byte-fallback whitespace: the next piece has no "▁" yet starts a word


class Vocabulary(NamedTuple):
    """Per-id flags from the sentencepiece model, indexed by token id."""

    word_start: np.ndarray  # the piece begins a word ("▁…")
    breaks_after: np.ndarray  # the piece ends in a newline or tab, so the next piece begins a word
    sentence_end: np.ndarray  # the piece ends in '.', '!', '?' or holds a newline


class BERTDataset:
    """`num_samples` MLM samples of `seq_length` tokens (dicts of numpy arrays) from `documents` of `store`."""

    def __init__(self, store: TokenStore, seq_length: int, num_samples: int, seed: int,
                 documents: np.ndarray | None = None, cache_dir: str | Path | None = None,
                 mask_prob: float = 0.15, whole_word_masking: bool = False, sentence_order: bool = True,
                 max_epochs: int | None = None) -> None:
        if not 0 < mask_prob < 1:
            raise DatasetError(f"mask_prob must be between 0 and 1 (exclusive), got {mask_prob}")
        self.store = store
        self.seq_length = seq_length
        self.num_samples = num_samples
        self.seed = seed
        self.mask_prob = mask_prob
        self.whole_word_masking = whole_word_masking
        self.sentence_order = sentence_order
        self.chunk_tokens = seq_length - (3 if sentence_order else 2)
        if self.chunk_tokens < MIN_CHUNK_TOKENS:
            raise DatasetError(f"seq_length {seq_length} leaves {self.chunk_tokens} tokens per BERT sample after "
                               f"[CLS]/[SEP]; at least {MIN_CHUNK_TOKENS} are needed")
        specials = store.special_tokens
        self.pad, self.cls, self.sep, self.mask = (specials[name] for name in ("pad", "cls", "sep", "mask"))
        self.first_regular_id = max(specials.values()) + 1
        self.vocabulary = _store_vocabulary(store, whole_word_masking, sentence_order)

        documents = np.arange(len(store), dtype=np.int64) if documents is None else np.asarray(documents, np.int64)
        lengths = store.document_lengths[documents]
        full, rest = np.divmod(lengths, self.chunk_tokens)
        chunks = full + (rest >= MIN_CHUNK_TOKENS)
        chunks_per_epoch = int(chunks.sum())
        if chunks_per_epoch == 0:
            raise DatasetError(f"none of the {len(documents)} documents of {store.directory} given to the BERT "
                               f"dataset has {MIN_CHUNK_TOKENS} tokens or more")
        self.num_epochs = math.ceil(num_samples / chunks_per_epoch)
        if max_epochs is not None and self.num_epochs > max_epochs:
            raise DatasetError(
                f"{num_samples} BERT samples need {self.num_epochs} epochs of {chunks_per_epoch} chunks, but "
                f"data.num_epochs = {max_epochs}; add data, lower train.iters, or raise data.num_epochs")
        description = {"kind": "bert", "store": store.fingerprint, "documents": documents_fingerprint(documents),
                       "seq_length": seq_length, "seed": seed, "num_epochs": self.num_epochs,
                       "chunk_tokens": self.chunk_tokens, "min_chunk_tokens": MIN_CHUNK_TOKENS, "order": "epochs"}

        def build() -> dict[str, np.ndarray]:
            return {"sample_index": self._build_index(documents, lengths, chunks, chunks_per_epoch)}

        arrays = cached_arrays(cache_dir, description, build) if cache_dir is not None else build()
        self.sample_index = arrays["sample_index"]

    def _build_index(self, documents: np.ndarray, lengths: np.ndarray, chunks: np.ndarray,
                     chunks_per_epoch: int) -> np.ndarray:
        """[whole epochs of chunks, 3] of (document, start, length) in serving order."""
        rng = np.random.default_rng(self.seed)
        order = np.concatenate([rng.permutation(len(documents)) for _ in range(self.num_epochs)])
        per_document = chunks[order]
        ends = np.cumsum(per_document)
        positions = np.repeat(order, per_document)
        chunk_numbers = np.arange(len(positions)) - np.repeat(ends - per_document, per_document)
        starts = chunk_numbers * self.chunk_tokens
        sizes = np.minimum(self.chunk_tokens, lengths[positions] - starts)
        index = np.stack([documents[positions], starts, sizes], axis=1)
        return index[block_shuffle(len(index), chunks_per_epoch, self.seed)]

    def __len__(self) -> int:
        """Number of samples."""
        return self.num_samples

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        """Sample `index`: a pure function of (store, documents, parameters, seed, index)."""
        if not 0 <= index < self.num_samples:
            raise IndexError(f"sample {index} out of range [0, {self.num_samples})")
        document, start, length = (int(value) for value in self.sample_index[index])
        tokens = self.store[document][start: start + length]
        rng = np.random.default_rng([self.seed, index, _SAMPLE_STREAM])
        sample: dict[str, np.ndarray] = {}
        if self.sentence_order:
            cut = self._split_point(tokens, rng)
            swapped = bool(rng.random() < 0.5)
            segments = (tokens[cut:], tokens[:cut]) if swapped else (tokens[:cut], tokens[cut:])
            sample["sentence_order_label"] = np.array(int(swapped), dtype=np.int64)
        else:
            segments = (tokens,)
        input_ids = np.full(self.seq_length, self.pad, dtype=np.int64)
        token_type_ids = np.zeros(self.seq_length, dtype=np.int64)
        input_ids[0] = self.cls
        special_positions = [0]
        position = 1
        for type_id, segment in enumerate(segments):
            input_ids[position: position + len(segment)] = segment
            token_type_ids[position: position + len(segment) + 1] = type_id
            position += len(segment)
            input_ids[position] = self.sep
            special_positions.append(position)
            position += 1
        labels = self._mask(input_ids, position, special_positions, rng)
        attention_mask = np.zeros(self.seq_length, dtype=np.int64)
        attention_mask[:position] = 1
        return {"input_ids": input_ids, "labels": labels, "loss_mask": (labels >= 0).astype(np.float32),
                "attention_mask": attention_mask, "token_type_ids": token_type_ids, **sample}

    def _split_point(self, tokens: np.ndarray, rng: np.random.Generator) -> int:
        """Length of segment A: after a sentence end in the chunk's middle half if any, else random there."""
        low, high = max(1, len(tokens) // 4), min(len(tokens) - 1, 3 * len(tokens) // 4)
        candidates = np.flatnonzero(self.vocabulary.sentence_end[tokens[low - 1: high]]) + low
        if len(candidates):
            return int(candidates[rng.integers(len(candidates))])
        return int(rng.integers(low, high + 1))

    def _mask(self, input_ids: np.ndarray, num_real: int, special_positions: list[int],
              rng: np.random.Generator) -> np.ndarray:
        """Choose and corrupt tokens of `input_ids` in place; return the labels (original id, -1 elsewhere)."""
        real = input_ids[:num_real]
        special = np.zeros(num_real, dtype=bool)
        special[special_positions] = True
        if self.whole_word_masking:
            starts = self.vocabulary.word_start[real] | special
            starts[1:] |= self.vocabulary.breaks_after[real[:-1]] | special[:-1]
        else:
            starts = np.ones(num_real, dtype=bool)
        words = np.cumsum(starts) - 1  # every special token is a word of its own
        candidates = rng.permutation(words[starts & ~special])
        covered = np.cumsum(np.bincount(words)[candidates])
        count = int(np.argmin(np.abs(covered - self.mask_prob * (num_real - len(special_positions))))) + 1
        chosen_words = np.zeros(words[-1] + 1, dtype=bool)
        chosen_words[candidates[:count]] = True
        chosen = np.flatnonzero(chosen_words[words])
        labels = np.full(self.seq_length, -1, dtype=np.int64)
        labels[chosen] = input_ids[chosen]
        action = rng.random(len(chosen))
        random_ids = rng.integers(self.first_regular_id, self.store.vocab_size, len(chosen))
        input_ids[chosen] = np.where(action < MASK_FRACTION, self.mask,
                                     np.where(action < MASK_FRACTION + RANDOM_FRACTION, random_ids, labels[chosen]))
        return labels


def _store_vocabulary(store: TokenStore, whole_word_masking: bool, sentence_order: bool) -> Vocabulary:
    """The flags of the store's tokenizer; with no model file all False, an error for whole-word masking."""
    tokenizer = store.manifest["tokenizer"]
    path = Path(tokenizer["path"])
    if path.is_file():
        return _vocabulary(str(path), tokenizer["fingerprint"], store.vocab_size)
    message = f"the tokenizer model {path} of store {store.directory} (manifest tokenizer.path) is not a file"
    if whole_word_masking:
        raise DatasetError(f"{message}; whole-word masking needs it to find word starts")
    if sentence_order:
        warnings.warn(f"{message}: sentence-order segments are cut at random points, not at sentence ends",
                      stacklevel=3)
    empty = np.zeros(store.vocab_size, dtype=bool)
    return Vocabulary(empty, empty, empty)


@functools.lru_cache(maxsize=8)
def _vocabulary(path: str, fingerprint: str, vocab_size: int) -> Vocabulary:
    """Word-start, whitespace-end and sentence-end flags of every piece of the sentencepiece model at `path`."""
    model_bytes = read_model_bytes(path)
    if fingerprint_of(model_bytes) != fingerprint:
        raise DatasetError(f"tokenizer model {path} is not the one the store was tokenized with "
                           f"(fingerprint {fingerprint}); restore that model or retokenize")
    proto = model_proto(model_bytes)
    if len(proto.pieces) != vocab_size:
        raise DatasetError(f"tokenizer model {path} has {len(proto.pieces)} pieces; the store says {vocab_size}")
    texts = [_piece_text(piece) for piece in proto.pieces]
    return Vocabulary(
        np.array([text.startswith(_WORD_MARKER) for text in texts], dtype=bool),
        np.array([text[-1:] in _LINE_WHITESPACE for text in texts], dtype=bool),
        np.array([text.endswith(_SENTENCE_ENDS) or "\n" in text for text in texts], dtype=bool),
    )


def _piece_text(piece: ModelProto.SentencePiece) -> str:
    """What a piece stands for: its string, or for a byte-fallback piece "<0xNN>" that byte's character."""
    if piece.type == ModelProto.SentencePiece.BYTE:
        return chr(int(piece.piece[3:5], 16))
    if piece.type != ModelProto.SentencePiece.NORMAL:
        return ""  # control, unknown and user-defined (<mask>, <cls>, <sep>) pieces
    return piece.piece
