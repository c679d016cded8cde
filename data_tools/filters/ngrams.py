"""N-gram counting in numpy: each n-gram becomes a 64-bit polynomial hash, so a 10 MB document
costs a few arrays of integers instead of millions of Python strings. Collisions are possible in
principle and negligible in practice (a fixed odd base, 2^64 values). Words are hashed the same way
(`words.hash_words`), from the same prefix sums."""

from __future__ import annotations

import numpy as np

HASH_BASE = 0x100000001B3  # odd, so it has an inverse modulo 2**64
HASH_INVERSE = pow(HASH_BASE, -1, 2**64)
_powers_of: dict[int, np.ndarray] = {}


def powers(base: int, count: int) -> np.ndarray:
    """base**0 … base**(count - 1) modulo 2**64 (cached, grown by doubling)."""
    table = _powers_of.get(base)
    if table is None or len(table) < count:
        size = max(count, 2 * len(table) if table is not None else 1 << 16)
        table = np.full(size, base, dtype=np.uint64)
        table[0] = 1
        table = np.cumprod(table, dtype=np.uint64)  # unsigned arithmetic wraps modulo 2**64
        _powers_of[base] = table
    return table[:count]


def prefix_hashes(ids: np.ndarray) -> np.ndarray:
    """P[i] = sum of (ids[j] + 1) * HASH_BASE**j for j < i, so the hash of ids[a:b] is
    (P[b] - P[a]) * HASH_INVERSE**a: any run's hash in three operations."""
    prefix = np.zeros(len(ids) + 1, dtype=np.uint64)
    np.cumsum((ids.astype(np.uint64) + np.uint64(1)) * powers(HASH_BASE, len(ids)), out=prefix[1:])
    return prefix


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
    prefix = prefix_hashes(ids)
    return (prefix[n:] - prefix[:windows]) * powers(HASH_INVERSE, windows)


def ngram_counts(ids: np.ndarray, n: int) -> np.ndarray:
    """How often each distinct n-gram of `ids` occurs (one count per distinct n-gram)."""
    return np.unique(ngram_hashes(ids, n), return_counts=True)[1]
