"""The tokenize stage: document shards → a token store, one store file per shard, on the stage framework.

Each task encodes one shard and writes `<store>/<stem>.arrow`, then its manifest entry as the
sidecar `<store>/.entries/<stem>.json` (both atomically) before the framework records the task as
finished: a re-run after a kill redoes exactly the unfinished shards, and `--shard-index /
--num-shards` spread the shards over a job array. `manifest.json` is written, atomically and last,
by whichever run finds that every shard of the input has an entry. `<store>/.tokenizer.json`
pins the store to one tokenizer: a run with another one is refused unless `--overwrite`, which
also drops the old entries so no file of the old tokenizer is ever listed. Output bytes depend
only on the shards and the tokenizer, never on the number of workers or slices. (Named so as not
to shadow the stdlib `tokenize` module.)
"""

from __future__ import annotations

import argparse
import functools
import json
import shutil
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import pyarrow.compute as pc

from roots_core.atomic import write_bytes_atomic
from data_tools.errors import DataToolsError
from data_tools.shards import iter_batches
from data_tools.stage import (
    ShardStats,
    StageReport,
    Task,
    add_stage_arguments,
    is_finished,
    print_report,
    run_stage,
    select_slice,
    shard_tasks,
)
from roots_core.token_store import (
    MANIFEST_NAME,
    SUFFIX,
    TokenizedDocument,
    TokenStoreWriter,
    read_manifest,
    verify_store,
)
from roots_core.tokenizer import Tokenizer

STAGE = "tokenize"
ENTRIES_DIR = ".entries"
TOKENIZER_LOCK = ".tokenizer.json"


class TokenizeReport(NamedTuple):
    """What a tokenize run did, and the manifest if the store is now complete (else the shards still missing)."""

    stage: StageReport
    manifest: dict[str, Any] | None
    missing: list[str]


def tokenize_shards(
    docs_dir: Path,
    tokenizer_path: Path,
    output_dir: Path,
    num_workers: int = 1,
    shard_index: int = 0,
    num_shards: int = 1,
    overwrite: bool = False,
) -> TokenizeReport:
    """Tokenize this slice's unfinished shards of `docs_dir` into the store at `output_dir`; manifest once complete."""
    tokenizer = Tokenizer(tokenizer_path)
    all_tasks = shard_tasks(docs_dir)
    tasks = select_slice(all_tasks, shard_index, num_shards)
    lock = {
        "path": str(tokenizer.path.resolve()),
        "fingerprint": tokenizer.fingerprint,
        "vocab_size": tokenizer.vocab_size,
        "special_tokens": tokenizer.special_tokens,
    }
    previous = _read_lock(output_dir)
    if previous is not None and previous["fingerprint"] != lock["fingerprint"]:
        if not overwrite:
            raise DataToolsError(
                f"{output_dir} holds store files made with tokenizer {previous['path']} (fingerprint "
                f"{previous['fingerprint']}), not {lock['path']} (fingerprint {lock['fingerprint']}); use another "
                "--output, or --overwrite to retokenize every shard (on a job array, every task needs --overwrite)")
        shutil.rmtree(output_dir / ENTRIES_DIR, ignore_errors=True)  # every old file becomes unfinished
    if overwrite or not all(is_finished(output_dir, task.name) for task in tasks):
        # A store being rewritten must not look complete: the old manifest goes first, the new one last.
        (output_dir / MANIFEST_NAME).unlink(missing_ok=True)
    write_bytes_atomic(output_dir / TOKENIZER_LOCK, (json.dumps(lock, indent=2, sort_keys=True) + "\n").encode())
    report = run_stage(STAGE, tasks, tokenize_task, output_dir, num_workers, overwrite)
    entries, missing = _entries(output_dir, all_tasks, lock["fingerprint"])
    manifest = None if missing else _writer(output_dir, lock).write_manifest(entries)
    return TokenizeReport(report, manifest, missing)


def _read_lock(output_dir: Path) -> dict[str, Any] | None:
    """The tokenizer the store at `output_dir` was made with, or None for a new store."""
    path = output_dir / TOKENIZER_LOCK
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise DataToolsError(f"{path} is not readable JSON ({exc}); delete it or use another --output") from exc


def _writer(output_dir: Path, lock: dict[str, Any]) -> TokenStoreWriter:
    """The store writer for the tokenizer described by `lock`."""
    return TokenStoreWriter(output_dir, lock["vocab_size"], lock["special_tokens"], lock["path"], lock["fingerprint"])


def _entry_path(output_dir: Path, name: str) -> Path:
    """Where the manifest entry of task `name` is kept until the manifest is written."""
    return output_dir / ENTRIES_DIR / f"{name}.json"


def _entries(output_dir: Path, tasks: list[Task], fingerprint: str) -> tuple[list[dict[str, Any]], list[str]]:
    """The manifest entries of `tasks` made with tokenizer `fingerprint`, and the names of tasks without one."""
    entries, missing = [], []
    for task in tasks:
        try:
            sidecar = json.loads(_entry_path(output_dir, task.name).read_text())
        except (OSError, ValueError):
            sidecar = {}
        if sidecar.get("fingerprint") == fingerprint and (output_dir / f"{task.name}{SUFFIX}").is_file():
            entries.append(sidecar["entry"])
        else:
            missing.append(task.name)
    return entries, missing


@functools.lru_cache(maxsize=4)
def _load_tokenizer(path: str) -> Tokenizer:
    """The tokenizer at `path`, loaded once per process."""
    return Tokenizer(path)


def tokenize_task(task: Task, output_dir: Path) -> ShardStats:
    """Encode one shard into `<stem>.arrow` and its entry sidecar; return its stats (bytes out = file bytes)."""
    lock = _read_lock(output_dir)
    tokenizer = _load_tokenizer(lock["path"])
    if tokenizer.fingerprint != lock["fingerprint"]:
        raise DataToolsError(f"tokenizer {tokenizer.path} changed while tokenizing {task.input}; re-run tokenize")
    stats = ShardStats()
    entry = _writer(output_dir, lock).write_file(task.name, _documents(tokenizer, task.input, stats))
    sidecar = {"fingerprint": lock["fingerprint"], "entry": entry}
    entry_path = _entry_path(output_dir, task.name)
    write_bytes_atomic(entry_path, (json.dumps(sidecar, indent=1, sort_keys=True) + "\n").encode())
    stats.documents_in = stats.documents_out = entry["num_documents"]
    stats.bytes_out = entry["size_bytes"]
    stats.by_source = {key: Counter({"in": n, "out": n}) for key, n in entry["documents_per_source"].items()}
    stats.by_language = {key: Counter({"in": n, "out": n}) for key, n in entry["documents_per_language"].items()}
    stats.outputs = [entry["name"], str(entry_path.relative_to(output_dir))]
    return stats


def _documents(tokenizer: Tokenizer, shard: Path, stats: ShardStats) -> Iterator[TokenizedDocument]:
    """The shard's documents with their token ids, in shard order; adds their text bytes to `stats.bytes_in`."""
    for batch in iter_batches(shard, ["text", "id", "source", "lang"]):
        stats.bytes_in += pc.sum(pc.binary_length(batch.column(0))).as_py() or 0
        columns = (batch.column(index).to_pylist() for index in range(1, 4))
        yield from map(TokenizedDocument, tokenizer.encode_batch(batch.column(0).to_pylist()), *columns)


def run(args: argparse.Namespace) -> int:
    """Tokenize document shards into a token store and print the stage's table."""
    report = tokenize_shards(args.input, args.tokenizer, args.output, args.num_workers, args.shard_index,
                             args.num_shards, args.overwrite)
    print_report(report.stage, args.output)
    manifest = report.manifest
    if manifest is None:
        print(f"{args.output}: no manifest yet: {len(report.missing)} shard(s) still to tokenize "
              f"({', '.join(report.missing[:5])}{', ...' if len(report.missing) > 5 else ''}); "
              "the run that finishes the last one writes it")
    else:
        print(f"{args.output}: {len(manifest['files'])} files, {manifest['num_documents']:,} documents, "
              f"{manifest['num_tokens']:,} tokens ({manifest['dtype']}), fingerprint {manifest['fingerprint']}")
    return 0


def verify(args: argparse.Namespace) -> int:
    """Fully check a token store; exit 1 listing the problems if it is not sound."""
    problems = verify_store(args.store)
    if problems:
        print(f"{args.store}: {len(problems)} problem(s)", file=sys.stderr)
        for problem in problems:
            print(f"  {problem}", file=sys.stderr)
        return 1
    manifest = read_manifest(args.store)
    print(f"{args.store}: OK: {len(manifest['files'])} files, {manifest['num_documents']:,} documents, "
          f"{manifest['num_tokens']:,} tokens ({manifest['dtype']}, vocab {manifest['vocab_size']}), "
          f"fingerprint {manifest['fingerprint']}")
    return 0


def register(commands) -> None:
    """Add the `tokenize` and `verify` subcommands to an argparse subparsers object."""
    parser = commands.add_parser(
        "tokenize", help="tokenize shards into a memory-mapped token store",
        description=f"One store file per document shard ({SUFFIX}), resumable and sliceable for job arrays; "
                    f"{MANIFEST_NAME} is written by the run that completes the set.")
    add_stage_arguments(parser)
    parser.add_argument("--tokenizer", type=Path, required=True, metavar="PREFIX.model")
    parser.set_defaults(run=run)

    check = commands.add_parser("verify", help="fully check a token store against its manifest")
    check.add_argument("store", type=Path, metavar="STORE_DIR")
    check.set_defaults(run=verify)
