"""Dedup's cluster phase at scale: time and peak memory of exact + near-duplicate clustering for N documents.

    python benchmarks/dedup_cluster_scale.py [--documents 10000000] [--bands 14] [--duplicates 0.05] [--near 0.1]

The cluster phase (`data_tools.dedup.cluster`) is the one step that sees every document at once: it holds each
document's exact hash (16 bytes) and LSH band keys (8 bytes × bands) and links documents that share a key. This
script feeds it synthetic signatures with the shape real ones have (random 64-bit keys; a share of exact copies;
a share of near duplicates that copy some of an earlier document's band keys), runs the same functions the stage
runs, checks the removals against what was planted, and prints the time of each part and the process's peak
resident memory next to the size of the signatures themselves.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from data_tools.dedup import exact_duplicates, near_duplicates  # noqa: E402


def peak_rss_gb() -> float:
    """The process's peak resident memory so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9


def synthetic_signatures(documents: int, bands: int, duplicates: float, near: float,
                         seed: int = 0) -> tuple[np.ndarray, np.ndarray, int, int]:
    """(exact hashes (n, 2), band keys (n, bands), planted exact copies, planted near copies)."""
    rng = np.random.default_rng(seed)
    exact = rng.integers(0, 2**63, size=(documents, 2), dtype=np.uint64)
    keys = rng.integers(0, 2**63, size=(documents, bands), dtype=np.uint64)
    half = documents // 2  # copies in the second half, of documents in the first: every original survives
    later = rng.permutation(np.arange(half, documents))
    copies, similar = later[:int(duplicates * documents)], later[int(duplicates * documents):][:int(near * documents)]
    originals = rng.integers(0, half, size=len(copies))
    exact[copies] = exact[originals]
    keys[copies] = keys[originals]
    sources = rng.integers(0, half, size=len(similar))
    shared = rng.integers(0, bands, size=len(similar))  # each near copy shares one band key with its source
    keys[similar, shared] = keys[sources, shared]
    return exact, keys, len(copies), len(similar)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--documents", type=int, default=10_000_000)
    parser.add_argument("--bands", type=int, default=14)
    parser.add_argument("--duplicates", type=float, default=0.05, help="share of exact copies")
    parser.add_argument("--near", type=float, default=0.10, help="share of near copies (one shared band key); "
                        "with --duplicates at most 0.5")
    args = parser.parse_args()
    start = time.perf_counter()
    exact, keys, copies, similar = synthetic_signatures(args.documents, args.bands, args.duplicates, args.near)
    generated = time.perf_counter() - start
    base = peak_rss_gb()
    start = time.perf_counter()
    exact_removed = exact_duplicates(exact)
    exact_seconds = time.perf_counter() - start
    start = time.perf_counter()
    near_removed = near_duplicates(keys, ~exact_removed)
    near_seconds = time.perf_counter() - start
    signature_gb = (exact.nbytes + keys.nbytes) / 1e9
    assert int(exact_removed.sum()) == copies, "every planted exact copy, and nothing else, is an exact duplicate"
    assert int(near_removed.sum()) == similar, "every planted near copy, and nothing else (random keys never collide)"
    print(f"{args.documents:,} documents, {args.bands} bands; planted {copies:,} exact and {similar:,} near copies "
          f"(signatures made in {generated:.1f} s)")
    print(f"{'part':<28}{'seconds':>10}{'removed':>14}")
    print(f"{'exact duplicates':<28}{exact_seconds:>10.1f}{int(exact_removed.sum()):>14,}")
    print(f"{'near duplicates (LSH + UF)':<28}{near_seconds:>10.1f}{int(near_removed.sum()):>14,}")
    print(f"signatures in memory {signature_gb:.2f} GB ({(exact.nbytes + keys.nbytes) / args.documents:.0f} B per "
          f"document); peak resident {peak_rss_gb():.2f} GB (after generation {base:.2f} GB)")


if __name__ == "__main__":
    main()
