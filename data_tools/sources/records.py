"""Readers for data that is already text records: JSON lines, Parquet, and Hugging Face datasets.

Each record's text comes from `text_field`; a string `url` is kept, a string `source` labels the
document (else the format name). Ids are derived from the file (or split) and the row number, so
they are stable across re-runs. Records without usable text are skipped and counted.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from data_tools.errors import DataToolsError
from data_tools.sources.base import Document, hashed_id


def _document(record: Any, text_field: str, default_source: str, id_parts: tuple[str, ...],
              skipped: Counter) -> Document | None:
    """The Document for one record, or None after counting why it was skipped."""
    if not isinstance(record, dict):
        skipped["not_an_object"] += 1
        return None
    text = record.get(text_field)
    if not isinstance(text, str):
        skipped[f"missing_{text_field}"] += 1
        return None
    if not text.strip():
        skipped["empty_text"] += 1
        return None
    source = record.get("source")
    source = source if isinstance(source, str) and source else default_source
    url = record.get("url")
    return Document(hashed_id(source, *id_parts), text, source, url if isinstance(url, str) else None)


def _documents(records: Iterable[tuple[str, Any]], text_field: str, default_source: str, prefix: tuple[str, ...],
               skipped: Counter) -> Iterator[Document]:
    for row, record in records:
        document = _document(record, text_field, default_source, (*prefix, row), skipped)
        if document is not None:
            yield document


def read_jsonl(path: Path, skipped: Counter, text_field: str = "text") -> Iterator[Document]:
    """One Document per JSON line with a non-empty `text_field`."""
    def records() -> Iterator[tuple[str, Any]]:
        with open(path, "rb") as stream:
            for line_number, raw in enumerate(stream, start=1):
                if not raw.strip():
                    continue
                try:
                    yield str(line_number), json.loads(raw)
                except (UnicodeDecodeError, json.JSONDecodeError):
                    skipped["bad_json"] += 1

    yield from _documents(records(), text_field, "jsonl", (path.name,), skipped)


def read_parquet(path: Path, skipped: Counter, text_field: str = "text") -> Iterator[Document]:
    """One Document per Parquet row, streamed in record batches."""
    try:
        parquet = pq.ParquetFile(path)
    except (OSError, pa.ArrowInvalid) as exc:
        raise DataToolsError(f"{path} is not a readable Parquet file: {exc}") from exc
    if text_field not in parquet.schema_arrow.names:
        raise DataToolsError(f"{path} has no column {text_field!r}; its columns are {parquet.schema_arrow.names} "
                             f"(pick one with --text-field)")

    def records() -> Iterator[tuple[str, Any]]:
        row = 0
        for batch in parquet.iter_batches(batch_size=1000):
            for record in batch.to_pylist():
                yield str(row), record
                row += 1

    yield from _documents(records(), text_field, "parquet", (path.name,), skipped)


def read_hf(path: Path, skipped: Counter, text_field: str = "text") -> Iterator[Document]:
    """One Document per row of a dataset saved with `datasets` `save_to_disk` (every split of a DatasetDict)."""
    import datasets

    try:
        loaded = datasets.load_from_disk(str(path))
    except (FileNotFoundError, ValueError) as exc:
        raise DataToolsError(f"{path} is not a dataset saved with datasets.save_to_disk: {exc}") from exc
    splits = loaded.items() if isinstance(loaded, datasets.DatasetDict) else [("", loaded)]
    for split, dataset in sorted(splits, key=lambda item: item[0]):
        if text_field not in dataset.column_names:
            raise DataToolsError(f"{path} (split {split or 'default'}) has no column {text_field!r}; its columns "
                                 f"are {dataset.column_names} (pick one with --text-field)")
        yield from _documents(((str(i), r) for i, r in enumerate(dataset)), text_field, "hf", (path.name, split),
                              skipped)
