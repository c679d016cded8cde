"""N-gram counting in numpy: each n-gram becomes a 64-bit polynomial hash, so a 10 MB document
costs a few arrays of integers instead of millions of Python strings. Collisions are possible in
principle and negligible in practice (n ≤ 10 symbols, a fixed odd multiplier, 2^64 values)."""

from __future__ import annotations

import numpy as np

_MULTIPLIER = np.uint64(0x9E3779B97F4A7C15)


def char_ids(text: str) -> np.ndarray:
    """The code points of `text` as an array (one entry per character)."""
    return np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)


def word_ids(words: list[str]) -> np.ndarray:
    """`words` as integer ids, equal words getting equal ids."""
    vocabulary = {word: index for index, word in enumerate(dict.fromkeys(words))}  # first occurrence order
    return np.fromiter(map(vocabulary.__getitem__, words), dtype=np.uint64, count=len(words))


def ngram_hashes(ids: np.ndarray, n: int) -> np.ndarray:
    """One hash per window of `n` consecutive ids, in order (empty when there are fewer than `n`)."""
    windows = len(ids) - n + 1
    if windows <= 0:
        return np.empty(0, dtype=np.uint64)
    ids = ids.astype(np.uint64) + np.uint64(1)
    hashes = np.zeros(windows, dtype=np.uint64)
    for offset in range(n):
        hashes = hashes * _MULTIPLIER + ids[offset:offset + windows]
    return hashes


def ngram_counts(ids: np.ndarray, n: int) -> np.ndarray:
    """How often each distinct n-gram of `ids` occurs (one count per distinct n-gram)."""
    return np.unique(ngram_hashes(ids, n), return_counts=True)[1]
