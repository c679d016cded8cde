"""Corpus pipeline throughput: each stage on a corpus built by repeating the real fixtures.

    python benchmarks/corpus_pipeline.py --warc-mb 150 --wiki-mb 50 --workers 1 2 [--repeat 3]

Prints documents/s and MB/s (of stage input: compressed inputs for extract, text for the others)
per stage and worker count, next to the speed of the stage's slowest library call run alone in
this process on the same documents (resiliparse for WARC, py3langid for clean, the MinHash
signature for dedup), so the table shows how much of each stage is overhead. Wikipedia extraction
no longer calls a parser; its row compares with mwparserfromhell's parse + strip_code, the
previous extractor's core, so its stage/lib above 100 % is the speedup over that, measured in one
process. For N workers the library call also runs in N processes at once, each on all the documents
(lib×N): stage/lib×N leaves out what running N processes at once costs the machine (shared caches,
memory bandwidth, clock), which no stage can avoid. With --repeat N, every stage and library call
is timed N times and the best run counts: on a shared machine, other load only ever slows a run
down. Needs ../shared/fixtures.
"""

from __future__ import annotations

import argparse
import bz2
import json
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / ".." / "shared" / "fixtures"
sys.path.insert(0, str(ROOT))

from data_tools.cli import main as roots_data  # noqa: E402
from data_tools.shards import list_shards  # noqa: E402
from together import run_together  # noqa: E402

FILES_PER_SOURCE = 4  # so that 2 workers have work to share


def build_warcs(out: Path, megabytes: float) -> list[Path]:
    """Repeat the real WARCs' gzip members (each a complete record) to about `megabytes` of gzip."""
    members = (FIXTURES / "dolma_sample-0000.warc.gz").read_bytes() + (
        FIXTURES / "cc-main-2024-22_whirlwind.warc.gz").read_bytes()
    copies = max(1, int(megabytes * 1e6 / len(members) / FILES_PER_SOURCE))
    paths = []
    for i in range(FILES_PER_SOURCE):
        path = out / f"crawl-{i:02d}.warc.gz"
        path.write_bytes(members * copies)
        paths.append(path)
    return paths


def build_dumps(out: Path, megabytes: float) -> list[Path]:
    """Repeat the real Wikipedia pages, with fresh page ids, into dumps of about `megabytes` of XML."""
    text = bz2.open(FIXTURES / "enwiki-table-markup.xml.bz2").read().decode("utf-8")
    first, last = text.index("<page>"), text.rindex("</page>") + len("</page>")
    head, tail = text[:first], text[last:]
    pages = re.findall(r"<page>.*?</page>", text[first:last], flags=re.S)
    copies = max(1, int(megabytes * 1e6 / sum(len(p) for p in pages) / FILES_PER_SOURCE))
    paths, page_id = [], 0
    for i in range(FILES_PER_SOURCE):
        path = out / f"wiki-{i:02d}.xml"
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(head)
            for _ in range(copies):
                for page in pages:
                    page_id += 1
                    handle.write(re.sub(r"<id>\d+</id>", f"<id>{page_id}</id>", page, count=1))
            handle.write(tail)
        paths.append(path)
    return paths


def size_mb(paths: list[Path]) -> float:
    return sum(p.stat().st_size for p in paths) / 1e6


def documents_in(directory: Path) -> int:
    return sum(pq.read_metadata(p).num_rows for p in list_shards(directory))


def timed(run: Callable[[], object], repeat: int = 1, before: Callable[[], object] = lambda: None) -> float:
    """The best of `repeat` timings of `run()`, each after an untimed `before()`: other load on a shared machine
    only ever slows a run down."""
    best = float("inf")
    for _ in range(repeat):
        before()
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return best


def library_call(stage: str, inputs: list[Path], docs: Path) -> tuple[int, Callable[[], object]]:
    """(documents, call) for the stage's slowest library call, its inputs loaded: on one input file for
    extraction, on every document the stage read otherwise."""
    if stage == "extract warc":
        from warcio.archiveiterator import ArchiveIterator

        from data_tools.sources.html_extract import html_to_text

        pages = [r.content_stream().read() for r in ArchiveIterator(open(inputs[0], "rb"))
                 if r.rec_type == "response" and r.http_headers.get_statuscode() == "200"
                 and "html" in (r.http_headers.get_header("Content-Type") or "")]
        return len(pages), lambda: [html_to_text(p, None) for p in pages]
    if stage == "extract wikipedia":
        import mwparserfromhell

        from data_tools.sources import wikipedia

        with open(inputs[0], "rb") as stream:
            texts = [wikipedia._child(p, "revision").find("{*}text").text or ""
                     for p in wikipedia._elements(stream) if wikipedia._local(p.tag) == "page"]
        return len(texts), lambda: [mwparserfromhell.parse(t).strip_code() for t in texts]
    texts = [text for shard in list_shards(docs)
             for text in pq.read_table(shard, columns=["text"]).column("text").to_pylist()]
    if stage == "clean":
        from py3langid.langid import MODEL_FILE, LanguageIdentifier

        from data_tools.filters.langid import identification_sample

        identifier = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)  # loaded outside the timing
        return len(texts), lambda: [identifier.classify(identification_sample(t)) for t in texts]
    if stage == "dedup":
        from data_tools import minhash

        return len(texts), lambda: minhash_signatures(minhash, texts)
    raise ValueError(stage)


def library_side_by_side(stage: str, inputs: list[Path], docs: Path, processes: int, repeat: int) -> float:
    """Seconds per run of the library call when `processes` processes run it at the same moment (the mean of
    their best runs): the speed this machine gives each of that many workers, with no stage around the call."""
    seconds = run_together(_run_in_step, [(stage, inputs, docs, repeat)] * processes)
    return sum(seconds) / len(seconds)


def _run_in_step(stage: str, inputs: list[Path], docs: Path, repeat: int, start_together, results) -> None:
    """One process of library_side_by_side: load, then time `repeat` runs, each started with the others."""
    _, call = library_call(stage, inputs, docs)
    results.put(timed(call, repeat, before=start_together.wait))


def minhash_signatures(minhash, texts: list[str]) -> None:
    """The dedup stage's per-document work: normalize, exact hash, MinHash band keys."""
    normalized = [minhash.normalize(t).encode("utf-8") for t in texts]
    minhash.exact_hashes(normalized)
    hasher = minhash.MinHasher()
    hasher.band_keys(hasher.signatures(normalized))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--warc-mb", type=float, default=150)
    parser.add_argument("--wiki-mb", type=float, default=50)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--stages", nargs="+", default=["extract warc", "extract wikipedia", "clean", "dedup"])
    parser.add_argument("--repeat", type=int, default=1, metavar="N",
                        help="run each stage (again with --overwrite) and each library call N times; the best counts")
    args = parser.parse_args()
    if not FIXTURES.is_dir():
        sys.exit(f"needs the real fixtures in {FIXTURES}")
    work = Path(tempfile.mkdtemp(prefix="roots-bench-"))
    try:
        raw = work / "raw"
        raw.mkdir()
        warcs, dumps = build_warcs(raw, args.warc_mb), build_dumps(raw, args.wiki_mb)
        print(f"corpus: {size_mb(warcs):.0f} MB of WARC (gzip), {size_mb(dumps):.0f} MB of Wikipedia XML "
              f"in {work}\n")
        header = (f"{'stage':<20}{'workers':>8}{'docs':>10}{'seconds':>10}{'docs/s':>10}{'MB/s':>8}"
                  f"{'lib docs/s':>12}{'stage/lib':>11}{'lib×N docs/s':>13}{'stage/lib×N':>12}")
        rows = []
        for workers in args.workers:
            docs = work / f"docs-{workers}"
            stages: dict[str, tuple[list[str], list[Path], Path]] = {
                "extract warc": (["extract", "--format", "warc", "--output", str(docs),
                                  *map(str, warcs)], warcs, docs),
                "extract wikipedia": (["extract", "--format", "wikipedia", "--output", str(docs),
                                       *map(str, dumps)], dumps, docs),
                "clean": (["clean", "--input", str(docs), "--output", str(work / f"clean-{workers}")], [], docs),
                "dedup": (["dedup", "--input", str(work / f"clean-{workers}"),
                           "--output", str(work / f"dedup-{workers}")], [], work / f"clean-{workers}"),
            }
            for stage in args.stages:
                argv, inputs, source_dir = stages[stage]
                if stage.startswith("extract"):
                    before = documents_in(docs) if docs.is_dir() and list(docs.glob("*.parquet")) else 0
                    megabytes = size_mb(inputs)
                else:
                    before = 0
                    megabytes = json.loads((source_dir / "stats.json").read_text())["bytes_out"] / 1e6
                runs = iter([[]] + [["--overwrite"]] * (args.repeat - 1))  # a rerun redoes every task
                seconds = timed(lambda: roots_data([*argv, "--num-workers", str(workers), *next(runs)]), args.repeat)
                output_dir = Path(argv[argv.index("--output") + 1])
                documents = documents_in(output_dir) - before if stage.startswith("extract") else \
                    documents_in(source_dir)
                library_inputs = warcs if "warc" in stage else dumps
                lib_docs, call = library_call(stage, library_inputs, source_dir)
                lib_rate = lib_docs / timed(call, args.repeat)
                side_rate = lib_docs / library_side_by_side(stage, library_inputs, source_dir, workers, args.repeat) \
                    if workers > 1 else lib_rate
                rate = documents / seconds
                rows.append(f"{stage:<20}{workers:>8}{documents:>10,}{seconds:>10.1f}{rate:>10,.0f}"
                            f"{megabytes / seconds:>8.1f}{lib_rate:>12,.0f}{rate / workers / lib_rate:>10.0%}"
                            f"{side_rate:>13,.0f}{rate / workers / side_rate:>11.0%}")
                print(f"\n{header}\n{rows[-1]}\n", flush=True)
        print("\n" + header)
        print("\n".join(rows))
        print("\nstage/lib: the stage's documents/s per worker as a share of the library call alone "
              "(100% = no overhead beyond the slowest call).\nlib×N: the library call in N processes at once "
              "(N = workers), each on all the documents; stage/lib×N leaves out what running N processes at once "
              "costs this machine.")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
