"""Unicode and whitespace normalization: one canonical form of the text before anything measures it.

In order: line breaks (CR LF, CR, VT, FF, NEL, U+2028/9) become "\\n"; invisible characters (C0/C1
controls other than tab and newline, soft hyphen, zero-width space, word joiner, BOM) are removed;
the text is put in Unicode NFC; every run of horizontal whitespace (tabs and exotic spaces
included) becomes one space; lines lose leading and trailing spaces; more than one blank line
becomes one; the text loses leading and trailing whitespace. ZWJ/ZWNJ stay (they spell words in
several scripts and emoji).
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass

from data_tools.filters import kernels
from data_tools.filters.base import CleanDocument
from data_tools.filters.characters import character_classes
from data_tools.filters.ngrams import char_ids


def normalize_text(text: str) -> str:
    """`text` in the canonical form described in this module's docstring: two compiled passes over the code
    points (line breaks and invisible characters before NFC, whitespace after it), NFC only when needed."""
    classes = character_classes()
    code_points = kernels.break_lines(char_ids(text), classes)
    if not text.isascii():
        broken = code_points.tobytes().decode("utf-32-le")
        if not unicodedata.is_normalized("NFC", broken):
            code_points = char_ids(unicodedata.normalize("NFC", broken))
    return kernels.collapse_whitespace(code_points, classes).tobytes().decode("utf-32-le")


@dataclass(frozen=True)
class Normalize:
    """Step: normalize the text (never drops)."""

    name: str = "normalize"

    def __call__(self, doc: CleanDocument) -> CleanDocument:
        return doc.changed(text=normalize_text(doc.text))
