"""The ROOTS quality filters, each a measure compared with the document language's threshold.

Measures follow BigScience's data-preparation `filtering.py`, on the words of `words.split_words`
(as `words.hash_words` gives them, one number per word):
  min_words           number of words
  char_repetition     share of all character n-grams taken by the floor(sqrt(#distinct)) most frequent
                      ones (only n-grams seen more than once count): boilerplate and spam score high
  word_repetition     share of word n-grams that occur more than once
  special_characters  share of characters that are not letters or marks
  stopwords           stopwords / words (zh, vi: word pairs count too, ROOTS' "words augmentation")
  flagged_words       flagged words / words (same pairing)
  lang_id_score       the identifier's probability for the document's language
Stopwords and flagged words are skipped, and counted as `skipped:<filter>` events, for languages
without a list.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from data_tools.filters import kernels
from data_tools.filters.base import CleanDocument, Step
from data_tools.filters.lexicons import flagged_words, stopwords
from data_tools.filters.ngrams import char_ids, ngram_repetition
from data_tools.filters.thresholds import Thresholds, ThresholdTable
from data_tools.filters.words import (
    WordHashes,
    joined_hashes,
    special_character_ratio,
    string_hash,
)

# Languages whose word lists hold two-word entries; their adjacent words are also looked up, joined so.
PAIR_JOINERS = {"zh": "", "vi": " "}


def char_repetition_ratio(text: str, n: int) -> float:
    """ROOTS' character-repetition ratio of `text` over character `n`-grams: the share of all n-grams taken
    by the sqrt(distinct) most frequent ones, counting only n-grams that repeat."""
    repetition = ngram_repetition(char_ids(text), n)
    if not repetition.total:
        return 0.0
    top = min(math.isqrt(repetition.distinct), len(repetition.repeated_counts))
    return float(np.sort(repetition.repeated_counts)[::-1][:top].sum() / repetition.total)


def word_repetition_ratio(words: WordHashes, n: int) -> float:
    """ROOTS' word-repetition ratio: the share of word `n`-grams that occur more than once."""
    repetition = ngram_repetition(words.hashes, n)
    if not repetition.total:
        return 0.0
    return float(repetition.repeated_counts.sum() / repetition.total)


def lexicon_ratio(words: WordHashes, lexicon: frozenset[str], joiner: str | None = None) -> float:
    """Words (and, with a `joiner`, adjacent word pairs) found in `lexicon`, per word, at most 1."""
    if not len(words.hashes):
        return 0.0
    known = _lexicon_hashes(lexicon)
    hits = _count_known(words.hashes, known)
    if joiner is not None:
        hits += _count_known(joined_hashes(words, joiner), known)
    return min(1.0, hits / len(words.hashes))


class _Lexicon(NamedTuple):
    """A lexicon as hashes: sorted, plus a bitmap of their low 16 bits that rules out most words in one lookup."""

    hashes: np.ndarray
    low_bits: np.ndarray


_LOW_BITS = np.uint64(0xFFFF)


@functools.cache
def _lexicon_hashes(lexicon: frozenset[str]) -> _Lexicon:
    """A lexicon's entries as hashes (computed once per lexicon)."""
    hashes = np.array(sorted({string_hash(entry) for entry in lexicon}), dtype=np.uint64)
    low_bits = np.zeros(int(_LOW_BITS) + 1, dtype=bool)
    low_bits[hashes & _LOW_BITS] = True
    return _Lexicon(hashes, low_bits)


def _count_known(hashes: np.ndarray, known: _Lexicon) -> int:
    """How many of `hashes` are in the lexicon `known`."""
    return kernels.count_known(hashes, known.hashes, known.low_bits)


Measure = Callable[[CleanDocument, Thresholds], float | None]  # None: no word list for this language


def _word_count(doc: CleanDocument, limits: Thresholds) -> float:
    return len(doc.word_hashes.hashes)


def _char_repetition(doc: CleanDocument, limits: Thresholds) -> float:
    return char_repetition_ratio(doc.text, limits.char_repetition_n)


def _word_repetition(doc: CleanDocument, limits: Thresholds) -> float:
    return word_repetition_ratio(doc.word_hashes, limits.word_repetition_n)


def _special_characters(doc: CleanDocument, limits: Thresholds) -> float:
    return special_character_ratio(doc.text)


def _stopwords(doc: CleanDocument, limits: Thresholds) -> float | None:
    lexicon = stopwords(doc.lang)
    return None if lexicon is None else lexicon_ratio(doc.word_hashes, lexicon, PAIR_JOINERS.get(doc.lang or ""))


def _flagged_words(doc: CleanDocument, limits: Thresholds) -> float | None:
    lexicon = flagged_words(doc.lang)
    return None if lexicon is None else lexicon_ratio(doc.word_hashes, lexicon, PAIR_JOINERS.get(doc.lang or ""))


def _lang_id_score(doc: CleanDocument, limits: Thresholds) -> float:
    return doc.lang_score


@dataclass(frozen=True)
class ThresholdFilter:
    """Step: keep a document when `measure` is ≥ (`at_least`) or ≤ its language's `threshold`."""

    name: str
    measure: Measure
    threshold: str  # a Thresholds field
    at_least: bool
    table: ThresholdTable

    def __call__(self, doc: CleanDocument) -> CleanDocument | None:
        limits = self.table.for_language(doc.lang)
        value = self.measure(doc, limits)
        if value is None:
            return doc.changed(events={f"skipped:{self.name}": 1})
        bound = getattr(limits, self.threshold)
        return doc if (value >= bound if self.at_least else value <= bound) else None


def roots_filters(table: ThresholdTable) -> list[Step]:
    """The seven ROOTS filters, in ROOTS' order, with thresholds from `table`."""
    return [ThresholdFilter(name, measure, threshold, at_least, table) for name, measure, threshold, at_least in (
        ("min_words", _word_count, "min_words", True),
        ("char_repetition", _char_repetition, "char_repetition_max", False),
        ("word_repetition", _word_repetition, "word_repetition_max", False),
        ("special_characters", _special_characters, "special_characters_max", False),
        ("stopwords", _stopwords, "stopwords_min", True),
        ("flagged_words", _flagged_words, "flagged_words_max", False),
        ("lang_id_score", _lang_id_score, "lang_id_min", True),
    )]
