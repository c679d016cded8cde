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

import re
from typing import NamedTuple

import numpy as np

from data_tools.filters import characters, kernels
from data_tools.filters.characters import UNSPACED_RANGES, character_classes
from data_tools.filters.ngrams import HASH_BASE, char_ids, powers

_UNSPACED = "".join(f"{chr(first)}-{chr(last)}" for first, last in UNSPACED_RANGES)
_HAS_UNSPACED = re.compile(f"[{_UNSPACED}]")
_PIECE = re.compile(f"[{_UNSPACED}]|[^\\s{_UNSPACED}]+")
_ASCII_SPECIAL = "".join(chr(code) for code in range(128) if not chr(code).isalpha())


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
    """`split_words(text)` as hashes, computed in one compiled pass over the code points, no Python object
    per word (stripping the special characters at both ends of a piece comes for free)."""
    return WordHashes(*kernels.word_hashes(char_ids(text.lower()), character_classes(), HASH_BASE))


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
    classes = character_classes()
    start, end = 0, len(piece)
    while start < end and classes[ord(piece[start])] & characters.SPECIAL:
        start += 1
    while end > start and classes[ord(piece[end - 1])] & characters.SPECIAL:
        end -= 1
    return piece[start:end]


def special_character_ratio(text: str) -> float:
    """The fraction of the characters of `text` that are special (0 for an empty text)."""
    if not text:
        return 0.0
    return int(np.count_nonzero(character_classes()[char_ids(text)] & characters.SPECIAL)) / len(text)
