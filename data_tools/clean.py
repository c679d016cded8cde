"""The clean stage: document shards → shards normalized, language-identified, quality-filtered and PII-redacted.

One output shard per input shard (`<stem>.parquet`, same schema, `lang` = identified ISO code).
Steps run in this order (`build_steps`); a document is removed by the first step that drops it,
whose name is the reason in `removed`, so documents_in == documents_out + sum(removed):
  invalid_utf8 / too_large / missing_field   rows that cannot be cleaned (decided before the steps)
  normalize → empty → [c4_lines] → language_id → [language] → min_words → char_repetition →
  word_repetition → special_characters → stopwords → flagged_words → lang_id_score →
  [gopher_paragraphs → gopher_lines → gopher_top_ngrams → gopher_duplicate_ngrams] → [extra steps] → [pii]
What steps did to documents that were kept (PII redactions, C4 line removals, filters skipped for
lack of a word list) is counted in the task's `events`, e.g. {"pii:email": 3}.
"""

from __future__ import annotations

import argparse
import functools
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from data_tools.errors import DataToolsError
from data_tools.filters.base import Check, CleanDocument, Step, apply_steps
from data_tools.filters.c4 import C4Lines
from data_tools.filters.gopher import gopher_filters
from data_tools.filters.langid import IdentifyLanguage, KeepLanguages, language_codes
from data_tools.filters.normalize import Normalize
from data_tools.filters.pii import RedactPII
from data_tools.filters.quality import roots_filters
from data_tools.filters.thresholds import DEFAULT_THRESHOLDS_FILE, ThresholdTable, load_thresholds
from data_tools.shards import SUFFIX, iter_batches, write_shard
from data_tools.sources.base import Document
from data_tools.stage import ShardStats, Task, add_stage_arguments, run_shard_stage

MAX_DOCUMENT_BYTES = 10 * 1024 * 1024
_COLUMNS = ["id", "text", "source", "url"]


def default_thresholds() -> ThresholdTable:
    """The shipped ROOTS thresholds (`filters/thresholds.yaml`)."""
    return load_thresholds(DEFAULT_THRESHOLDS_FILE, language_codes())


@dataclass(frozen=True)
class CleanOptions:
    """What the clean stage does (picklable, for worker processes)."""

    thresholds: ThresholdTable = field(default_factory=default_thresholds)
    pii: bool = True
    gopher: bool = False
    c4_lines: bool = False
    languages: frozenset[str] | None = None  # keep only these identified languages; None keeps all
    max_document_bytes: int = MAX_DOCUMENT_BYTES
    extra_steps: tuple[Step, ...] = ()  # user steps, run after the quality filters and before PII redaction

    def __post_init__(self) -> None:
        if self.max_document_bytes < 1:
            raise DataToolsError(f"--max-document-bytes {self.max_document_bytes} is invalid: it must be at least 1")
        unknown = sorted(self.languages - language_codes()) if self.languages else []
        if unknown:
            raise DataToolsError(
                f"--languages: unknown language code(s) {', '.join(unknown)}; valid codes: "
                f"{', '.join(sorted(language_codes()))}")


def _has_text(doc: CleanDocument) -> bool:
    return bool(doc.text)


def build_steps(options: CleanOptions) -> list[Step]:
    """The cleaning steps for `options`, in the order documented above."""
    steps: list[Step] = [Normalize(), Check("empty", _has_text)]
    if options.c4_lines:
        steps.append(C4Lines())
    steps.append(IdentifyLanguage())
    if options.languages:
        steps.append(KeepLanguages(options.languages))
    steps.extend(roots_filters(options.thresholds))
    if options.gopher:
        steps.extend(gopher_filters())
    steps.extend(options.extra_steps)
    if options.pii:
        steps.append(RedactPII())
    return steps


def clean_shard(task: Task, output_dir: Path, options: CleanOptions) -> ShardStats:
    """Clean one document shard into `<output_dir>/<task name>.parquet`; return what went in, out, and why."""
    stats = ShardStats()
    output = f"{task.name}{SUFFIX}"
    write_shard(output_dir / output, clean_documents(task.input, build_steps(options), options.max_document_bytes,
                                                     stats))
    stats.outputs.append(output)
    return stats


def clean_documents(shard: Path, steps: list[Step], max_document_bytes: int, stats: ShardStats) -> Iterator[Document]:
    """The kept documents of `shard`, cleaned by `steps`; every document read is counted in `stats`."""
    for batch in iter_batches(shard, _COLUMNS):
        # Text as bytes: a shard written elsewhere may hold invalid UTF-8, which must not stop the stage.
        rows = zip(*(batch.column(name).to_pylist() for name in ("id", "source", "url")),
                   batch.column("text").cast(pa.binary()).to_pylist())
        for doc_id, source, url, raw in rows:
            text, reason = _decode(raw, max_document_bytes)
            if reason is None and (doc_id is None or source is None):
                reason = "missing_field"
            doc = CleanDocument(doc_id or "", text, source or "unknown", url)
            if reason is None:
                doc, reason = apply_steps(doc, steps)
            stats.count_in(text, doc.source, doc.lang)
            if reason is not None:
                stats.removed[reason] += 1
                continue
            stats.count_out(doc.text, doc.source, doc.lang)
            stats.events.update(doc.events)
            yield Document(doc.id, doc.text, doc.source, doc.url, doc.lang)


def _decode(raw: bytes | None, max_document_bytes: int) -> tuple[str, str | None]:
    """The text of a row, and why it cannot be cleaned (None if it can)."""
    if raw is None:
        return "", "empty"
    if len(raw) > max_document_bytes:
        return raw.decode("utf-8", "replace"), "too_large"
    try:
        return raw.decode("utf-8"), None
    except UnicodeDecodeError:
        return raw.decode("utf-8", "replace"), "invalid_utf8"


def options_from_args(args: argparse.Namespace) -> CleanOptions:
    """CleanOptions from the `clean` command line (thresholds loaded and validated here, before any work)."""
    thresholds = args.thresholds or DEFAULT_THRESHOLDS_FILE
    return CleanOptions(thresholds=load_thresholds(thresholds, language_codes()), pii=args.pii, gopher=args.gopher,
                        c4_lines=args.c4_lines, languages=args.languages, max_document_bytes=args.max_document_bytes)


def _language_list(value: str) -> frozenset[str]:
    """`en,fr` -> {"en", "fr"} (validated against the identifier's codes in CleanOptions)."""
    return frozenset(code.strip() for code in value.split(",") if code.strip())


def _run(args: argparse.Namespace) -> int:
    """Run the clean stage for the parsed command line."""
    return run_shard_stage("clean", args, functools.partial(clean_shard, options=options_from_args(args)))


def register(commands: Any) -> None:
    """Add the `clean` subcommand to an argparse subparsers object."""
    parser = commands.add_parser(
        "clean", help="normalize, identify languages, apply the ROOTS quality filters and redact PII")
    add_stage_arguments(parser)
    parser.add_argument("--thresholds", type=Path, metavar="FILE",
                        help="per-language filter thresholds (YAML); default: ROOTS' values, filters/thresholds.yaml")
    parser.add_argument("--no-pii", dest="pii", action="store_false",
                        help="keep emails, IP addresses and phone numbers")
    parser.add_argument("--gopher", action="store_true", help="also apply Gopher's repetition filters")
    parser.add_argument("--c4-lines", action="store_true",
                        help="remove lines as C4 did; drop documents left with fewer than 5 sentences")
    parser.add_argument("--languages", type=_language_list, metavar="en,fr,...",
                        help="keep only documents identified as one of these languages")
    parser.add_argument("--max-document-bytes", type=int, default=MAX_DOCUMENT_BYTES, metavar="N",
                        help=f"drop documents larger than this (default {MAX_DOCUMENT_BYTES:,})")
    parser.set_defaults(run=_run)
