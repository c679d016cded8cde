"""Language identification with py3langid's bundled model (no download), loaded once per process.

The identifier gives normalized probabilities (`norm_probs=True`), so a document's `lang_score` is
comparable with the `lang_id_min` thresholds. Codes are ISO 639 (mostly 639-1, e.g. "en", "zh";
"zxx" means no linguistic content). Newlines are read as spaces, as ROOTS did.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from py3langid.langid import MODEL_FILE, LanguageIdentifier

from data_tools.filters.base import CleanDocument


@functools.cache
def language_identifier() -> LanguageIdentifier:
    """The process's identifier (the model loads in under a second, once)."""
    return LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)


def language_codes() -> frozenset[str]:
    """Every code the identifier can report."""
    return frozenset(language_identifier().labels)


SAMPLE_CHARACTERS = 5000  # identification cost grows with length; a few paragraphs decide it


def identify(text: str) -> tuple[str, float]:
    """The most likely language of `text` (from its first SAMPLE_CHARACTERS) and its probability."""
    lang, score = language_identifier().classify(text[:SAMPLE_CHARACTERS].replace("\n", " "))
    return lang, float(score)


@dataclass(frozen=True)
class IdentifyLanguage:
    """Step: set the document's `lang` and `lang_score` (never drops)."""

    name: str = "language_id"

    def __call__(self, doc: CleanDocument) -> CleanDocument:
        lang, score = identify(doc.text)
        return doc.changed(lang=lang, lang_score=score)


@dataclass(frozen=True)
class KeepLanguages:
    """Step: drop documents whose identified language is not one of `languages`."""

    languages: frozenset[str]
    name: str = "language"

    def __call__(self, doc: CleanDocument) -> CleanDocument | None:
        return doc if doc.lang in self.languages else None
