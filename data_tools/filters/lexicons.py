"""Per-language word lists for the stopword and flagged-word filters, loaded once per process.

Stopwords come from the `stop-words` package (ISO code -> its language files); flagged words from
the small lists shipped in `resources/flagged_<code>.txt`. A language without a list gets None, and
the filter that needs it is skipped for that document (and counted as skipped).
"""

from __future__ import annotations

import functools
import unicodedata
from pathlib import Path

from stop_words import StopWordError, get_stop_words

RESOURCES = Path(__file__).with_name("resources")
# py3langid reports Norwegian as "no"; stop-words files it under "nb".
_STOPWORD_CODES = {"no": "nb"}


@functools.cache
def stopwords(lang: str | None) -> frozenset[str] | None:
    """The stopwords of `lang` (lowercased, NFC), or None if `stop-words` has no list for it."""
    if not lang:
        return None
    try:
        words = get_stop_words(_STOPWORD_CODES.get(lang, lang))
    except StopWordError:
        return None
    return frozenset(unicodedata.normalize("NFC", word.lower()) for word in words)


@functools.cache
def flagged_words(lang: str | None) -> frozenset[str] | None:
    """The flagged words of `lang` from `resources/flagged_<lang>.txt`, or None if there is no such list."""
    path = RESOURCES / f"flagged_{lang}.txt"
    if not lang or not path.is_file():
        return None
    lines = (line.strip() for line in path.read_text(encoding="utf-8").splitlines())
    return frozenset(unicodedata.normalize("NFC", line.lower()) for line in lines if line and not line.startswith("#"))
