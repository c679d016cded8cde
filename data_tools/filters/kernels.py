"""Per-document loops compiled by numba: passes over every character of a document that Python would make
one object per character or word for, or numpy a dozen whole-array operations, each a trip through memory.

Each kernel is a plain loop over arrays; its callers (`normalize`, `words`, `ngrams`, `quality`) own the
meaning, and the tests compare them with references written in plain Python. Compiled code is cached on
disk beside this file, so a process pays a load (about 0.3 s, once), not a compilation.
"""

from __future__ import annotations

import numba
import numpy as np

from data_tools.filters.characters import INVISIBLE, LINE_BREAK, SPACE, SPECIAL, UNSPACED


@numba.njit(cache=True)
def word_hashes(code_points: np.ndarray, classes: np.ndarray, base: int) -> tuple[np.ndarray, np.ndarray]:
    """Each word's polynomial hash (sum of (code point + 1) * base**position) and length, in order.

    A piece starts at a character that is not a space when the one before is a space or either is of an
    unspaced script; its word runs from its first to its last character that is not special.
    """
    hashes = np.empty(len(code_points), dtype=np.uint64)
    lengths = np.empty(len(code_points), dtype=np.int64)
    words, start, end = 0, -1, -1
    one, multiplier = np.uint64(1), np.uint64(base)
    running, power, word_hash = np.uint64(0), np.uint64(1), np.uint64(0)
    previous = SPACE
    for position in range(len(code_points)):
        code = code_points[position]
        kind = classes[code]
        if not kind & SPACE and (previous & SPACE or (kind | previous) & UNSPACED):
            if start >= 0:
                hashes[words], lengths[words] = word_hash, end - start
                words += 1
            start = -1
        previous = kind
        if start < 0 and kind & SPECIAL:
            continue
        if start < 0:
            start, running, power = position, np.uint64(0), one
        running += (np.uint64(code) + one) * power
        power *= multiplier
        if not kind & SPECIAL:
            word_hash, end = running, position + 1
    if start >= 0:
        hashes[words], lengths[words] = word_hash, end - start
        words += 1
    return hashes[:words], lengths[:words]


@numba.njit(cache=True)
def ngram_hashes(ids: np.ndarray, n: int, base: int, inverse: int) -> np.ndarray:
    """The polynomial hash of every window of `n` consecutive ids, rolled from one window to the next
    (`inverse` is base's inverse modulo 2**64, so dropping the first id is a subtraction and a product)."""
    windows = len(ids) - n + 1
    if windows <= 0:
        return np.empty(0, dtype=np.uint64)
    hashes = np.empty(windows, dtype=np.uint64)
    one, multiplier, divider = np.uint64(1), np.uint64(base), np.uint64(inverse)
    value, power = np.uint64(0), one
    for position in range(n):
        value += (np.uint64(ids[position]) + one) * power
        power *= multiplier
    top = power * divider  # base**(n - 1)
    hashes[0] = value
    for position in range(1, windows):
        dropped, added = np.uint64(ids[position - 1]) + one, np.uint64(ids[position + n - 1]) + one
        value = (value - dropped) * divider + added * top
        hashes[position] = value
    return hashes


@numba.njit(cache=True)
def repeated_runs(ordered: np.ndarray) -> tuple[int, np.ndarray]:
    """For sorted values: how many distinct values there are, and the length of every run longer than one."""
    repeats = np.empty(len(ordered) // 2, dtype=np.int64)
    distinct, repeated, run = 0, 0, 0
    for position in range(len(ordered)):
        if position and ordered[position] != ordered[position - 1]:
            distinct += 1
            if run > 1:
                repeats[repeated] = run
                repeated += 1
            run = 0
        run += 1
    if run:
        distinct += 1
        if run > 1:
            repeats[repeated] = run
            repeated += 1
    return distinct, repeats[:repeated]


@numba.njit(cache=True)
def break_lines(code_points: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """Line breaks (CR LF as one) become "\\n" and invisible characters go."""
    kept = np.empty(len(code_points), dtype=np.uint32)
    length, carriage_return = 0, False
    for code in code_points:
        if carriage_return and code == 10:  # the "\n" of a CR LF, already written
            carriage_return = False
            continue
        carriage_return = code == 13
        kind = classes[code]
        if kind & LINE_BREAK:
            kept[length] = 10
            length += 1
        elif not kind & INVISIBLE:
            kept[length] = code
            length += 1
    return kept[:length]


@numba.njit(cache=True)
def collapse_whitespace(code_points: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """Runs of whitespace within a line become one space, lines lose the spaces at both ends, runs of
    more than one blank line become one, and the text loses the whitespace at both ends."""
    kept = np.empty(len(code_points), dtype=np.uint32)
    length, space, newlines = 0, False, 0
    for code in code_points:
        if code == 10:
            newlines += 1
            space = False
        elif classes[code] & SPACE:
            space = True  # written before the next character, unless a line break comes first
        else:
            if length and newlines:  # the spaces at both ends of the lines go with the breaks
                for _ in range(min(newlines, 2)):
                    kept[length] = 10
                    length += 1
            elif length and space:
                kept[length] = 32
                length += 1
            kept[length] = code
            length += 1
            space, newlines = False, 0
    return kept[:length]


@numba.njit(cache=True)
def count_known(hashes: np.ndarray, known: np.ndarray, low_bits: np.ndarray) -> int:
    """How many of `hashes` are in the sorted array `known`. `low_bits`, a bitmap of the known hashes' low bits
    (a power of two long), rules out most of the others without a binary search."""
    found, mask = 0, np.uint64(len(low_bits) - 1)
    for value in hashes:
        if low_bits[value & mask]:
            position = np.searchsorted(known, value)
            found += position < len(known) and known[position] == value
    return found
