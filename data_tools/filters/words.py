"""Words and special characters as ROOTS' quality filters see them, for every script.

ROOTS (BigScience data-preparation, `filtering.py`) splits a document on whitespace, lowercases
the pieces and strips "special characters" from both ends of each, dropping pieces that were
nothing else. Here a special character is anything that is not a letter or a combining mark
(Unicode categories L* and M*): punctuation, symbols (emoji included), digits, whitespace and
controls. That generalises ROOTS' hand-written set (string.punctuation, digits, whitespace, a list
of symbols, the emoji) to all of Unicode; unlike that list it never counts a letter (ROOTS' list
has a few CJK letters such as 一 and ン).

Scripts written without spaces (Han, Hiragana, Katakana) make every character a word of its own.
ROOTS tokenized Chinese with a sentencepiece model instead, which this package does not ship.
"""

from __future__ import annotations

import functools
import re
import sys
import unicodedata
from typing import NamedTuple

import numpy as np

from data_tools.filters.ngrams import HASH_BASE, HASH_INVERSE, char_ids, powers, prefix_hashes

_UNSPACED_RANGES = ((0x3040, 0x30FF), (0x3400, 0x4DBF), (0x4E00, 0x9FFF), (0xF900, 0xFAFF), (0x20000, 0x3134F))
_UNSPACED = "".join(f"{chr(first)}-{chr(last)}" for first, last in _UNSPACED_RANGES)
_HAS_UNSPACED = re.compile(f"[{_UNSPACED}]")
_PIECE = re.compile(f"[{_UNSPACED}]|[^\\s{_UNSPACED}]+")
_ASCII_SPECIAL = "".join(chr(code) for code in range(128) if not chr(code).isalpha())


class _SpecialTable(dict):
    """char -> is it special? Filled on first sight of each character (a document uses few)."""

    def __missing__(self, char: str) -> bool:
        special = unicodedata.category(char)[0] not in "LM"
        self[char] = special
        return special


SPECIAL = _SpecialTable()


# Planes 4-13 are unassigned and planes 15-16 private use: special, without asking unicodedata a million times.
_PLANES_WITH_LETTERS = (range(0x00000, 0x40000), range(0xE0000, 0xF0000))


@functools.cache
def _special_code_points() -> np.ndarray:
    """For every code point, whether it is special (built once per process, in about 0.1 s)."""
    table = np.ones(sys.maxunicode + 1, dtype=bool)
    for plane in _PLANES_WITH_LETTERS:
        table[plane.start:plane.stop] = [unicodedata.category(chr(code))[0] not in "LM" for code in plane]
    return table


@functools.cache
def _space_and_unspaced_code_points() -> tuple[np.ndarray, np.ndarray]:
    """For every code point, whether it is whitespace (str.isspace) and whether it is of an unspaced script."""
    space = np.zeros(sys.maxunicode + 1, dtype=bool)
    space[[code for code in range(0x3001) if chr(code).isspace()]] = True  # U+3000 is the last space
    unspaced = np.zeros(sys.maxunicode + 1, dtype=bool)
    for first, last in _UNSPACED_RANGES:
        unspaced[first:last + 1] = True
    return space, unspaced


class WordHashes(NamedTuple):
    """A text's words (as `split_words` gives them) as numbers: a hash per word, equal words getting equal
    hashes (64-bit polynomial, see `string_hash`), and each word's length in characters."""

    hashes: np.ndarray  # uint64
    lengths: np.ndarray  # int64


def string_hash(word: str) -> int:
    """The hash `hash_words` gives `word`: sum of (code point + 1) * HASH_BASE**position, modulo 2**64."""
    value, power = 0, 1
    for char in word:
        value = (value + (ord(char) + 1) * power) % 2**64
        power = power * HASH_BASE % 2**64
    return value


def hash_words(text: str) -> WordHashes:
    """`split_words(text)` as hashes, computed on the code points with no Python object per word.

    A piece starts after whitespace and at each unspaced-script character and the one after it; its word runs
    from its first to its last letter or mark, so stripping the special characters at both ends comes for free.
    """
    code_points = char_ids(text.lower())
    letters = np.flatnonzero(~_special_code_points()[code_points])
    if letters.size == 0:
        return WordHashes(np.empty(0, dtype=np.uint64), np.empty(0, dtype=np.int64))
    space, unspaced = (table[code_points] for table in _space_and_unspaced_code_points())
    piece_starts = np.empty(len(code_points), dtype=bool)
    piece_starts[0] = True
    piece_starts[1:] = space[:-1] | unspaced[1:] | unspaced[:-1]
    owner = np.cumsum(piece_starts & ~space)[letters]  # the piece each letter belongs to
    first = np.empty(len(letters), dtype=bool)
    first[0] = True
    np.not_equal(owner[1:], owner[:-1], out=first[1:])
    last = np.empty_like(first)
    last[-1] = True
    last[:-1] = first[1:]
    starts, ends = letters[first], letters[last] + 1
    prefix = prefix_hashes(code_points)
    hashes = (prefix[ends] - prefix[starts]) * powers(HASH_INVERSE, len(code_points))[starts]
    return WordHashes(hashes, (ends - starts).astype(np.int64))


def joined_hashes(words: WordHashes, joiner: str) -> np.ndarray:
    """The hash of each adjacent pair of words written together with `joiner` between them."""
    before, after, length = words.hashes[:-1], words.hashes[1:], words.lengths[:-1]
    shifts = powers(HASH_BASE, int(length.max(initial=0)) + len(joiner) + 1)
    return before + shifts[length] * np.uint64(string_hash(joiner)) + shifts[length + len(joiner)] * after


def split_words(text: str) -> list[str]:
    """The lowercased words of `text`, each stripped of special characters at both ends; none empty."""
    lowered = text.lower()
    # Without unspaced scripts the pieces are exactly str.split()'s (both split on str.isspace()).
    pieces = _PIECE.findall(lowered) if _HAS_UNSPACED.search(lowered) else lowered.split()
    words = [piece if piece.isalpha() else _strip_special(piece) for piece in pieces]
    return [word for word in words if word]


def _strip_special(piece: str) -> str:
    """`piece` without the special characters at its ends (empty if it has nothing else)."""
    piece = piece.strip(_ASCII_SPECIAL)  # the common case in one C call; other scripts' specials below
    start, end = 0, len(piece)
    while start < end and SPECIAL[piece[start]]:
        start += 1
    while end > start and SPECIAL[piece[end - 1]]:
        end -= 1
    return piece[start:end]


def special_character_ratio(text: str) -> float:
    """The fraction of the characters of `text` that are special (0 for an empty text)."""
    if not text:
        return 0.0
    return int(np.count_nonzero(_special_code_points()[char_ids(text)])) / len(text)
