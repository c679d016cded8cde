"""Unicode and whitespace normalization: one canonical form of the text before anything measures it.

In order: line breaks (CR LF, CR, VT, FF, NEL, U+2028/9) become "\\n"; invisible characters (C0/C1
controls other than tab and newline, soft hyphen, zero-width space, word joiner, BOM) are removed;
the text is put in Unicode NFC; every run of horizontal whitespace (tabs and exotic spaces
included) becomes one space; lines lose leading and trailing spaces; more than one blank line
becomes one; the text loses leading and trailing whitespace. ZWJ/ZWNJ stay (they spell words in
several scripts and emoji).
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from data_tools.filters.base import CleanDocument

_LINE_BREAKS = re.compile("\r\n?|[\x0b\x0c\x85\u2028\u2029]")
_INVISIBLE = re.compile("[\x00-\x08\x0e-\x1f\x7f-\x84\x86-\x9f\u00ad\u200b\u2060\ufeff]+")
_HORIZONTAL_SPACE = re.compile(r"[^\S\n]+")
_SPACE_AROUND_NEWLINE = re.compile(" ?\n ?")
_BLANK_LINES = re.compile("\n{3,}")


def normalize_text(text: str) -> str:
    """`text` in the canonical form described in this module's docstring."""
    text = _INVISIBLE.sub("", _LINE_BREAKS.sub("\n", text))
    if not unicodedata.is_normalized("NFC", text):
        text = unicodedata.normalize("NFC", text)
    text = _SPACE_AROUND_NEWLINE.sub("\n", _HORIZONTAL_SPACE.sub(" ", text))
    return _BLANK_LINES.sub("\n\n", text).strip()


@dataclass(frozen=True)
class Normalize:
    """Step: normalize the text (never drops)."""

    name: str = "normalize"

    def __call__(self, doc: CleanDocument) -> CleanDocument:
        return doc.changed(text=normalize_text(doc.text))
