"""Training-data throughput: index builds for a 1-billion-token store, cached reopen, loader speed, blending.

    python benchmarks/data_pipeline.py --tokens 1e9 --blend-samples 1e8

Writes a synthetic token store into a temporary directory (random ids, document lengths lognormal
with a mean of about 1,100 tokens, written with the store's own writer), then prints a table:
GPT (seq 2048) and BERT (seq 512) index build time and memory, each in a fresh process, and
their cached reopen; samples/s of `ds[i]` alone and through the training loader
(`roots_scale.data.loader.step_batches`, micro-batches of 32, collated to tensors) in one process
and with 2 workers; and the blend interleave built for `--blend-samples` samples of a 7-dataset
ROOTS-like mix. The store is read from the page cache (it was just written), so loader rates are
CPU-bound rates, not disk rates. Megatron users report GPT index builds of minutes (270 s in
NVIDIA/Megatron-LM#795); the target here is under 10 s for 1B tokens.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from roots_core.token_store import TokenizedDocument, TokenStoreWriter  # noqa: E402

SPECIAL = {"pad": 0, "unk": 1, "eod": 2, "mask": 3, "cls": 4, "sep": 5}
DOCUMENTS_PER_FILE = 200_000
ROOTS_LIKE = [30.0, 16.2, 12.9, 10.8, 10.8, 4.9, 4.6]  # en, zh, fr, es, code, pt, ar (percent of ROOTS)
MICRO_BATCH = 32
DATASETS = {"gpt": ("gpt_dataset", "GPTDataset", 2048, ""),
            "bert": ("bert_dataset", "BERTDataset", 512, ", sentence_order=False")}  # no tokenizer model here


def write_store(directory: Path, tokens: int, vocab_size: int = 50_000) -> None:
    """A store of about `tokens` random ids, documents of realistic (lognormal) length."""
    rng = np.random.default_rng(0)
    writer = TokenStoreWriter(directory, vocab_size, SPECIAL, "none", "synthetic", batch_documents=10_000)
    entries, written, file_number = [], 0, 0
    while written < tokens:
        lengths = np.clip(rng.lognormal(6.5, 1.0, DOCUMENTS_PER_FILE), 8, 100_000).astype(np.int64)
        lengths = lengths[np.cumsum(lengths) <= tokens - written] if lengths.sum() > tokens - written else lengths
        if len(lengths) == 0:
            break
        ids = rng.integers(6, vocab_size, int(lengths.sum()), dtype=np.uint16)
        pieces = np.split(ids, np.cumsum(lengths)[:-1])
        documents = (TokenizedDocument(p, f"{file_number}-{i}", "synthetic", None) for i, p in enumerate(pieces))
        entries.append(writer.write_file(f"part{file_number:04d}", documents))
        written += int(lengths.sum())
        file_number += 1
    writer.write_manifest(entries)


def measure_in_subprocess(setup: str, timed: str) -> dict[str, float]:
    """Run `setup`, then time `timed`, in a fresh interpreter: seconds, memory high-water mark and its growth (MB)."""
    code = f"""
import json, sys, time, warnings
sys.path.insert(0, {str(ROOT)!r})
warnings.simplefilter("ignore")
def high_water_mb():  # VmHWM starts afresh at exec, unlike ru_maxrss, which keeps the parent's peak
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
{setup}
before = high_water_mb()
start = time.perf_counter()
{timed}
seconds = time.perf_counter() - start
peak = high_water_mb()
print(json.dumps({{"seconds": seconds, "peak_mb": peak, "delta_mb": peak - before}}))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def index_build(kind: str, store: Path, cache: Path, num_samples: int) -> dict[str, float]:
    """Build (or, when cached, open) one sample index in a fresh process."""
    module, name, seq_length, options = DATASETS[kind]
    setup = (f"from roots_core.token_store import TokenStore\n"
             f"from roots_scale.data.{module} import {name}\n"
             f"store = TokenStore({str(store)!r})")
    timed = f"{name}(store, {seq_length}, {num_samples}, 1234, cache_dir={str(cache)!r}{options})"
    return measure_in_subprocess(setup, timed)


def item_rate(dataset: Any, count: int) -> float:
    """Samples/s of `dataset[i]` at random i, in this process."""
    indices = np.random.default_rng(0).integers(0, len(dataset), count)
    start = time.perf_counter()
    for i in indices:
        dataset[int(i)]
    return count / (time.perf_counter() - start)


def loader_rate(dataset: Any, count: int, workers: int) -> float:
    """Samples/s through the training loader (micro-batches collated to tensors), worker start-up included."""
    from roots_scale.data.loader import step_batches

    batches = step_batches(dataset, MICRO_BATCH, 1, 0, 1, num_workers=workers)
    start = time.perf_counter()
    for _ in range(count // MICRO_BATCH):
        next(batches)
    seconds = time.perf_counter() - start
    batches.close()
    return count // MICRO_BATCH * MICRO_BATCH / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", type=float, default=1e9, help="tokens in the synthetic store")
    parser.add_argument("--samples", type=int, default=20_000, help="samples timed per throughput row")
    parser.add_argument("--blend-samples", type=float, default=1e8, help="length of the timed blend interleave")
    args = parser.parse_args()
    tokens = int(args.tokens)
    work = Path(tempfile.mkdtemp(prefix="roots-data-bench-"))
    rows: list[tuple[str, str]] = []
    try:
        store, cache = work / "store", work / "cache"
        start = time.perf_counter()
        write_store(store, tokens)
        print(f"synthetic store: {tokens:,} tokens written in {time.perf_counter() - start:.0f} s ({work})")
        from roots_scale.data.bert_dataset import BERTDataset
        from roots_scale.data.gpt_dataset import GPTDataset
        from roots_core.token_store import TokenStore

        start = time.perf_counter()
        opened = TokenStore(store)
        rows.append(("open token store", f"{(time.perf_counter() - start) * 1e3:.1f} ms, {len(opened):,} documents"))
        for kind, constructor in (("gpt", GPTDataset), ("bert", BERTDataset)):
            seq_length = DATASETS[kind][2]
            num_samples = tokens // seq_length
            build = index_build(kind, store, cache, num_samples)
            rows.append((f"{kind} index build ({num_samples:,} samples)",
                         (f"{build['seconds']:.2f} s, peak RSS {build['peak_mb']:,.0f} MB "
                          f"(+{build['delta_mb']:,.0f} MB over the open store)")))
            reopen = index_build(kind, store, cache, num_samples)
            rows.append((f"{kind} cached reopen", f"{reopen['seconds'] * 1e3:.1f} ms"))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # BERT: no tokenizer model in a synthetic store
                options = {"sentence_order": False} if kind == "bert" else {}
                dataset = constructor(opened, seq_length, num_samples, 1234, cache_dir=cache, **options)
            rates = [(f"{kind} ds[i], seq {seq_length}", item_rate(dataset, args.samples))]
            rates += [(f"{kind} loader, {workers} workers", loader_rate(dataset, args.samples, workers))
                      for workers in (0, 2)]
            rows += [(name, f"{rate:,.0f} samples/s ({rate * seq_length / 1e6:,.1f} M tokens/s)")
                     for name, rate in rates]
        blend_samples = int(args.blend_samples)
        blend = measure_in_subprocess("from roots_scale.data.blending import interleave",
                                      f"interleave({ROOTS_LIKE}, {blend_samples})")
        rows.append((f"blend interleave, 7 datasets, {blend_samples:,} samples",
                     f"{blend['seconds']:.1f} s, peak RSS {blend['peak_mb']:,.0f} MB (built once, then cached)"))
        width = max(len(name) for name, _ in rows) + 2
        print()
        for name, value in rows:
            print(f"{name:<{width}}{value}")
        print("\nnumbers are from one run; peak memory is the build process's high-water mark")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
