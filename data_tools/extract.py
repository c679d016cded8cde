"""The extract stage: raw input files → one document shard per file, resumable, with skip counts."""

from __future__ import annotations

import functools
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow.parquet as pq

from data_tools.errors import DataToolsError
from data_tools.shards import SUFFIX, write_shard
from data_tools.sources.base import Reader
from data_tools.sources.jsonl import read_jsonl
from data_tools.sources.warc import read_warc, read_wet
from data_tools.sources.wikipedia import read_wikipedia

FORMATS: tuple[str, ...] = ("warc", "wet", "wikipedia", "jsonl")


@dataclass(frozen=True)
class ExtractResult:
    """What extracting one input produced: documents written and records skipped, by reason."""

    input: Path
    output: Path
    documents: int
    skipped: dict[str, int] = field(default_factory=dict)
    reused: bool = False  # the output already existed and was kept

    def summary(self) -> str:
        """One line for the CLI."""
        if self.reused:
            return f"{self.input}: kept existing {self.output} ({self.documents} documents; --overwrite to redo)"
        reasons = ", ".join(f"{reason}={count}" for reason, count in sorted(self.skipped.items())) or "none"
        return f"{self.input} -> {self.output}: {self.documents} documents, skipped {reasons}"


def reader_for(fmt: str, text_field: str = "text") -> Reader:
    """The source reader for input format `fmt`."""
    readers: dict[str, Reader] = {
        "warc": read_warc,
        "wet": read_wet,
        "wikipedia": read_wikipedia,
        "jsonl": functools.partial(read_jsonl, text_field=text_field),
    }
    if fmt not in readers:
        raise DataToolsError(f"unknown input format {fmt!r}; valid formats: {', '.join(FORMATS)}")
    return readers[fmt]


def shard_path(input_path: Path, output_dir: Path) -> Path:
    """Where the shard for `input_path` goes: `<output_dir>/<input stem>.parquet`."""
    return output_dir / f"{input_path.stem}{SUFFIX}"


def extract_file(input_path: Path, reader: Reader, output_dir: Path, overwrite: bool = False) -> ExtractResult:
    """Extract one input into its shard, or keep the shard already there unless `overwrite`."""
    output = shard_path(input_path, output_dir)
    if output.exists() and not overwrite:
        return ExtractResult(input_path, output, pq.ParquetFile(output).metadata.num_rows, reused=True)
    skipped: Counter = Counter()
    documents = write_shard(output, reader(input_path, skipped))
    return ExtractResult(input_path, output, documents, dict(skipped))


def extract_files(
    inputs: list[Path], fmt: str, output_dir: Path, text_field: str = "text", overwrite: bool = False
) -> list[ExtractResult]:
    """Extract every input (all checked to exist and to map to distinct shards first)."""
    reader = reader_for(fmt, text_field)
    missing = [str(path) for path in inputs if not path.is_file()]
    if missing:
        raise DataToolsError(f"input file(s) not found: {', '.join(missing)}")
    by_output: dict[Path, Path] = {}
    for path in inputs:
        other = by_output.setdefault(shard_path(path, output_dir), path)
        if other != path:
            raise DataToolsError(
                f"inputs {other} and {path} would both write {shard_path(path, output_dir)}; "
                "give inputs with distinct file names, or extract them into different directories"
            )
    return [extract_file(path, reader, output_dir, overwrite) for path in by_output.values()]
