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
import unicodedata
from collections import Counter

_UNSPACED = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003134f"
_PIECE = re.compile(f"[{_UNSPACED}]|[^\\s{_UNSPACED}]+")


class _SpecialTable(dict):
    """char -> is it special? Filled on first sight of each character (a document uses few)."""

    def __missing__(self, char: str) -> bool:
        special = unicodedata.category(char)[0] not in "LM"
        self[char] = special
        return special


SPECIAL = _SpecialTable()


def split_words(text: str) -> list[str]:
    """The lowercased words of `text`, each stripped of special characters at both ends; none empty."""
    words = [piece if piece.isalpha() else _strip_special(piece) for piece in _PIECE.findall(text.lower())]
    return [word for word in words if word]


def _strip_special(piece: str) -> str:
    """`piece` without the special characters at its ends (empty if it has nothing else)."""
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
    return sum(count for char, count in Counter(text).items() if SPECIAL[char]) / len(text)
