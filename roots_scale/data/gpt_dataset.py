"""GPT samples: fixed windows of `seq_length + 1` tokens over documents joined by end-of-document.

Megatron's three indices, built with vectorized numpy (no C++ helper to compile):
- document index: the order documents are concatenated in, one shuffled pass per epoch;
- sample index: where each sample starts (position in the document index, offset in that document);
- shuffle index: the order samples are served in, shuffled within blocks of about an epoch (order.py).
Sample i is a pure function of (store, documents, seq_length, seed), identical on every rank and every
restart, and for every `num_samples` above i: a longer run sees the same samples first. With a cache
directory the indices are built once and memory-mapped.
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from roots_scale.data.errors import DatasetError
from roots_scale.data.index_cache import cached_arrays
from roots_scale.data.order import block_shuffle, whole_blocks

if TYPE_CHECKING:
    from roots_core.token_store import TokenStore


class GPTDataset:
    """`num_samples` samples of `seq_length + 1` token ids (input = [:-1], labels = [1:]).

    `documents` (default: all) are the store documents this dataset draws from, e.g. one split.
    """

    def __init__(self, store: TokenStore, seq_length: int, num_samples: int, seed: int,
                 max_epochs: int | None = None, documents: np.ndarray | None = None,
                 cache_dir: str | Path | None = None) -> None:
        self.store = store
        self.seq_length = seq_length
        self.num_samples = num_samples
        self.eod = store.special_tokens["eod"]
        documents = np.arange(len(store), dtype=np.int64) if documents is None else np.asarray(documents, np.int64)
        if len(documents) == 0:
            raise DatasetError(f"no documents to draw GPT samples from (store {store.directory})")
        lengths = store.document_lengths[documents].astype(np.int64) + 1  # every document is followed by eod
        tokens_per_epoch = int(lengths.sum())
        self.num_epochs = math.ceil((num_samples * seq_length + 1) / tokens_per_epoch)
        if max_epochs is not None and self.num_epochs > max_epochs:
            raise DatasetError(
                f"{num_samples} samples of {seq_length} tokens need {self.num_epochs} epochs of "
                f"{tokens_per_epoch} tokens, but data.num_epochs = {max_epochs}; add data, "
                f"lower train.iters, or raise data.num_epochs")
        block = max(1, tokens_per_epoch // seq_length)  # about an epoch of samples
        built = whole_blocks(num_samples, block)
        built_epochs = math.ceil((built * seq_length + 1) / tokens_per_epoch)
        description = {"kind": "gpt", "store": store.fingerprint, "seq_length": seq_length,
                       "samples_built": built, "seed": seed, "num_epochs": built_epochs,
                       "documents": documents_fingerprint(documents), "order": "blocks"}

        def build() -> dict[str, np.ndarray]:
            return self._build_indices(documents, lengths, seed, built, block, built_epochs)

        arrays = cached_arrays(cache_dir, description, build) if cache_dir is not None else build()
        self.document_index = arrays["document_index"]
        self.sample_index = arrays["sample_index"]
        self.shuffle_index = arrays["shuffle_index"]

    def _build_indices(self, documents: np.ndarray, lengths: np.ndarray, seed: int, built: int, block: int,
                       epochs: int) -> dict[str, np.ndarray]:
        rng = np.random.default_rng(seed)
        order = np.concatenate([rng.permutation(len(documents)) for _ in range(epochs)])  # epoch by epoch
        return {
            "document_index": documents[order],
            "sample_index": self._build_sample_index(lengths[order], built),
            "shuffle_index": block_shuffle(built, block, seed + 1),
        }

    def _build_sample_index(self, stream_lengths: np.ndarray, count: int) -> np.ndarray:
        """[count, 2] of (position in document index, token offset) where each sample starts."""
        ends = np.cumsum(stream_lengths)
        starts = np.arange(count, dtype=np.int64) * self.seq_length
        positions = np.searchsorted(ends, starts, side="right")
        offsets = starts - (ends[positions] - stream_lengths[positions])
        return np.stack([positions, offsets], axis=1)

    def __len__(self) -> int:
        return self.num_samples

    def __getitem__(self, index: int) -> np.ndarray:
        if not 0 <= index < self.num_samples:
            raise IndexError(f"sample {index} out of range [0, {self.num_samples})")
        position, offset = self.sample_index[self.shuffle_index[index]]
        sample = np.empty(self.seq_length + 1, dtype=np.int64)
        filled = 0
        while filled < len(sample):
            document = self.store[int(self.document_index[position])]
            piece = document[offset: offset + len(sample) - filled]
            sample[filled: filled + len(piece)] = piece
            filled += len(piece)
            if filled < len(sample) and offset + len(piece) >= len(document):
                sample[filled] = self.eod
                filled += 1
            position += 1
            offset = 0
        return sample


def documents_fingerprint(documents: np.ndarray) -> str:
    """A short hash of a document subset, so each split gets its own cached index."""
    return hashlib.sha256(np.ascontiguousarray(documents).tobytes()).hexdigest()[:16]
