"""Document shards: the Parquet files between extraction and tokenization (format owner).

One shard per input file, columns id, text, source, url (nullable), lang (nullable). Written
in bounded row groups, atomically; read back as record batches so no stage holds a whole
shard in memory.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from roots_core.arrow_arrays import string_array
from roots_core.atomic import atomic_path
from data_tools.errors import DataToolsError
from data_tools.sources.base import Document

SCHEMA = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),
        pa.field("text", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("url", pa.string()),
        pa.field("lang", pa.string()),
    ]
)
SUFFIX = ".parquet"
_ROW_GROUP_DOCUMENTS = 1000
_ROW_GROUP_TEXT_BYTES = 64 * 1024 * 1024


def write_shard(path: Path, documents: Iterable[Document]) -> int:
    """Write `documents` to the shard at `path` atomically; return how many were written."""
    count = 0
    buffer: list[Document] = []
    buffered_bytes = 0
    with atomic_path(path) as tmp, pq.ParquetWriter(tmp, SCHEMA) as writer:
        for document in documents:
            buffer.append(document)
            buffered_bytes += len(document.text)
            if len(buffer) >= _ROW_GROUP_DOCUMENTS or buffered_bytes >= _ROW_GROUP_TEXT_BYTES:
                writer.write_table(_to_table(buffer))
                count += len(buffer)
                buffer, buffered_bytes = [], 0
        if buffer:
            writer.write_table(_to_table(buffer))
            count += len(buffer)
    return count


def _to_table(documents: list[Document]) -> pa.Table:
    """A table of `documents` in the shard schema."""
    columns = [string_array([getattr(document, name) for document in documents]) for name in SCHEMA.names]
    return pa.Table.from_arrays(columns, schema=SCHEMA)


def list_shards(directory: Path) -> list[Path]:
    """The document shards in `directory`, sorted by name; DataToolsError if there are none."""
    if not directory.is_dir():
        raise DataToolsError(
            f"document shard directory {directory} does not exist (create it with `roots-data extract`)"
        )
    shards = sorted(p for p in directory.glob(f"*{SUFFIX}") if not p.name.startswith("."))
    if not shards:
        raise DataToolsError(f"no *{SUFFIX} document shards in {directory} (create them with `roots-data extract`)")
    return shards


def iter_batches(path: Path, columns: list[str], batch_size: int = 1000) -> Iterator[pa.RecordBatch]:
    """Stream `columns` of the shard at `path` in record batches of at most `batch_size` rows."""
    try:
        parquet = pq.ParquetFile(path)
    except (OSError, pa.ArrowInvalid) as exc:
        raise DataToolsError(f"document shard {path} is not a readable Parquet file: {exc}") from exc
    missing = [name for name in columns if name not in parquet.schema_arrow.names]
    if missing:
        raise DataToolsError(
            f"document shard {path} lacks column(s) {missing}; a shard has columns {SCHEMA.names}"
        )
    yield from parquet.iter_batches(batch_size=batch_size, columns=columns)
