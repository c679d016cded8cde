"""Training-data throughput: index builds for a 1-billion-token store, cached reopen, loader speed.

    python benchmarks/data_pipeline.py --tokens 1e9

Writes a synthetic token store (random ids, document lengths lognormal around 1,000 tokens),
then prints a table: GPT and BERT index build time and peak memory (each in a fresh process),
cached reopen time, samples/s at seq 2048 (GPT) and 512 (BERT) in one process and through the
loader with 2 workers, and the blend interleave's speed. Megatron users report GPT index builds
of minutes (270 s in NVIDIA/Megatron-LM#795); the target here is under 10 s for 1B tokens.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from roots_scale.data.token_store import TokenizedDocument, TokenStoreWriter  # noqa: E402

SPECIAL = {"pad": 0, "unk": 1, "eod": 2, "mask": 3, "cls": 4, "sep": 5}
DOCUMENTS_PER_FILE = 200_000


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


def build_in_subprocess(kind: str, store: Path, cache: Path, seq_length: int, num_samples: int) -> dict:
    """Build (or open) one index in a fresh process; its wall time and peak memory."""
    code = f"""
import json, sys, time
sys.path.insert(0, {str(ROOT)!r})
def high_water_mb():  # VmHWM starts afresh at exec, unlike ru_maxrss, which keeps the parent's peak
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
from roots_scale.data.token_store import TokenStore
from roots_scale.data.{'gpt' if kind == 'gpt' else 'bert'}_dataset import {'GPTDataset' if kind == 'gpt' else 'BERTDataset'} as D
store = TokenStore({str(store)!r})
before = high_water_mb()
start = time.perf_counter()
ds = D(store, {seq_length}, {num_samples}, 1234, cache_dir={str(cache)!r}{', sentence_order=False' if kind == 'bert' else ''})
seconds = time.perf_counter() - start
peak = high_water_mb()
print(json.dumps({{"seconds": seconds, "peak_mb": peak, "delta_mb": peak - before}}))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def samples_per_second(dataset, count: int, workers: int) -> float:
    indices = np.random.default_rng(0).integers(0, len(dataset), count)
    if workers == 0:
        start = time.perf_counter()
        for i in indices:
            dataset[int(i)]
        return count / (time.perf_counter() - start)
    import torch

    from roots_scale.data.loader import collate

    loader = torch.utils.data.DataLoader(torch.utils.data.Subset(dataset, indices.tolist()), batch_size=32,
                                         num_workers=workers, collate_fn=collate)
    start = time.perf_counter()
    for _ in loader:
        pass
    return count / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", type=float, default=1e9)
    parser.add_argument("--samples", type=int, default=20_000, help="samples timed per loader row")
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
        from roots_scale.data.blending import interleave
        from roots_scale.data.gpt_dataset import GPTDataset
        from roots_scale.data.token_store import TokenStore

        start = time.perf_counter()
        opened = TokenStore(store)
        rows.append(("open token store", f"{(time.perf_counter() - start) * 1e3:.1f} ms, {len(opened):,} documents"))
        for kind, seq in (("gpt", 2048), ("bert", 512)):
            num_samples = tokens // seq
            build = build_in_subprocess(kind, store, cache, seq, num_samples)
            rows.append((f"{kind} index build ({num_samples:,} samples)",
                         f"{build['seconds']:.2f} s, peak RSS {build['peak_mb']:,.0f} MB "
                         f"(+{build['delta_mb']:,.0f} MB over the open store)"))
            reopen = build_in_subprocess(kind, store, cache, seq, num_samples)
            rows.append((f"{kind} cached reopen", f"{reopen['seconds'] * 1e3:.1f} ms"))
            dataset = GPTDataset(opened, seq, num_samples, 1234, cache_dir=cache) if kind == "gpt" else \
                BERTDataset(opened, seq, num_samples, 1234, cache_dir=cache, sentence_order=False)
            for workers in (0, 2):
                rate = samples_per_second(dataset, args.samples, workers)
                rows.append((f"{kind} samples/s, seq {seq}, {workers} workers",
                             f"{rate:,.0f} samples/s ({rate * seq / 1e6:,.1f} M tokens/s)"))
        start = time.perf_counter()
        interleave([0.5, 0.3, 0.2], 1_000_000)
        seconds = time.perf_counter() - start
        rows.append(("blend interleave, 3 datasets", f"{1e6 / seconds:,.0f} samples/s "
                     f"(100M samples: ~{100 * seconds:.0f} s, once, then cached)"))
        width = max(len(name) for name, _ in rows) + 2
        print()
        for name, value in rows:
            print(f"{name:<{width}}{value}")
        print("\nnumbers are from one run; peak memory is the build process's high-water mark")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
