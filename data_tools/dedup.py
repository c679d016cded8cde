"""The dedup stage: exact and MinHash-LSH near-duplicate removal across all shards, deterministic and resumable.

Exact duplicates share the xxh3-128 hash of their normalized text (`minhash.normalize`: Unicode
NFKC, casefolded, whitespace runs collapsed to one space, stripped). Near duplicates share at
least one LSH band key of a MinHash over word shingles (defaults as in datatrove: 5-word
shingles, 14 bands × 8 rows, so a pair with shingle Jaccard similarity J is linked with
probability 1 - (1 - J^8)^14: 5 % at J = 0.5, 56 % at 0.7, 92 % at 0.8, 99.96 % at 0.9). Linked
documents form clusters (connected components, transitively); each cluster keeps only its first
member. "First" is in the global order (shard name, row), which is why the survivors depend only
on the input and the parameters, never on the number of workers or array tasks.

Three phases, each resumable; `--phase all` (the default) runs them in order in one process tree:

1. signatures  per shard (sliceable, parallel): `<output>/.dedup/signatures/<stem>.npz` holds the
               exact hashes and band keys, tagged with a key of the parameters and the input
               shard's name, size and mtime, so a changed shard or parameter is recomputed.
2. cluster     one process over every shard's signatures: `<output>/.dedup/remove/<stem>.npz`
               (removed row indices, one array per reason), then `<output>/.dedup/cluster.json`,
               the marker, keyed by all the inputs and parameters, with the removals and how many
               exact-copy groups and near-duplicate clusters there are of each size (`cluster_sizes`).
               A changed key redoes clustering and deletes the now stale output shards.
3. filter      per shard (sliceable, parallel): `<output>/<stem>.parquet`, the survivors in their
               original order, same schema; per-shard stats and `<output>/stats.json`.

On SLURM, run the phases as three dependent jobs (phases 1 and 3 as job arrays over slices):

    sig=$(sbatch --parsable --array=0-63 --wrap 'roots-data dedup --input docs --output dedup \
          --phase signatures --shard-index $SLURM_ARRAY_TASK_ID --num-shards 64')
    clu=$(sbatch --parsable --dependency=afterok:$sig --wrap 'roots-data dedup --input docs \
          --output dedup --phase cluster')
    sbatch --dependency=afterok:$clu --array=0-63 --wrap 'roots-data dedup --input docs \
          --output dedup --phase filter --shard-index $SLURM_ARRAY_TASK_ID --num-shards 64'

Clustering holds every document's hashes in memory: 16 + 8 × bands bytes per document (128 B
with the defaults), plus O(documents) working arrays for one band at a time.
"""

from __future__ import annotations

import functools
import hashlib
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from roots_core.atomic import atomic_path, write_bytes_atomic
from data_tools.errors import DataToolsError
from data_tools.minhash import MinHasher, exact_hashes, normalize
from data_tools.shards import SCHEMA, SUFFIX, iter_batches, write_shard
from data_tools.sources.base import Document
from data_tools.stage import (
    STATS_FILE,
    ShardStats,
    StageReport,
    Task,
    Workers,
    add_stage_arguments,
    format_stats,
    run_stage,
    select_slice,
    shard_tasks,
)

STAGE = "dedup"
PHASES = ("all", "signatures", "cluster", "filter")
WORK_DIR = ".dedup"
EXACT, NEAR = "exact_duplicate", "near_duplicate"  # removal reasons, as in the stats
SIGNATURE_BATCH = 256  # documents hashed at a time: their shingle arrays stay in cache (7 % faster than 1,000)


@dataclass(frozen=True)
class DedupParams:
    """Everything that decides which documents survive (besides the input)."""

    minhasher: MinHasher
    near: bool = True

    def key(self) -> dict[str, Any]:
        """The parameters as they enter cache keys."""
        return {**self.minhasher.parameters(), "near": self.near}


def _digest(payload: Any) -> str:
    """A short stable hex digest of a JSON-serializable value."""
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:32]


def _signature_key(task: Task, params: DedupParams) -> str:
    """What a shard's signatures were made from: the parameters and the shard's name, size and mtime."""
    stat = task.input.stat()
    return _digest({"params": params.key(), "shard": task.name, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns})


def _cluster_key(tasks: list[Task], params: DedupParams) -> str:
    """What clustering depends on: every shard's signature key, in the global order."""
    return _digest([[task.name, _signature_key(task, params)] for task in _global_order(tasks)])


def _save_npz(path: Path, **arrays: np.ndarray) -> None:
    """Write `arrays` to the .npz at `path` atomically."""
    with atomic_path(path) as tmp, open(tmp, "wb") as file:
        np.savez(file, **arrays)


def _global_order(tasks: list[Task]) -> list[Task]:
    """Shards by name: the order that decides which copy of a document is first."""
    return sorted(tasks, key=lambda task: task.name)


def _stored_key(path: Path) -> str | None:
    """The key a signatures file was made with; None when the file is missing or unreadable."""
    try:
        with np.load(path) as data:
            return str(data["key"])
    except (OSError, EOFError, ValueError, KeyError, zipfile.BadZipFile):
        return None


# Phase 1: signatures.

def signature_task(params: DedupParams, task: Task, output_dir: Path) -> ShardStats:
    """Write one shard's exact hashes and (with near dedup) LSH band keys to `<output_dir>/<stem>.npz`."""
    key = _signature_key(task, params)  # before reading: a shard changed meanwhile is redone next time
    name = f"{task.name}.npz"
    stats = ShardStats(outputs=[name])
    exact, bands = [], []
    for batch in iter_batches(task.input, ["text"], SIGNATURE_BATCH):
        stats.count_read(batch.num_rows)
        normalized = [normalize(text).encode("utf-8") for text in batch.column("text").to_pylist()]
        exact.append(exact_hashes(normalized))
        if params.near:
            bands.append(params.minhasher.band_keys(params.minhasher.signatures(normalized)))
    exact_array = np.concatenate(exact) if exact else np.zeros((0, 2), np.uint64)
    width = params.minhasher.bands if params.near else 0
    band_array = np.concatenate(bands) if bands else np.zeros((len(exact_array), width), np.uint64)
    _save_npz(output_dir / name, exact=exact_array, bands=band_array, key=np.array(key))
    stats.documents_out = stats.documents_in
    return stats


def compute_signatures(tasks: list[Task], output_dir: Path, params: DedupParams, workers: Workers | int = 1,
                       overwrite: bool = False) -> StageReport:
    """Phase 1 for `tasks`: (re)compute every missing or out-of-date signatures file."""
    signature_dir = output_dir / WORK_DIR / "signatures"
    for task in tasks:
        path = signature_dir / f"{task.name}.npz"
        if path.exists() and _stored_key(path) != _signature_key(task, params):
            path.unlink()  # made from another version of the shard or other parameters: the stage redoes it
    return run_stage(f"{STAGE} signatures", tasks, functools.partial(signature_task, params), signature_dir,
                     workers, overwrite)


# Phase 2: cluster.

def _load_signatures(tasks: list[Task], signature_dir: Path, params: DedupParams) -> tuple[list[np.ndarray], ...]:
    """Every shard's exact hashes and band keys, in task order; DataToolsError naming any missing or stale."""
    missing = [t.name for t in tasks if not (signature_dir / f"{t.name}.npz").is_file()]
    stale = [t.name for t in tasks if t.name not in missing
             and _stored_key(signature_dir / f"{t.name}.npz") != _signature_key(t, params)]
    if missing or stale:
        problems = [f"missing for shard(s) {', '.join(missing)}"] if missing else []
        if stale:
            problems.append(f"out of date (another version of the shard or other parameters) for shard(s) "
                            f"{', '.join(stale)}")
        raise DataToolsError(
            f"dedup cluster needs up-to-date signatures of every input shard in {signature_dir}: "
            f"{'; '.join(problems)}. Run `roots-data dedup --phase signatures` over all shards first")
    exact, bands = [], []
    for task in tasks:
        with np.load(signature_dir / f"{task.name}.npz") as data:
            exact.append(data["exact"])
            bands.append(data["bands"])
    return exact, bands


def exact_duplicates(exact: np.ndarray) -> np.ndarray:
    """Which rows of (n, 2) hashes repeat an earlier row: True for every copy after the first."""
    return exact_groups(exact)[0]


def exact_groups(exact: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`exact_duplicates`, and the size of every group of identical rows (from the same sort, so at no extra cost)."""
    duplicate = np.ones(len(exact), dtype=bool)
    _, first, sizes = np.unique(exact, axis=0, return_index=True, return_counts=True)  # first occurrences
    duplicate[first] = False
    return duplicate, sizes


def _compress(parent: np.ndarray) -> None:
    """Point every node of the union-find forest straight at its root (pointer jumping), in place."""
    while True:
        grandparent = parent[parent]
        if np.array_equal(grandparent, parent):
            return
        parent[:] = grandparent


def _union(parent: np.ndarray, u: np.ndarray, v: np.ndarray) -> None:
    """Join the sets of u[i] and v[i] for all i, vectorized; every root stays its set's smallest index."""
    while u.size:
        _compress(parent)
        root_u, root_v = parent[u], parent[v]
        apart = root_u != root_v
        u, v = root_u[apart], root_v[apart]
        np.minimum.at(parent, np.maximum(u, v), np.minimum(u, v))  # hook the larger root under the smaller


def near_duplicates(bands: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """Which candidate rows share a band key, transitively, with an earlier candidate (all but each cluster's first)."""
    return near_clusters(bands, candidates)[0]


def near_clusters(bands: np.ndarray, candidates: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`near_duplicates`, and the size of every cluster of candidates (one count over the final union-find)."""
    rows = np.flatnonzero(candidates)
    parent = np.arange(len(rows))
    for band in range(bands.shape[1]):
        column = bands[rows, band]
        order = np.argsort(column, kind="stable")
        keys = column[order]
        run_start = np.ones(len(order), dtype=bool)
        run_start[1:] = keys[1:] != keys[:-1]
        first = order[np.maximum.accumulate(np.where(run_start, np.arange(len(order)), 0))]
        joined = first != order
        _union(parent, first[joined], order[joined])
    _compress(parent)
    duplicate = np.zeros(len(candidates), dtype=bool)
    duplicate[rows[parent != np.arange(len(rows))]] = True
    sizes = np.bincount(parent, minlength=len(rows))
    return duplicate, sizes[sizes > 0]


def size_histogram(sizes: np.ndarray) -> dict[str, int]:
    """How many groups have each size of 2 or more, as {"size": groups} (JSON keys), ascending."""
    values, counts = np.unique(sizes[sizes > 1], return_counts=True)
    return {str(value): int(count) for value, count in zip(values.tolist(), counts.tolist())}


def cluster(tasks: list[Task], output_dir: Path, params: DedupParams,
            overwrite: bool = False) -> tuple[dict[str, Any], bool]:
    """Phase 2: decide the removals over all `tasks`; return the marker and whether it was reused."""
    tasks = _global_order(tasks)
    work_dir = output_dir / WORK_DIR
    marker_path = work_dir / "cluster.json"
    key = _cluster_key(tasks, params)
    marker = _read_marker(marker_path)
    if marker is not None and marker["key"] == key and not overwrite:
        return marker, True
    exact_parts, band_parts = _load_signatures(tasks, work_dir / "signatures", params)
    marker_path.unlink(missing_ok=True)  # filter refuses to run until the new removal lists are complete
    for task in tasks:
        (output_dir / f"{task.name}{SUFFIX}").unlink(missing_ok=True)  # filtered with the old removal lists
    exact, exact_sizes = exact_groups(np.concatenate(exact_parts))
    near, near_sizes = (near_clusters(np.concatenate(band_parts), ~exact) if params.near
                        else (np.zeros_like(exact), np.zeros(0, dtype=np.int64)))
    bounds = np.cumsum([0] + [len(part) for part in exact_parts])
    for task, start, stop in zip(tasks, bounds[:-1], bounds[1:]):
        _save_npz(work_dir / "remove" / f"{task.name}.npz",
                  **{EXACT: np.flatnonzero(exact[start:stop]), NEAR: np.flatnonzero(near[start:stop])})
    marker = {"key": key, "parameters": params.key(), "shards": [t.name for t in tasks],
              "documents": int(bounds[-1]), "removed": {EXACT: int(exact.sum()), NEAR: int(near.sum())},
              "cluster_sizes": {EXACT: size_histogram(exact_sizes), NEAR: size_histogram(near_sizes)}}
    write_bytes_atomic(marker_path, (json.dumps(marker, indent=2) + "\n").encode())
    return marker, False


def _read_marker(path: Path) -> dict[str, Any] | None:
    """The clustering marker, or None when there is none (or it is unreadable)."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


# Phase 3: filter.

def filter_task(task: Task, output_dir: Path) -> ShardStats:
    """Write `<output_dir>/<stem>.parquet`: the shard without the rows clustering removed, in order."""
    with np.load(output_dir / WORK_DIR / "remove" / f"{task.name}.npz") as removal:
        removed = {reason: removal[reason] for reason in (EXACT, NEAR)}
    dropped = set(np.concatenate(list(removed.values())).tolist())
    name = f"{task.name}{SUFFIX}"
    stats = ShardStats(outputs=[name])
    stats.removed.update({reason: len(rows) for reason, rows in removed.items() if len(rows)})

    def survivors():
        row = 0
        for batch in iter_batches(task.input, SCHEMA.names):
            for document in map(Document._make, zip(*(batch.column(f).to_pylist() for f in Document._fields))):
                stats.count_in(document.text, document.source, document.lang)
                if row not in dropped:
                    stats.count_out(document.text, document.source, document.lang)
                    yield document
                row += 1

    write_shard(output_dir / name, survivors())
    return stats


def filter_shards(tasks: list[Task], all_tasks: list[Task], output_dir: Path, params: DedupParams,
                  workers: Workers | int = 1, overwrite: bool = False) -> StageReport:
    """Phase 3 for `tasks`, once clustering of `all_tasks` with `params` has finished."""
    marker_path = output_dir / WORK_DIR / "cluster.json"
    marker = _read_marker(marker_path)
    if marker is None or marker["key"] != _cluster_key(all_tasks, params):
        state = "is missing" if marker is None else "is for other inputs or parameters"
        raise DataToolsError(f"dedup filter needs a finished clustering of these inputs, but {marker_path} {state}; "
                             f"run `roots-data dedup --phase cluster` (after --phase signatures) first")
    return run_stage(STAGE, tasks, filter_task, output_dir, workers, overwrite)


def run(args) -> int:
    """Run the dedup phase(s) `args` ask for and print the stats table."""
    params = DedupParams(MinHasher(args.shingle_size, args.bands, args.rows), near=not args.no_near)
    if args.input.resolve() == args.output.resolve():
        raise DataToolsError(f"--output {args.output} is the --input directory; dedup needs a separate one")
    if args.phase == "all" and args.num_shards > 1:
        raise DataToolsError(
            f"--phase all with --num-shards {args.num_shards} cannot cluster: clustering needs every shard's "
            f"signatures. Run --phase signatures (job array), then --phase cluster (one job), then --phase filter "
            f"(job array)")
    all_tasks = shard_tasks(args.input)
    tasks = select_slice(all_tasks, args.shard_index, args.num_shards)
    with Workers(args.num_workers) as workers:  # one set of processes for both parallel phases
        _run_phases(args, params, tasks, all_tasks, workers)
    return 0


def _run_phases(args, params: DedupParams, tasks: list[Task], all_tasks: list[Task], workers: Workers) -> None:
    """The phases `args.phase` names, in order, printing what each did."""
    if args.phase in ("all", "signatures"):
        report = compute_signatures(tasks, args.output, params, workers, args.overwrite)
        print(f"{STAGE} signatures: computed {report.ran} shard(s), kept {report.reused} up to date")
    if args.phase in ("all", "cluster"):
        marker, reused = cluster(all_tasks, args.output, params, args.overwrite)
        print(f"{STAGE} cluster: {'kept the finished clustering: ' if reused else ''}{marker['documents']:,} "
              f"documents in {len(all_tasks)} shard(s), {marker['removed'][EXACT]:,} exact and "
              f"{marker['removed'][NEAR]:,} near duplicates to remove")
    if args.phase in ("all", "filter"):
        report = filter_shards(tasks, all_tasks, args.output, params, workers, args.overwrite)
        print(f"{STAGE} filter: wrote {report.ran} shard(s), kept {report.reused} finished; "
              f"stats in {args.output / STATS_FILE}")
        print(format_stats(STAGE, report.totals))


def register(commands) -> None:
    """Add the `dedup` subcommand to an argparse subparsers object."""
    parser = commands.add_parser(
        "dedup", help="remove exact and near-duplicate documents across all shards (MinHash LSH)",
        description="Exact dedup on normalized text (NFKC, casefold, collapsed whitespace) and near dedup with "
                    "MinHash LSH over word shingles, across all shards; the first copy in (shard name, row) "
                    "order survives.")
    add_stage_arguments(parser)
    parser.add_argument("--phase", choices=PHASES, default="all",
                        help="signatures (per shard) → cluster (one process, all shards) → filter (per shard); "
                             "all runs the three in order (default)")
    parser.add_argument("--shingle-size", type=int, default=5, metavar="N", help="words per shingle (default 5)")
    parser.add_argument("--bands", type=int, default=14, metavar="B", help="LSH bands (default 14)")
    parser.add_argument("--rows", type=int, default=8, metavar="R", help="MinHash rows per band (default 8)")
    parser.add_argument("--no-near", action="store_true", help="exact dedup only (no MinHash)")
    parser.set_defaults(run=run)
