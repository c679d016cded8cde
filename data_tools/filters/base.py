"""The one interface every cleaning step implements, the document it works on, and how steps chain.

A step is any object with a `name` and `__call__(doc) -> CleanDocument | None`:
  * a filter returns `doc` to keep it or None to drop it (the drop reason is `step.name`);
  * a modifier returns a changed copy, `doc.changed(text=..., events={...})`, counting what it did.
`Check("name", predicate)` turns a predicate into a filter, so a new filter is one line.
"""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol

from data_tools.filters.words import WordHashes, hash_words, split_words


@dataclass(frozen=True)
class CleanDocument:
    """A document on its way through the steps: text plus what the steps learned about it."""

    id: str
    text: str
    source: str
    url: str | None = None
    lang: str | None = None  # ISO 639 code, set by language identification
    lang_score: float = 0.0  # the identifier's probability for `lang`
    events: Counter = field(default_factory=Counter)  # e.g. {"pii:email": 2}: edits and skipped checks

    @functools.cached_property
    def words(self) -> list[str]:
        """The text's words, lowercased and stripped (see `words.split_words`); computed once per text."""
        return split_words(self.text)

    @functools.cached_property
    def word_hashes(self) -> WordHashes:
        """The same words as hashes (see `words.hash_words`), what the ROOTS filters measure; once per text."""
        return hash_words(self.text)

    def changed(self, *, text: str | None = None, lang: str | None = None, lang_score: float | None = None,
                events: Mapping[str, int] | None = None) -> CleanDocument:
        """A copy with the given fields replaced and `events` added to the document's event counts."""
        updates: dict = {"events": self.events + Counter(events or {})}
        for name, value in (("text", text), ("lang", lang), ("lang_score", lang_score)):
            if value is not None:
                updates[name] = value
        copy = replace(self, **updates)
        if text is None:  # same text, same words: keep what was computed from it
            for cached in ("words", "word_hashes"):
                if cached in self.__dict__:
                    copy.__dict__[cached] = self.__dict__[cached]
        return copy


class Step(Protocol):
    """A cleaning step: returns the document (kept, possibly changed) or None (dropped because of `name`)."""

    name: str

    def __call__(self, doc: CleanDocument) -> CleanDocument | None: ...


@dataclass(frozen=True)
class Check:
    """A filter from a predicate: keeps the documents for which `keep(doc)` is true."""

    name: str
    keep: Callable[[CleanDocument], bool]

    def __call__(self, doc: CleanDocument) -> CleanDocument | None:
        return doc if self.keep(doc) else None


def apply_steps(doc: CleanDocument, steps: Sequence[Step]) -> tuple[CleanDocument, str | None]:
    """Run `steps` in order; return the last document and the name of the step that dropped it (None if kept)."""
    for step in steps:
        result = step(doc)
        if result is None:
            return doc, step.name
        doc = result
    return doc, None
