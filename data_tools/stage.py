"""Running a stage over shards: job-array slicing, worker processes, resume, and stats.

Every stage maps input shards to output shards one task at a time. A task's stats sidecar
(`<output>/.stats/<task>.json`) is written last, atomically, after the task's output files: it
is the completion marker, so a re-run after a kill redoes exactly the unfinished tasks and never
trusts a partial output. `stats.json` is the sum of all sidecars present, rewritten after every
run (a SLURM array's tasks each refresh it; the last one to finish leaves the complete total).
When stderr is a terminal, one progress bar counts the stage's documents across all workers.
"""

from __future__ import annotations

import functools
import json
import multiprocessing
import sys
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from queue import SimpleQueue
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from roots_core.atomic import write_bytes_atomic
from data_tools.errors import DataToolsError
from data_tools.shards import SUFFIX, list_shards

STATS_DIR = ".stats"
STATS_FILE = "stats.json"


@dataclass
class ShardStats:
    """What one task (or, summed, one stage) took in, let through and removed, and why."""

    documents_in: int = 0
    documents_out: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    removed: Counter = field(default_factory=Counter)  # reason -> documents (or records) removed
    by_language: dict[str, Counter] = field(default_factory=dict)  # lang -> {"in": n, "out": n}
    by_source: dict[str, Counter] = field(default_factory=dict)  # source -> {"in": n, "out": n}
    events: Counter = field(default_factory=Counter)  # what steps did to kept documents, e.g. pii:email
    outputs: list[str] = field(default_factory=list)  # file names this task wrote

    def count_in(self, text: str, source: str, lang: str | None) -> None:
        _meter.add(1)
        self.documents_in += 1
        self.bytes_in += len(text.encode("utf-8"))
        self._tally(source, lang, "in")

    def count_read(self, documents: int) -> None:
        """Count `documents` read as a batch, without per-document tallies (a stage that reads only some columns)."""
        _meter.add(documents)
        self.documents_in += documents

    def count_out(self, text: str, source: str, lang: str | None) -> None:
        self.documents_out += 1
        self.bytes_out += len(text.encode("utf-8"))
        self._tally(source, lang, "out")

    def _tally(self, source: str, lang: str | None, key: str) -> None:
        self.by_source.setdefault(source, Counter())[key] += 1
        self.by_language.setdefault(lang or "und", Counter())[key] += 1

    def merge(self, other: ShardStats) -> None:
        self.documents_in += other.documents_in
        self.documents_out += other.documents_out
        self.bytes_in += other.bytes_in
        self.bytes_out += other.bytes_out
        self.removed.update(other.removed)
        self.events.update(other.events)
        for mine, theirs in ((self.by_language, other.by_language), (self.by_source, other.by_source)):
            for key, counts in theirs.items():
                mine.setdefault(key, Counter()).update(counts)
        self.outputs.extend(other.outputs)

    def to_dict(self) -> dict[str, Any]:
        return {
            "documents_in": self.documents_in,
            "documents_out": self.documents_out,
            "bytes_in": self.bytes_in,
            "bytes_out": self.bytes_out,
            "removed": dict(sorted(self.removed.items())),
            "events": dict(sorted(self.events.items())),
            "by_language": {k: dict(v) for k, v in sorted(self.by_language.items())},
            "by_source": {k: dict(v) for k, v in sorted(self.by_source.items())},
            "outputs": sorted(self.outputs),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ShardStats:
        return cls(
            documents_in=data["documents_in"], documents_out=data["documents_out"],
            bytes_in=data["bytes_in"], bytes_out=data["bytes_out"],
            removed=Counter(data["removed"]), events=Counter(data["events"]),
            by_language={k: Counter(v) for k, v in data["by_language"].items()},
            by_source={k: Counter(v) for k, v in data["by_source"].items()},
            outputs=list(data["outputs"]))


@dataclass(frozen=True)
class Task:
    """One unit of work: an input file, named so its sidecar and outputs are findable."""

    name: str  # unique within the stage, e.g. the input's stem
    input: Path


def select_slice(tasks: Sequence[Task], shard_index: int, num_shards: int) -> list[Task]:
    """The tasks of array task `shard_index` of `num_shards`: every num_shards-th, by name."""
    if num_shards < 1 or not 0 <= shard_index < num_shards:
        raise DataToolsError(
            f"--shard-index {shard_index} --num-shards {num_shards} is invalid: need num_shards ≥ 1 and "
            f"0 ≤ shard_index < num_shards")
    return sorted(tasks, key=lambda t: t.name)[shard_index::num_shards]


@dataclass
class StageReport:
    """What a run did: tasks run and reused, and the stage totals over every finished task."""

    stage: str
    ran: int
    reused: int
    totals: ShardStats


TaskFunction = Callable[[Task, Path], ShardStats]


def run_stage(stage: str, tasks: Sequence[Task], work: TaskFunction, output_dir: Path,
              workers: Workers | int = 1, overwrite: bool = False, progress: bool = True) -> StageReport:
    """Run `work(task, output_dir)` for every unfinished task, on `workers` (or that many new ones).

    `work` must write its outputs atomically and return their stats (with `outputs` filled in);
    it must be a module-level function so worker processes can import it. With `progress`, a bar
    counts documents on stderr when it is a terminal (as ShardStats.count_in or count_read counts them).
    """
    if isinstance(workers, int):
        with Workers(workers) as own:
            return run_stage(stage, tasks, work, output_dir, own, overwrite, progress)
    names = [t.name for t in tasks]
    if len(set(names)) != len(names):
        duplicates = sorted({n for n in names if names.count(n) > 1})
        raise DataToolsError(f"inputs {duplicates} would write the same output shard; give inputs distinct names")
    output_dir.mkdir(parents=True, exist_ok=True)
    todo = [t for t in tasks if overwrite or not is_finished(output_dir, t.name)]
    with _Progress(stage, todo, workers.counter if progress else None) as bar:
        for task, (stats, counted) in workers.map(functools.partial(_run_metered, work), todo, output_dir):
            write_task_stats(output_dir, task.name, stats)
            bar.task_done(stats, counted)
    totals = write_stage_stats(output_dir, stage)
    return StageReport(stage, ran=len(todo), reused=len(tasks) - len(todo), totals=totals)


class Workers:
    """Where tasks run: this process, helped by `count - 1` spawned processes when `count` > 1.

    This process works too, taking tasks from the same queue as its helpers, so that N workers
    start N - 1 processes and no core idles while they start up. One Workers can serve several
    run_stage calls (the phases of a stage), which then pay the start-up once. When stderr is a
    terminal, every worker counts the documents it reads into `counter`, which progress bars read.
    """

    def __init__(self, count: int = 1) -> None:
        if count < 1:
            raise DataToolsError(f"--num-workers {count} is invalid: it must be at least 1")
        self.count = count
        self.counter: Any = multiprocessing.get_context("spawn").Value("q", 0) if sys.stderr.isatty() else None
        self._pool: ProcessPoolExecutor | None = None

    def map(self, work: Callable[[Task, Path], Any], tasks: list[Task], output_dir: Path) -> Iterator[tuple[Task, Any]]:
        """`(task, work(task, output_dir))` for every task, in the order they finish."""
        if self.count == 1 or len(tasks) <= 1:
            for task in tasks:
                yield task, work(task, output_dir)
            return
        if self._pool is None:  # started at the first parallel map; it spawns processes as tasks arrive
            # spawn, not fork: forked children inherit pyarrow's thread pools mid-state. An executor, not a
            # Pool: its workers are not daemonic, so a task may start processes of its own (HTML sandbox).
            self._pool = ProcessPoolExecutor(self.count - 1, mp_context=multiprocessing.get_context("spawn"),
                                             initializer=_watch, initargs=(self.counter,))
        queue, finished = deque(tasks), SimpleQueue()
        helpers = [threading.Thread(target=self._relay, args=(work, queue, output_dir, finished), daemon=True)
                   for _ in range(min(self.count - 1, len(tasks) - 1))]
        for helper in helpers:
            helper.start()
        try:
            results = 0
            while True:
                try:
                    task = queue.popleft()
                except IndexError:  # every task is taken; what the helpers run is collected below
                    break
                yield task, work(task, output_dir)
                results += 1
                while not finished.empty():
                    yield _settled(finished.get())
                    results += 1
            while results < len(tasks):
                yield _settled(finished.get())
                results += 1
        finally:
            queue.clear()  # after an error (or an abandoned map) the helpers start no new task

    def _relay(self, work: Callable[[Task, Path], Any], queue: deque, output_dir: Path, finished: SimpleQueue) -> None:
        """Keep one helper process busy with the queue's tasks, putting (task, result, error) into `finished`."""
        while True:
            try:
                task = queue.popleft()
            except IndexError:
                return
            try:
                finished.put((task, self._pool.submit(work, task, output_dir).result(), None))
            except BaseException as error:  # re-raised by the map, in the main thread
                finished.put((task, None, error))
                return

    def __enter__(self) -> Workers:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None


def _settled(outcome: tuple[Task, Any, BaseException | None]) -> tuple[Task, Any]:
    """A helper's (task, result), or its task's error raised here."""
    task, result, error = outcome
    if error is not None:
        raise error
    return task, result


def _sidecar(output_dir: Path, name: str) -> Path:
    return output_dir / STATS_DIR / f"{name}.json"


def is_finished(output_dir: Path, name: str) -> bool:
    """A task is finished when its sidecar exists and every output it lists is present."""
    sidecar = _sidecar(output_dir, name)
    if not sidecar.is_file():
        return False
    try:
        outputs = json.loads(sidecar.read_text())["outputs"]
    except (ValueError, KeyError):
        return False
    return all((output_dir / output).is_file() for output in outputs)


def write_task_stats(output_dir: Path, name: str, stats: ShardStats) -> None:
    write_bytes_atomic(_sidecar(output_dir, name), json.dumps(stats.to_dict(), indent=1).encode())


def read_stage_stats(output_dir: Path) -> ShardStats:
    """The sum of every finished task's stats in `output_dir`."""
    totals = ShardStats()
    for sidecar in sorted((output_dir / STATS_DIR).glob("*.json")):
        totals.merge(ShardStats.from_dict(json.loads(sidecar.read_text())))
    return totals


def write_stage_stats(output_dir: Path, stage: str) -> ShardStats:
    totals = read_stage_stats(output_dir)
    tasks = len(list((output_dir / STATS_DIR).glob("*.json")))
    payload = {"stage": stage, "tasks": tasks, **totals.to_dict()}
    write_bytes_atomic(output_dir / STATS_FILE, (json.dumps(payload, indent=2) + "\n").encode())
    return totals


def format_stats(stage: str, stats: ShardStats) -> str:
    """A table people can read: totals, removals by reason, and in/out per language and source."""
    def mb(n: int) -> str:
        return f"{n / 1e6:,.1f} MB"

    kept = stats.documents_out / stats.documents_in if stats.documents_in else 0.0
    lines = [
        f"{stage}: {stats.documents_in:,} documents in ({mb(stats.bytes_in)}) -> "
        f"{stats.documents_out:,} out ({mb(stats.bytes_out)}), {kept:.1%} kept",
    ]
    if stats.removed:
        lines.append(f"  {'removed because':<32}{'count':>10}")
        for reason, count in stats.removed.most_common():
            lines.append(f"  {reason:<32}{count:>10,}")
    if stats.events:
        lines.append(f"  {'changed or noted (documents kept)':<32}{'count':>10}")
        for event, count in stats.events.most_common():
            lines.append(f"  {event:<32}{count:>10,}")
    for title, table in (("language", stats.by_language), ("source", stats.by_source)):
        if table:
            lines.append(f"  {title:<32}{'in':>10}{'out':>10}")
            for key, counts in sorted(table.items(), key=lambda kv: -kv[1]["in"]):
                lines.append(f"  {key:<32}{counts['in']:>10,}{counts['out']:>10,}")
    return "\n".join(lines)


_FLUSH_SECONDS = 0.2  # how often a process hands its document count to the bar (and the bar redraws)


class _Meter:
    """This process's documents read (ShardStats.count_in), handed in batches to the stage's shared counter."""

    def __init__(self) -> None:
        self.shared: Any = None  # the multiprocessing Value the bar reads; None when no bar is shown
        self.total = 0  # documents handed over so far
        self._pending = 0
        self._flushed_at = 0.0

    def add(self, n: int) -> None:
        """Count `n` documents read; hand them over if the last hand-over is old enough."""
        if self.shared is None:
            return
        self._pending += n
        if time.monotonic() - self._flushed_at >= _FLUSH_SECONDS:
            self.flush()

    def flush(self) -> None:
        """Hand every counted document to the shared counter now."""
        if self.shared is None or not self._pending:
            return
        with self.shared.get_lock():
            self.shared.value += self._pending
        self.total += self._pending
        self._pending = 0
        self._flushed_at = time.monotonic()


_meter = _Meter()


def _watch(shared: Any) -> None:
    """Worker initializer: count documents read into the parent's `shared` counter (None: no bar)."""
    _meter.shared = shared


def _run_metered(work: TaskFunction, task: Task, output_dir: Path) -> tuple[ShardStats, int]:
    """Run one task; return its stats and how many documents it counted into the bar while running."""
    before = _meter.total
    stats = work(task, output_dir)
    _meter.flush()
    return stats, _meter.total - before


def _document_total(tasks: Sequence[Task]) -> int | None:
    """The documents the tasks will read when every input is a document shard (from Parquet footers), else None."""
    if not all(task.input.suffix == SUFFIX and task.input.is_file() for task in tasks):
        return None
    try:
        return sum(pq.read_metadata(task.input).num_rows for task in tasks)
    except (OSError, pa.ArrowInvalid):
        return None


class _Progress:
    """One bar for the whole stage (documents, rate, ETA when the total is known) when stderr is a terminal.

    Tasks count documents as they read them (ShardStats.count_in, count_read) into `counter`, in whichever
    process they run; a thread redraws the bar from the count, and each finished task tops it up to
    its `documents_in` (records skipped unread, or stages that count a whole shard at the end).
    Without a counter (stderr is not a terminal) nothing is drawn.
    """

    def __init__(self, stage: str, tasks: Sequence[Task], counter: Any) -> None:
        self._counter = counter if tasks else None
        self._tasks, self._done, self._topped_up = len(tasks), 0, 0
        if self._counter is None:
            return
        from tqdm import tqdm

        self._start = counter.value  # documents counted by earlier stages on the same workers
        self._bar = tqdm(total=_document_total(tasks), desc=stage, unit="doc", file=sys.stderr)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._redraw_until_stopped, daemon=True)

    def __enter__(self) -> _Progress:
        _meter.shared = self._counter  # for the tasks that run in this process
        if self._counter is not None:
            self._thread.start()
        return self

    def task_done(self, stats: ShardStats, counted: int) -> None:
        """Note a finished task: its documents not counted while it ran go onto the bar too."""
        self._topped_up += stats.documents_in - counted
        self._done += 1

    def _show(self) -> None:
        self._bar.set_postfix_str(f"{self._done}/{self._tasks} tasks", refresh=False)
        self._bar.update(self._counter.value - self._start + self._topped_up - self._bar.n)

    def _redraw_until_stopped(self) -> None:
        while not self._stop.wait(_FLUSH_SECONDS):
            self._show()

    def __exit__(self, *exc: object) -> None:
        _meter.shared = None
        if self._counter is not None:
            self._stop.set()
            self._thread.join()
            self._show()
            self._bar.close()


def add_stage_arguments(parser, input_help: str = "directory of document shards (Parquet)") -> None:
    """The options every stage shares: input/output, workers, job-array slice, overwrite."""
    parser.add_argument("--input", type=Path, required=True, metavar="DIR", help=input_help)
    parser.add_argument("--output", type=Path, required=True, metavar="DIR")
    parser.add_argument("--num-workers", type=int, default=1, metavar="N",
                        help="worker processes on this machine, this one included (N - 1 are started)")
    parser.add_argument("--shard-index", type=int, default=0, metavar="I",
                        help="this job-array task's slice of the inputs (e.g. $SLURM_ARRAY_TASK_ID)")
    parser.add_argument("--num-shards", type=int, default=1, metavar="N", help="number of slices (array size)")
    parser.add_argument("--overwrite", action="store_true", help="redo tasks whose output already exists")


def shard_tasks(input_dir: Path) -> list[Task]:
    """One task per document shard in `input_dir`, named by the shard's stem."""
    return [Task(path.stem, path) for path in list_shards(input_dir)]


def run_shard_stage(stage: str, args, work: TaskFunction) -> int:
    """CLI driver for a shard → shard stage: slice, run, print the stats table."""
    tasks = select_slice(shard_tasks(args.input), args.shard_index, args.num_shards)
    print_report(run_stage(stage, tasks, work, args.output, args.num_workers, args.overwrite), args.output)
    return 0


def print_report(report: StageReport, output_dir: Path) -> None:
    """What a run did (tasks run, finished ones kept) and the stage's stats table."""
    print(f"{report.stage}: ran {report.ran} task(s), kept {report.reused} finished one(s) (--overwrite to redo); "
          f"stats in {output_dir / STATS_FILE}")
    print(format_stats(report.stage, report.totals))
