"""The `roots-data` command line: one subcommand per pipeline stage.

Errors the user can fix (any RootsError: DataToolsError, TokenStoreError, TokenizerError) print their
message and exit 2, with no traceback; `verify` exits 1 when the store has problems.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from data_tools.errors import DataToolsError
from data_tools.stage import STATS_FILE, format_stats, print_report, read_stage_stats
from roots_core.errors import RootsError


def _demo_corpus(args: argparse.Namespace) -> int:
    """Write the built-in demo corpus."""
    from data_tools.demo_corpus import build_demo_corpus

    for source, path in build_demo_corpus(args.output).items():
        print(f"{source}: {path} ({path.stat().st_size:,} bytes)")
    return 0


def _extract(args: argparse.Namespace) -> int:
    """Extract raw inputs into document shards."""
    from data_tools.extract import ExtractOptions, extract_files

    text_only = [flag for flag, value in (("--separator", args.separator), ("--blank-lines", args.blank_lines),
                                          ("--source", args.source)) if value is not None]
    if text_only and args.format != "text":
        raise DataToolsError(f"{', '.join(text_only)}: only for --format text, not --format {args.format}")
    options = ExtractOptions(
        args.format, args.text_field, max_html_bytes=int(args.max_html_mb * 1024 * 1024),
        extract_timeout=args.extract_timeout, main_content=not args.full_page,
        shard_bytes=int(args.shard_size_mb * 1024 * 1024) if args.shard_size_mb else None,
        separator=args.separator, blank_lines=args.blank_lines, source=args.source or "text")
    report = extract_files(args.inputs, args.format, args.output, overwrite=args.overwrite,
                           num_workers=args.num_workers, shard_index=args.shard_index,
                           num_shards=args.num_shards, options=options)
    print_report(report, args.output)
    return 0


def _stats(args: argparse.Namespace) -> int:
    """Show what a stage's output directory holds, from its per-task stats."""
    if not args.directory.is_dir():
        raise DataToolsError(f"{args.directory} is not a directory")
    stage = "stats"
    summary = args.directory / STATS_FILE
    if summary.is_file():
        stage = json.loads(summary.read_text()).get("stage", stage)
    print(format_stats(f"{stage} ({args.directory})", read_stage_stats(args.directory)))
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    # Imported here, not at the top: a worker process started by `spawn` re-runs the `roots-data` script, and
    # should import only the stage whose task it runs (clean's compiled kernels cost a dedup worker 0.3 s).
    from data_tools import clean, dedup, labels, megatron_import, report, tokenize_shards, tokenizer
    from data_tools.extract import FORMATS

    parser = argparse.ArgumentParser(prog="roots-data", description="Corpus pipeline: raw text to a token store.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = commands.add_parser("demo-corpus", help="write a small built-in corpus in WARC and MediaWiki XML form")
    demo.add_argument("--output", type=Path, required=True, metavar="DIR")
    demo.set_defaults(run=_demo_corpus)

    extract = commands.add_parser("extract", help="extract documents from raw inputs into Parquet shards")
    extract.add_argument("--format", choices=FORMATS, required=True)
    extract.add_argument("--output", type=Path, required=True, metavar="DIR")
    extract.add_argument("--text-field", default="text", help="jsonl/parquet/hf field holding the text")
    extract.add_argument("--overwrite", action="store_true", help="redo inputs whose shard already exists")
    extract.add_argument("--num-workers", type=int, default=1, metavar="N", help="local worker processes")
    extract.add_argument("--shard-index", type=int, default=0, metavar="I",
                         help="this job-array task's slice of the inputs (e.g. $SLURM_ARRAY_TASK_ID)")
    extract.add_argument("--num-shards", type=int, default=1, metavar="N", help="number of slices")
    extract.add_argument("--shard-size-mb", type=float, default=None, metavar="MB",
                         help="split each input's output into parts of about this much text")
    extract.add_argument("--extract-timeout", type=float, default=5.0, metavar="SECONDS",
                         help="per-page HTML extraction limit (0 = no sandbox process)")
    extract.add_argument("--max-html-mb", type=float, default=5.0, metavar="MB", help="skip larger pages")
    extract.add_argument("--full-page", action="store_true",
                         help="keep menus and footers (default: main content only)")
    split = extract.add_mutually_exclusive_group()
    split.add_argument("--separator", metavar="LINE",
                       help="text: a line holding exactly LINE (e.g. =====) ends a document (default: one per file)")
    split.add_argument("--blank-lines", type=int, metavar="N",
                       help="text: a run of N or more blank lines ends a document")
    extract.add_argument("--source", metavar="NAME", help="text: the documents' source label (default: text)")
    extract.add_argument("inputs", type=Path, nargs="+", metavar="INPUT",
                         help="files (a saved dataset directory for --format hf; .txt files or directories "
                              "of them, searched recursively, for --format text)")
    extract.set_defaults(run=_extract)

    tokenizer.register(commands)
    tokenize_shards.register(commands)
    megatron_import.register(commands)

    clean.register(commands)
    dedup.register(commands)
    labels.register(commands)
    report.register(commands)

    stats = commands.add_parser("stats", help="show a stage output's stats (documents, bytes, removals)")
    stats.add_argument("directory", type=Path, metavar="DIR")
    stats.set_defaults(run=_stats)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one subcommand; return (and, as a console script, exit with) its status."""
    args = build_parser().parse_args(argv)
    started = time.perf_counter()
    try:
        status = args.run(args)
    except RootsError as exc:
        print(f"roots-data {args.command}: error: {exc}", file=sys.stderr)
        return 2
    print(f"roots-data {args.command}: done in {time.perf_counter() - started:.1f}s", file=sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main())
