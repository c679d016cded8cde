"""Gopher's repetition filters (Rae et al. 2021, table A1), with its published thresholds.

Four steps, each dropping a document that exceeds any of its limits (fractions of the text's
characters unless noted): `gopher_paragraphs` (duplicate paragraphs, by count and by characters),
`gopher_lines` (the same for lines), `gopher_top_ngrams` (characters in the most frequent word
2/3/4-gram), `gopher_duplicate_ngrams` (characters in repeated word 5..10-grams, counted as
DataTrove does: a repeat's characters once, skipping past it). Words are `split_words`' lowercased
words, and n-gram characters exclude the spaces between words.
"""

from __future__ import annotations

import re

import numpy as np

from data_tools.filters.base import Check, CleanDocument, Step
from data_tools.filters.ngrams import ngram_hashes, word_ids

DUPLICATE_PARAGRAPHS_MAX = 0.30  # fraction of paragraphs that repeat an earlier one
DUPLICATE_PARAGRAPH_CHARS_MAX = 0.20
DUPLICATE_LINES_MAX = 0.30
DUPLICATE_LINE_CHARS_MAX = 0.20
TOP_NGRAM_CHARS_MAX = {2: 0.20, 3: 0.18, 4: 0.16}
DUPLICATE_NGRAM_CHARS_MAX = {5: 0.15, 6: 0.14, 7: 0.13, 8: 0.12, 9: 0.11, 10: 0.10}

_PARAGRAPH_BREAK = re.compile(r"\n{2,}")
_LINE_BREAK = re.compile(r"\n+")


def duplicates(parts: list[str]) -> tuple[int, int]:
    """How many of `parts` repeat an earlier part, and how many characters those repeats hold."""
    seen: set[str] = set()
    count = chars = 0
    for part in parts:
        if part in seen:
            count += 1
            chars += len(part)
        else:
            seen.add(part)
    return count, chars


def _parts_ok(parts: list[str], text: str, count_max: float, chars_max: float) -> bool:
    count, chars = duplicates(parts)
    return count <= count_max * len(parts) and chars <= chars_max * len(text)


def _paragraphs_ok(doc: CleanDocument) -> bool:
    return _parts_ok(_PARAGRAPH_BREAK.split(doc.text), doc.text, DUPLICATE_PARAGRAPHS_MAX,
                     DUPLICATE_PARAGRAPH_CHARS_MAX)


def _lines_ok(doc: CleanDocument) -> bool:
    return _parts_ok(_LINE_BREAK.split(doc.text), doc.text, DUPLICATE_LINES_MAX, DUPLICATE_LINE_CHARS_MAX)


def _ngram_chars(words: list[str], n: int) -> np.ndarray:
    """The number of characters in each word `n`-gram, in order."""
    ends = np.concatenate(([0], np.cumsum([len(word) for word in words])))
    return ends[n:] - ends[:-n]


def top_ngram_chars(words: list[str], n: int) -> int:
    """Characters covered by the most frequent word `n`-gram (its length × its count; 0 if none)."""
    hashes = ngram_hashes(word_ids(words), n)
    if hashes.size == 0:
        return 0
    _, inverse, counts = np.unique(hashes, return_inverse=True, return_counts=True)
    occurrences = counts[inverse]
    top = occurrences.max()
    return int(_ngram_chars(words, n)[occurrences == top].max() * top)


def duplicate_ngram_chars(words: list[str], n: int) -> int:
    """Characters in word `n`-grams that repeat an earlier one, jumping past each repeat (DataTrove's count)."""
    hashes = ngram_hashes(word_ids(words), n).tolist()
    chars = _ngram_chars(words, n).tolist() if hashes else []
    seen: set[int] = set()
    total, index = 0, 0
    while index < len(hashes):
        if hashes[index] in seen:
            total += chars[index]
            index += n
        else:
            seen.add(hashes[index])
            index += 1
    return total


def _top_ngrams_ok(doc: CleanDocument) -> bool:
    return all(top_ngram_chars(doc.words, n) <= limit * len(doc.text) for n, limit in TOP_NGRAM_CHARS_MAX.items())


def _duplicate_ngrams_ok(doc: CleanDocument) -> bool:
    return all(duplicate_ngram_chars(doc.words, n) <= limit * len(doc.text)
               for n, limit in DUPLICATE_NGRAM_CHARS_MAX.items())


def gopher_filters() -> list[Step]:
    """The four Gopher repetition steps, cheapest first."""
    return [Check("gopher_paragraphs", _paragraphs_ok), Check("gopher_lines", _lines_ok),
            Check("gopher_top_ngrams", _top_ngrams_ok), Check("gopher_duplicate_ngrams", _duplicate_ngrams_ok)]
