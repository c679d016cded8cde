"""The record every source reader yields, and the conventions they share (ids, skip counting)."""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NamedTuple


class Document(NamedTuple):
    """One extracted document: a row of a document shard."""

    id: str
    text: str
    source: str
    url: str | None
    lang: str | None = None


# A reader takes an input file and a Counter it increments once per skipped record, keyed by
# the reason ("http_status_404", "not_html", ...). Skips are never fatal.
Reader = Callable[[Path, Counter], Iterator[Document]]


def hashed_id(source: str, *parts: str) -> str:
    """A stable document id `<source>:<sha1 of parts>` for records without a natural numeric id."""
    digest = hashlib.sha1("\n".join(parts).encode("utf-8")).hexdigest()
    return f"{source}:{digest}"
