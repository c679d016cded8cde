"""Text normalization, exact-duplicate hashes, MinHash signatures and LSH band keys, vectorized with numpy.

Dedup compares *normalized* text: Unicode NFKC, then casefolded, then every run of whitespace
collapsed to one space (leading and trailing whitespace dropped), so copies that differ only in
Unicode form, letter case or spacing count as the same text. A document's shingles are the word
n-grams of its normalized text (one shingle of the whole text when it has fewer than n words).
Each word is hashed with xxh3-64 and each shingle's hash is an order-sensitive mix of its words'
hashes, computed for every shingle of a batch of documents at once. The MinHash signature is the
minimum over shingles of `bands * rows` universal hashes (a*x + b) mod (2^61 - 1), computed exactly
in 64-bit arithmetic; each LSH band key mixes a band's `rows` values into one uint64. The (a, b)
pairs come from a fixed seed through splitmix64, not numpy's random generators (whose streams may
change between numpy versions), so every value here is a pure function of the text and the
parameters: the same in every process, on every machine, in every release.
"""

from __future__ import annotations

import itertools
import unicodedata
from collections.abc import Sequence

import numpy as np
import xxhash

from data_tools.errors import DataToolsError

MERSENNE_PRIME = (1 << 61) - 1
SEED = 0x5EED_DED0  # fixes the permutations; changing it changes every signature
_LOW64 = (1 << 64) - 1
_LOW32 = (1 << 32) - 1
_LOW29 = (1 << 29) - 1
_CHUNK_SHINGLES = 512  # shingles permuted at a time: the (shingles × permutations) blocks stay in cache


def normalize(text: str) -> str:
    """The text dedup compares: NFKC, casefolded, whitespace runs collapsed to single spaces, stripped."""
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def exact_hashes(normalized: Sequence[bytes]) -> np.ndarray:
    """xxh3-128 of each UTF-8 normalized text as (n, 2) uint64 (high, low): equal rows ⇔ equal texts."""
    digests = map(xxhash.xxh3_128_intdigest, normalized)
    return np.array([(d >> 64, d & _LOW64) for d in digests], dtype=np.uint64).reshape(len(normalized), 2)


def _mix(values: np.ndarray) -> np.ndarray:
    """splitmix64's finalizer: a bijective, well-avalanching scramble of uint64 values (wrapping)."""
    values = values ^ (values >> 30)
    values = values * 0xBF58476D1CE4E5B9
    values = values ^ (values >> 27)
    values = values * 0x94D049BB133111EB
    return values ^ (values >> 31)


def shingle_hashes(normalized: Sequence[bytes], shingle_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Hashes of every document's word shingles, concatenated, and offsets: document i owns [off[i], off[i+1]).

    Every document has at least one shingle: one of all its words (possibly none) when it has
    fewer than `shingle_size` words.
    """
    words = [text.split() for text in normalized]  # normalized UTF-8: the only whitespace is b" "
    counts = np.fromiter(map(len, words), np.int64, len(words))
    total_words = int(counts.sum())
    padded = np.zeros(total_words + shingle_size, dtype=np.uint64)  # room to read past the last word
    padded[:total_words] = np.fromiter(
        map(xxhash.xxh3_64_intdigest, itertools.chain.from_iterable(words)), np.uint64, total_words)
    shingles = np.maximum(counts - shingle_size + 1, 1)
    offsets = np.zeros(len(words) + 1, dtype=np.int64)
    np.cumsum(shingles, out=offsets[1:])
    document_start = np.repeat(offsets[:-1], shingles)
    first_word = np.repeat(np.cumsum(counts) - counts, shingles) + np.arange(offsets[-1]) - document_start
    words_in_shingle = np.repeat(np.minimum(counts, shingle_size), shingles)
    hashes = np.full(offsets[-1], SEED, dtype=np.uint64)
    for j in range(shingle_size):
        hashes = np.where(j < words_in_shingle, _mix(hashes ^ padded[first_word + j]), hashes)
    return hashes, offsets


def _mod_mersenne(values: np.ndarray) -> np.ndarray:
    """`values` mod 2^61 - 1, for any uint64 values."""
    folded = (values & MERSENNE_PRIME) + (values >> 61)  # < p + 8
    return np.minimum(folded, folded - MERSENNE_PRIME)  # the subtraction wraps to a huge value where folded < p


class MinHasher:
    """MinHash over word shingles with `bands` × `rows` permutations, and the LSH band keys of signatures."""

    def __init__(self, shingle_size: int = 5, bands: int = 14, rows: int = 8) -> None:
        for name, value in (("shingle size", shingle_size), ("bands", bands), ("rows", rows)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise DataToolsError(f"MinHash {name} {value!r} is invalid: it must be a whole number ≥ 1 "
                                     f"(defaults: shingle size 5, 14 bands × 8 rows)")
        self.shingle_size, self.bands, self.rows = shingle_size, bands, rows
        self.num_permutations = bands * rows
        counters = np.arange(2 * self.num_permutations, dtype=np.uint64)
        drawn = _mix(_mix(counters ^ np.uint64(SEED)))
        self.a = drawn[: self.num_permutations] % np.uint64(MERSENNE_PRIME - 1) + np.uint64(1)  # in [1, p)
        self.b = drawn[self.num_permutations:] % np.uint64(MERSENNE_PRIME)  # in [0, p)
        self._a_high, self._a_low, self._b = (self.a >> 32)[None, :], (self.a & _LOW32)[None, :], self.b[None, :]

    def parameters(self) -> dict[str, int]:
        """What defines the signatures (for cache keys)."""
        return {"shingle_size": self.shingle_size, "bands": self.bands, "rows": self.rows, "seed": SEED}

    def _permute(self, x: np.ndarray) -> np.ndarray:
        """(a*x + b) mod (2^61 - 1) for x < 2^61, as (len(x), permutations), exact via 32-bit halves, in place."""
        # a*x = high·2^64 + middle·2^32 + low; with 2^61 ≡ 1 (mod p): 2^64 ≡ 8 and
        # middle·2^32 ≡ (middle >> 29) + (middle mod 2^29)·2^32, every term below 2^61.
        x_high, x_low = (x >> 32)[:, None], (x & _LOW32)[:, None]  # x_high < 2^29, a_high < 2^29
        total = x_high * self._a_high  # < 2^58
        total <<= 3
        middle = x_high * self._a_low
        low = x_low * self._a_high
        middle += low  # < 2^62
        np.multiply(x_low, self._a_low, out=low)  # < 2^64
        scratch = low >> 61
        total += scratch
        low &= MERSENNE_PRIME
        total += low
        np.right_shift(middle, 29, out=scratch)
        total += scratch
        middle &= _LOW29
        middle <<= 32
        total += middle
        total += self._b  # six terms, four below 2^61: no overflow
        np.right_shift(total, 61, out=scratch)
        total &= MERSENNE_PRIME
        total += scratch  # < p + 8
        np.subtract(total, MERSENNE_PRIME, out=scratch)  # wraps to a huge value where total < p
        return np.minimum(total, scratch, out=total)

    def signatures(self, normalized: Sequence[bytes]) -> np.ndarray:
        """The MinHash signature of each UTF-8 normalized text, as (n, bands * rows) uint64."""
        hashes, offsets = shingle_hashes(normalized, self.shingle_size)
        x = _mod_mersenne(hashes)
        result = np.full((len(normalized), self.num_permutations), MERSENNE_PRIME, dtype=np.uint64)
        for start in range(0, len(x), _CHUNK_SHINGLES):
            stop = min(start + _CHUNK_SHINGLES, len(x))
            first, last = np.searchsorted(offsets, [start, stop - 1], side="right") - 1
            segments = np.maximum(offsets[first:last + 1], start) - start  # each document's rows in this chunk
            block = result[first:last + 1]
            np.minimum(block, np.minimum.reduceat(self._permute(x[start:stop]), segments, axis=0), out=block)
        return result

    def band_keys(self, signatures: np.ndarray) -> np.ndarray:
        """One uint64 per band of each signature, as (n, bands): equal keys ⇔ (almost surely) equal bands."""
        by_band = signatures.reshape(len(signatures), self.bands, self.rows)
        keys = np.full((len(signatures), self.bands), SEED, dtype=np.uint64)
        for row in range(self.rows):
            keys = _mix(keys ^ by_band[:, :, row])
        return keys
