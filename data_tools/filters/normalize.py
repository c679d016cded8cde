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

_LINE_BREAKS = "\x0b\x0c\x85\u2028\u2029"  # and "\r", alone or before "\n"
_INVISIBLE = re.compile("[\x00-\x08\x0e-\x1f\x7f-\x84\x86-\x9f\u00ad\u200b\u2060\ufeff]")
# Every character that is a line break, invisible, or whitespace other than a plain space or newline.
_ODD_CHARACTER = re.compile("[\x00-\x09\x0b-\x1f\x7f-\xa0\u00ad\u1680\u2000-\u200b\u2028\u2029\u202f\u205f"
                            "\u2060\u3000\ufeff]")


def normalize_text(text: str) -> str:
    """`text` in the canonical form described in this module's docstring.

    Most web text is nearly canonical: one scan finds the few odd characters a text holds, and every
    rule is a `str.replace` (a fast substring search) rather than a regex pass.
    """
    odd = set(_ODD_CHARACTER.findall(text))
    if "\r" in odd:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    for char in odd:
        if char in _LINE_BREAKS:
            text = text.replace(char, "\n")
        elif _INVISIBLE.match(char):
            text = text.replace(char, "")
    if not unicodedata.is_normalized("NFC", text):
        text = unicodedata.normalize("NFC", text)
        odd = set(_ODD_CHARACTER.findall(text))  # canonical forms may swap one space character for another
    for char in odd:
        if char.isspace():  # what is left of them: horizontal whitespace
            text = text.replace(char, " ")
    while "  " in text:  # str.replace finds a pattern far faster than a regex scans for it
        text = text.replace("  ", " ")
    text = text.replace(" \n", "\n").replace("\n ", "\n")  # spaces are single by now
    while "\n\n\n" in text:
        text = text.replace("\n\n\n", "\n\n")
    return text.strip()


@dataclass(frozen=True)
class Normalize:
    """Step: normalize the text (never drops)."""

    name: str = "normalize"

    def __call__(self, doc: CleanDocument) -> CleanDocument:
        return doc.changed(text=normalize_text(doc.text))
