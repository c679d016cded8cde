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

import numpy as np

from data_tools.filters.ngrams import char_ids

_UNSPACED = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003134f"
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


@functools.cache
def _special_code_points() -> np.ndarray:
    """For every code point, whether it is special (built once per process, in about 0.1 s)."""
    return np.array([unicodedata.category(chr(code))[0] not in "LM" for code in range(sys.maxunicode + 1)])


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
