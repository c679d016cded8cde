"""The extract stage: raw input files → document shards, one task per input, resumable, with skip counts.

Output: `<input stem>.parquet` per input, or, with a target shard size, parts
`<input stem>-00000.parquet`, `-00001`, ... of about that much text each (a whole Wikipedia
dump or a large WARC need not become one file).
"""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from data_tools.errors import DataToolsError
from data_tools.shards import SUFFIX, write_shard
from data_tools.sources.base import Document, Reader
from data_tools.sources.records import read_hf, read_jsonl, read_parquet
from data_tools.sources.text import read_text
from data_tools.sources.warc import MAX_HTML_BYTES, read_warc, read_wet
from data_tools.sources.wikipedia import read_wikipedia
from data_tools.stage import ShardStats, StageReport, Task, run_stage, select_slice

FORMATS: tuple[str, ...] = ("warc", "wet", "wikipedia", "jsonl", "parquet", "hf", "text")
# What each format's inputs must be, and what a missing one is called in the error.
_INPUT_KINDS: dict[str, tuple[Callable[[Path], bool], str]] = {
    "hf": (Path.is_dir, "dataset directory(s)"),
    "text": (Path.exists, "text file(s) or directory(s) of .txt files"),
}


@dataclass(frozen=True)
class ExtractOptions:
    """How to read inputs: the format and its knobs (picklable, for worker processes)."""

    format: str
    text_field: str = "text"
    max_html_bytes: int = MAX_HTML_BYTES
    extract_timeout: float = 5.0
    main_content: bool = True
    shard_bytes: int | None = None  # target text bytes per output part; None = one shard per input
    separator: str | None = None  # text: a line that separates documents
    blank_lines: int | None = None  # text: a run of this many blank lines separates documents
    source: str = "text"  # text: the documents' source label


def reader_for(options: ExtractOptions) -> Reader:
    """The source reader for the options' format."""
    readers: dict[str, Reader] = {
        "warc": functools.partial(read_warc, max_html_bytes=options.max_html_bytes,
                                  timeout=options.extract_timeout, main_content=options.main_content),
        "wet": read_wet,
        "wikipedia": read_wikipedia,
        "jsonl": functools.partial(read_jsonl, text_field=options.text_field),
        "parquet": functools.partial(read_parquet, text_field=options.text_field),
        "hf": functools.partial(read_hf, text_field=options.text_field),
        "text": functools.partial(read_text, separator=options.separator, blank_lines=options.blank_lines,
                                  source=options.source),
    }
    if options.format not in readers:
        raise DataToolsError(f"unknown input format {options.format!r}; valid formats: {', '.join(FORMATS)}")
    if options.blank_lines is not None and options.blank_lines < 1:
        raise DataToolsError(f"--blank-lines {options.blank_lines} is invalid: it must be at least 1")
    if options.separator is not None and not options.separator.strip():
        raise DataToolsError("--separator is empty: give the text of the separating line, e.g. '====='")
    return readers[options.format]


def task_name(input_path: Path) -> str:
    """The name outputs of `input_path` carry: its file name without the last suffix."""
    return input_path.stem if input_path.is_file() else input_path.name


def extract_task(task: Task, output_dir: Path, options: ExtractOptions) -> ShardStats:
    """Extract one input into its shard (or parts); the stats count every record read or skipped."""
    stats = ShardStats()
    skipped: Counter = Counter()

    def counted(documents: Iterator[Document]) -> Iterator[Document]:
        for document in documents:
            stats.count_in(document.text, document.source, document.lang)  # also advances the progress bar
            stats.count_out(document.text, document.source, document.lang)
            yield document

    documents = counted(reader_for(options)(task.input, skipped))
    if options.shard_bytes is None:
        write_shard(output_dir / f"{task.name}{SUFFIX}", documents)
        stats.outputs.append(f"{task.name}{SUFFIX}")
    else:
        stats.outputs.extend(_write_parts(output_dir, task.name, documents, options.shard_bytes))
    stats.removed.update(skipped)
    stats.documents_in = stats.documents_out + sum(skipped.values())
    stats.bytes_in = _size(task.input)  # records skipped before extraction have no source or language yet
    return stats


def _write_parts(output_dir: Path, name: str, documents: Iterator[Document], shard_bytes: int) -> list[str]:
    """Write parts of about `shard_bytes` of text each (at least one document each, at least one part)."""
    names: list[str] = []
    head = next(documents, None)

    def part_documents() -> Iterator[Document]:
        nonlocal head
        total = 0
        while head is not None and total < shard_bytes:
            total += len(head.text.encode("utf-8"))
            yield head
            head = next(documents, None)

    while head is not None or not names:
        part = f"{name}-{len(names):05d}{SUFFIX}"
        write_shard(output_dir / part, part_documents())
        names.append(part)
    return names


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def extract_files(inputs: Sequence[Path], fmt: str, output_dir: Path, text_field: str = "text",
                  overwrite: bool = False, num_workers: int = 1, shard_index: int = 0, num_shards: int = 1,
                  options: ExtractOptions | None = None) -> StageReport:
    """Extract every input of this slice (all checked to exist and to have distinct names first)."""
    options = options or ExtractOptions(fmt, text_field)
    reader_for(options)  # reject an unknown format before touching anything
    valid, kind = _INPUT_KINDS.get(options.format, (Path.is_file, "input file(s)"))
    missing = [str(path) for path in inputs if not valid(path)]
    if missing:
        raise DataToolsError(f"{kind} not found: {', '.join(missing)}")
    tasks = select_slice([Task(task_name(p), p) for p in inputs], shard_index, num_shards)
    work = functools.partial(extract_task, options=options)
    return run_stage("extract", tasks, work, output_dir, num_workers, overwrite)
