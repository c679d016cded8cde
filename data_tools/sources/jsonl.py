"""JSON-lines reader: one object per line, its text in a named field (`text` by default)."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from data_tools.sources.base import Document, hashed_id

SOURCE = "jsonl"


def read_jsonl(path: Path, skipped: Counter, text_field: str = "text") -> Iterator[Document]:
    """Yield one Document per line whose `text_field` is a non-empty string; count the other lines.

    The id is derived from the file name and line number, so it is stable across re-runs; a
    string `url` field, if present, is kept.
    """
    with open(path, "rb") as stream:
        for line_number, raw in enumerate(stream, start=1):
            if not raw.strip():
                continue
            try:
                record = json.loads(raw)
            except (UnicodeDecodeError, json.JSONDecodeError):
                skipped["bad_json"] += 1
                continue
            if not isinstance(record, dict):
                skipped["not_an_object"] += 1
                continue
            text = record.get(text_field)
            if not isinstance(text, str):
                skipped[f"missing_{text_field}"] += 1
                continue
            if not text.strip():
                skipped["empty_text"] += 1
                continue
            url = record.get("url")
            yield Document(
                hashed_id(SOURCE, path.name, str(line_number)), text, SOURCE, url if isinstance(url, str) else None
            )
