"""Tokenize throughput: the whole tokenize stage against sentencepiece's own encode, and token store read rates.

    python benchmarks/tokenize_throughput.py --text-mb 60 --vocab-size 32000 --workers 1 2

Builds document shards by repeating the demo corpus (plus the real fixtures in ../shared/fixtures
when present: the demo text alone is too small for a 32,000-piece vocabulary), trains a tokenizer
on the unrepeated documents, then for each worker count times `roots-data tokenize` end to end
(read Parquet, encode, write Arrow, checksum, manifest, worker start-up included) against the
floor: sentencepiece's batch `encode` of the same texts, already in memory, in as many processes,
with the same output type (numpy arrays, one thread per process) and nothing read or written.
The ratio stage/floor is the share of the encoder's speed the stage keeps (target ≥ 0.8). Each
timing is the best of `--repeat` runs, stage and floor alternating, so that other load on the
machine counts against neither. Last, the store's open time (`TokenStore(dir)`) and the rate of
`store[i]` at random i.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import multiprocessing
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / ".." / "shared" / "fixtures"
sys.path.insert(0, str(ROOT))

from data_tools.cli import main as roots_data  # noqa: E402
from data_tools.demo_corpus import build_demo_corpus  # noqa: E402
from data_tools.extract import extract_files  # noqa: E402
from data_tools.shards import iter_batches, list_shards, write_shard  # noqa: E402
from data_tools.sources.base import Document  # noqa: E402
from data_tools.tokenizer import train_tokenizer  # noqa: E402
from roots_core.token_store import TokenStore  # noqa: E402


def base_documents(work: Path) -> Path:
    """The demo corpus, and the real fixtures when present, extracted into one shard directory."""
    corpus = build_demo_corpus(work / "raw")
    docs = work / "base"
    extract_files([corpus["commoncrawl"]], "warc", docs)
    extract_files([corpus["wikipedia"]], "wikipedia", docs)
    if (FIXTURES / "dolma_sample-0000.warc.gz").is_file():
        extract_files([FIXTURES / "dolma_sample-0000.warc.gz"], "warc", docs)
        extract_files([FIXTURES / "enwiki-table-markup.xml.bz2"], "wikipedia", docs)
    return docs


def repeated_shards(base: Path, output: Path, megabytes: float, shards: int) -> float:
    """Write `shards` shards repeating the base documents (fresh ids) to about `megabytes` of text; return MB."""
    documents = [Document._make(row) for shard in list_shards(base)
                 for batch in iter_batches(shard, list(Document._fields))
                 for row in zip(*(batch.column(f).to_pylist() for f in Document._fields))]
    size = sum(len(d.text.encode("utf-8")) for d in documents)
    copies = max(1, round(megabytes * 1e6 / size))
    for index in range(shards):
        copy_range = range(index * copies // shards, (index + 1) * copies // shards)
        write_shard(output / f"part-{index:03d}.parquet",
                    (d._replace(id=f"{d.id}#{c}") for c in copy_range for d in documents))
    return copies * size / 1e6


def _encode_worker(model: str, shards: list[str], barrier, results) -> None:
    """Floor worker: read its shards' texts and load the model (untimed), then time one batch encode."""
    import sentencepiece as spm

    processor = spm.SentencePieceProcessor(model_file=model)
    texts = [t for shard in shards for t in pq.read_table(shard, columns=["text"]).column("text").to_pylist()]
    barrier.wait()
    start = time.monotonic()
    tokens = sum(len(ids) for ids in processor.encode(texts, out_type="numpy", num_threads=1))
    results.put((start, time.monotonic(), tokens))


def encode_floor(model: Path, docs: Path, workers: int) -> tuple[int, float]:
    """(tokens, seconds) for sentencepiece alone over the shards' texts in `workers` processes."""
    shards = [str(p) for p in list_shards(docs)]
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(workers), context.Queue()
    processes = [context.Process(target=_encode_worker, args=(str(model), shards[i::workers], barrier, results))
                 for i in range(workers)]
    for process in processes:
        process.start()
    spans = [results.get() for _ in processes]
    for process in processes:
        process.join()
    return sum(s[2] for s in spans), max(s[1] for s in spans) - min(s[0] for s in spans)


def stage(model: Path, docs: Path, store: Path, workers: int) -> tuple[int, float]:
    """(tokens, seconds) for `roots-data tokenize` end to end."""
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):  # its own report
        status = roots_data(["tokenize", "--input", str(docs), "--tokenizer", str(model), "--output", str(store),
                             "--num-workers", str(workers)])
    seconds = time.perf_counter() - start
    if status != 0:
        sys.exit(f"roots-data tokenize exited {status}")
    return TokenStore(store).num_tokens, seconds


def store_rates(store: Path, reads: int) -> tuple[float, float, int]:
    """(median open seconds, store[i] reads per second at random i, documents)."""
    opens = []
    for _ in range(5):
        start = time.perf_counter()
        opened = TokenStore(store)
        opens.append(time.perf_counter() - start)
    rng = random.Random(0)
    indices = [rng.randrange(len(opened)) for _ in range(reads)]
    start = time.perf_counter()
    for index in indices:
        opened[index]
    return statistics.median(opens), reads / (time.perf_counter() - start), len(opened)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--text-mb", type=float, default=60, help="text to tokenize (default 60 MB)")
    parser.add_argument("--vocab-size", type=int, default=32000)
    parser.add_argument("--shards", type=int, default=8, help="document shards (so workers have work to share)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--reads", type=int, default=200_000, help="random store[i] reads to time")
    parser.add_argument("--repeat", type=int, default=2, help="runs per timing; the fastest counts")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="roots-tokbench-"))
    try:
        base = base_documents(work)
        model = train_tokenizer(base, work / "tokenizer" / "spm", args.vocab_size)
        docs = work / "docs"
        megabytes = repeated_shards(base, docs, args.text_mb, args.shards)
        print(f"corpus: {megabytes:.0f} MB of text in {args.shards} shards; tokenizer: {args.vocab_size} pieces; "
              f"in {work}\n")
        print(f"{'workers':>7} {'tokens':>12} {'stage s':>8} {'stage tok/s':>12} {'floor s':>8} {'floor tok/s':>12} "
              f"{'ratio':>6}")
        for workers in args.workers:
            store = work / f"store-{workers}"
            seconds = floor_seconds = float("inf")
            for _ in range(args.repeat):
                shutil.rmtree(store, ignore_errors=True)
                tokens, took = stage(model, docs, store, workers)
                floor_tokens, floor_took = encode_floor(model, docs, workers)
                assert floor_tokens == tokens, (floor_tokens, tokens)
                seconds, floor_seconds = min(seconds, took), min(floor_seconds, floor_took)
            print(f"{workers:>7} {tokens:>12,} {seconds:>8.2f} {tokens / seconds:>12,.0f} {floor_seconds:>8.2f} "
                  f"{tokens / floor_seconds:>12,.0f} {floor_seconds / seconds:>6.2f}")
        opened, rate, documents = store_rates(work / f"store-{args.workers[0]}", args.reads)
        print(f"\nstore: {documents:,} documents; open {opened * 1e3:.1f} ms; random store[i] {rate:,.0f} docs/s")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
