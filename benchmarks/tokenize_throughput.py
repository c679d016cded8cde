"""Tokenize throughput: the word-path encoder against sentencepiece's encode, the stage against Megatron-LM's
preprocess_data, and token store read rates.

    python benchmarks/tokenize_throughput.py --text-mb 60 --vocab-size 32000 --workers 1 2

Builds document shards by repeating the demo corpus (plus the real fixtures in ../shared/fixtures
when present: the demo text alone is too small for a 32,000-piece vocabulary), trains a tokenizer
on the unrepeated documents, then:

- encoder: in this one process, `Tokenizer.encode_batch` (the word path, a fresh cache) against
  sentencepiece's own batch encode (`encode_batch_reference`), batches of 1,000 texts as the stage
  reads them, ids compared; once on the unrepeated documents (every word new to the cache: the
  cold case) and once on the whole corpus (repeated text: mostly cache hits).
- end to end, per worker count: `roots-data tokenize` (read Parquet, encode, write Arrow,
  checksum, manifest, worker start-up included) against Megatron-LM's `tools/preprocess_data.py`
  loop, reimplemented here without Megatron's imports: a JSON-lines file of the same documents
  (written untimed), a Pool of that many workers each `json.loads` a line and encodes its text
  with sentencepiece's `encode_as_ids`, appending eod, `pool.imap(..., chunksize=32)`, the main
  process writing each document as a numpy array to `.bin` and its sizes and document index to
  `.idx`. The ids of both, eod aside, are compared document by document; the ratio is Megatron's
  seconds over ours (target ≥ 2). The floor is sentencepiece's batch `encode` of the texts alone,
  already in memory, in as many processes (what the stage ran at before the word path).

Each timing is the best of `--repeat` runs, the contenders alternating, so that other load on the
machine counts against none. Last, the store's open time (`TokenStore(dir)`) and the rate of
`store[i]` at random i.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import itertools
import json
import multiprocessing
import random
import re
import shutil
import statistics
import struct
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
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
from roots_core.tokenizer import Tokenizer  # noqa: E402
from together import run_together  # noqa: E402

BATCH = 1000  # texts per encode call, as the stage reads its shards
MEGATRON_INDEX_HEADER = b"MMIDIDX\x00\x00"  # Megatron's .idx: magic, version, dtype code, sequences, documents
MEGATRON_DTYPE_CODES = {np.uint16: 8, np.int32: 4}
MEGATRON_HEADER_BYTES = len(MEGATRON_INDEX_HEADER) + 8 + 1 + 8 + 8


def base_documents(work: Path) -> Path:
    """The demo corpus, and the real fixtures when present, extracted into one shard directory."""
    corpus = build_demo_corpus(work / "raw")
    docs = work / "base"
    extract_files([corpus["commoncrawl"]], "warc", docs)
    extract_files([corpus["wikipedia"]], "wikipedia", docs)
    for fixture, source_format in (("dolma_sample-0000.warc.gz", "warc"), ("enwiki-table-markup.xml.bz2", "wikipedia")):
        if (FIXTURES / fixture).is_file():
            extract_files([FIXTURES / fixture], source_format, docs)
    return docs


def repeated_shards(base: Path, output: Path, megabytes: float, shards: int, novel_words: float) -> float:
    """Write `shards` shards repeating the base documents (fresh ids) to about `megabytes` of text; return MB.

    In every copy after the first, a `novel_words` fraction of the words gets a suffix no other word has, so the
    corpus keeps meeting new words as a real one does (a repeated text would be all cache hits for the word path).
    """
    documents = [Document._make(row) for shard in list_shards(base)
                 for batch in iter_batches(shard, list(Document._fields))
                 for row in zip(*(batch.column(f).to_pylist() for f in Document._fields))]
    size = sum(len(d.text.encode("utf-8")) for d in documents)
    copies = max(1, round(megabytes * 1e6 / size))
    rng, counter = random.Random(0), itertools.count()

    def novel(word: re.Match) -> str:
        return f"{word[0]}{next(counter):x}" if rng.random() < novel_words else word[0]

    def copy(document: Document, index: int) -> Document:
        text = document.text if index == 0 else re.sub(r"\S+", novel, document.text)
        return document._replace(id=f"{document.id}#{index}", text=text)

    for index in range(shards):
        copy_range = range(index * copies // shards, (index + 1) * copies // shards)
        write_shard(output / f"part-{index:03d}.parquet", (copy(d, c) for c in copy_range for d in documents))
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
    spans = run_together(_encode_worker, [(str(model), shards[i::workers]) for i in range(workers)])
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


def shard_texts(docs: Path) -> list[str]:
    """Every document text of the shards in `docs`, in shard order."""
    return [t for shard in list_shards(docs) for t in pq.read_table(shard, columns=["text"]).column("text").to_pylist()]


def encoder_seconds(model: Path, texts: list[str], repeat: int) -> tuple[int, float, float]:
    """(tokens, word-path seconds with a fresh cache, sentencepiece seconds) over `texts` in batches; ids compared."""
    fast = reference = float("inf")
    for _ in range(repeat):
        tokenizer = Tokenizer(model)  # an empty word cache each time
        start = time.perf_counter()
        got = [ids for i in range(0, len(texts), BATCH) for ids in tokenizer.encode_batch(texts[i:i + BATCH])]
        fast = min(fast, time.perf_counter() - start)
        start = time.perf_counter()
        want = [ids for i in range(0, len(texts), BATCH)
                for ids in tokenizer.encode_batch_reference(texts[i:i + BATCH])]
        reference = min(reference, time.perf_counter() - start)
        if not tokenizer.word_path or not all(map(np.array_equal, got, want)):
            sys.exit("the word path is off or its ids differ from sentencepiece's")
    return sum(map(len, want)), fast, reference


class _MegatronEncoder:
    """Megatron-LM's preprocess_data `Encoder`: the tokenizer loaded per worker, one JSON line at a time."""

    def __init__(self, model: str) -> None:
        """Remember the model; `initializer` loads it in each worker, as Megatron's does."""
        self.model = model

    def initializer(self) -> None:
        """Load sentencepiece in this worker (Megatron's `_SentencePieceTokenizer`)."""
        import sentencepiece as spm

        _MegatronEncoder.processor = spm.SentencePieceProcessor(model_file=self.model)

    def encode(self, json_line: str) -> tuple[list[int], int]:
        """The line's text ids with eod appended (`--append-eod`), and the line's length."""
        text = json.loads(json_line)["text"]
        ids = _MegatronEncoder.processor.encode_as_ids(text)
        if ids:
            ids.append(_MegatronEncoder.processor.eos_id())
        return ids, len(json_line)


def megatron(model: Path, jsonl: Path, prefix: Path, workers: int) -> float:
    """Seconds for Megatron-LM's preprocess_data loop over `jsonl` with `workers` encoding processes."""
    start = time.perf_counter()
    encoder = _MegatronEncoder(str(model))
    dtype = np.uint16 if Tokenizer(model).vocab_size < 65500 else np.int32
    sizes, document_index = [], [0]
    with open(jsonl, encoding="utf-8") as lines, open(f"{prefix}.bin", "wb") as data, \
            multiprocessing.get_context("fork").Pool(workers, initializer=encoder.initializer) as pool:
        for ids, _ in pool.imap(encoder.encode, lines, 32):
            data.write(np.array(ids, dtype=dtype).tobytes(order="C"))
            sizes.append(len(ids))
            document_index.append(len(sizes))
    sizes_array = np.array(sizes, dtype=np.int32)
    pointers = np.zeros(len(sizes), dtype=np.int64)
    np.cumsum(sizes_array[:-1] * np.dtype(dtype).itemsize, out=pointers[1:])
    with open(f"{prefix}.idx", "wb") as index:
        index.write(MEGATRON_INDEX_HEADER + struct.pack("<Q", 1) + struct.pack("<B", MEGATRON_DTYPE_CODES[dtype])
                    + struct.pack("<Q", len(sizes)) + struct.pack("<Q", len(document_index)))
        for array in (sizes_array, pointers, np.array(document_index, dtype=np.int64)):
            index.write(array.tobytes(order="C"))
    return time.perf_counter() - start


def same_ids(store: Path, prefix: Path, eod: int) -> bool:
    """Whether the store's documents are Megatron's `.bin` documents with their eod removed."""
    opened = TokenStore(store)
    sizes = np.fromfile(f"{prefix}.idx", dtype=np.int32, count=len(opened), offset=MEGATRON_HEADER_BYTES)
    megatron_ids = np.fromfile(f"{prefix}.bin", dtype=opened.dtype)
    ends = np.cumsum(sizes)
    eods = ends[sizes > 0] - 1
    if not np.all(megatron_ids[eods] == eod):
        return False
    ours = np.concatenate([opened[i] for i in range(len(opened))])
    return np.array_equal(np.delete(megatron_ids, eods), ours)


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
    parser.add_argument("--novel-words", type=float, default=0.05,
                        help="fraction of the words made new in each repeated copy (default 0.05)")
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
        megabytes = repeated_shards(base, docs, args.text_mb, args.shards, args.novel_words)
        print(f"corpus: {megabytes:.0f} MB of text in {args.shards} shards, {args.novel_words:.0%} of the words "
              f"new in each repeat; tokenizer: {args.vocab_size} pieces; "
              f"in {work}\n")
        texts = shard_texts(docs)
        jsonl = work / "megatron.jsonl"
        jsonl.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts), encoding="utf-8")
        print("encoder, one process: word path (fresh cache) vs sentencepiece's own encode, same ids")
        print(f"{'texts':>12} {'tokens':>12} {'word s':>8} {'spm s':>8} {'ratio':>6}")
        for label, sample in (("unrepeated", shard_texts(base)), ("corpus", texts)):
            tokens, fast, reference = encoder_seconds(model, sample, args.repeat)
            print(f"{label:>12} {tokens:>12,} {fast:>8.2f} {reference:>8.2f} {reference / fast:>6.2f}")
        print("\nend to end: roots-data tokenize vs Megatron-LM preprocess_data (same documents, same ids)")
        print(f"{'workers':>7} {'tokens':>12} {'stage s':>8} {'stage tok/s':>12} {'megatron s':>10} {'ratio':>6} "
              f"{'floor s':>8} {'ids':>5}")
        eod = Tokenizer(model).special_tokens["eod"]
        for workers in args.workers:
            store, prefix = work / f"store-{workers}", work / f"megatron-{workers}"
            seconds = megatron_seconds = floor_seconds = float("inf")
            for _ in range(args.repeat):
                shutil.rmtree(store, ignore_errors=True)
                tokens, took = stage(model, docs, store, workers)
                megatron_seconds = min(megatron_seconds, megatron(model, jsonl, prefix, workers))
                floor_tokens, floor_took = encode_floor(model, docs, workers)
                assert floor_tokens == tokens, (floor_tokens, tokens)
                seconds, floor_seconds = min(seconds, took), min(floor_seconds, floor_took)
            identical = same_ids(store, prefix, eod)
            print(f"{workers:>7} {tokens:>12,} {seconds:>8.2f} {tokens / seconds:>12,.0f} {megatron_seconds:>10.2f} "
                  f"{megatron_seconds / seconds:>6.2f} {floor_seconds:>8.2f} {'same' if identical else 'DIFF':>5}")
            if not identical:
                sys.exit("roots-data tokenize and Megatron-LM's preprocess_data gave different ids")
        opened, rate, documents = store_rates(work / f"store-{args.workers[0]}", args.reads)
        print(f"\nstore: {documents:,} documents; open {opened * 1e3:.1f} ms; random store[i] {rate:,.0f} docs/s")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
