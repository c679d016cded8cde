"""N-gram hashing and counting: each n-gram becomes a 64-bit polynomial hash, so a 10 MB document
costs a few arrays of integers instead of millions of Python strings. Collisions are possible in
principle and negligible in practice (a fixed odd base, 2^64 values). Words are hashed the same way
(`words.hash_words`), so word n-grams and lexicon lookups work on those hashes."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from data_tools.filters import kernels

HASH_BASE = 0x100000001B3  # odd, so it has an inverse modulo 2**64
HASH_INVERSE = pow(HASH_BASE, -1, 2**64)
# As numpy scalars: numba's dispatcher types a Python int beyond 2**63 on its slow path, 40 µs a call.
_BASE, _INVERSE = np.uint64(HASH_BASE), np.uint64(HASH_INVERSE)
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


def char_ids(text: str) -> np.ndarray:
    """The code points of `text` as an array (one entry per character)."""
    return np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)


def word_ids(words: list[str]) -> np.ndarray:
    """`words` as integer ids, equal words getting equal ids."""
    vocabulary = {word: index for index, word in enumerate(dict.fromkeys(words))}  # first occurrence order
    return np.fromiter(map(vocabulary.__getitem__, words), dtype=np.uint64, count=len(words))


def ngram_hashes(ids: np.ndarray, n: int) -> np.ndarray:
    """One hash per window of `n` consecutive ids, in order (empty when there are fewer than `n`)."""
    return kernels.ngram_hashes(ids, n, _BASE, _INVERSE)


class Repetition(NamedTuple):
    """How a sequence's n-grams repeat: how many there are, how many are distinct, and how often each one
    that occurs more than once occurs."""

    total: int
    distinct: int
    repeated_counts: np.ndarray


def ngram_repetition(ids: np.ndarray, n: int) -> Repetition:
    """The repetition of the `n`-grams of `ids`."""
    hashes = ngram_hashes(ids, n)
    distinct, repeated_counts = kernels.repeated_runs(np.sort(hashes))
    return Repetition(len(hashes), distinct, repeated_counts)
