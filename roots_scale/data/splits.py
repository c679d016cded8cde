"""Train / valid / test splits of a store's documents by ratio (e.g. "969,30,1"), disjoint by construction.

The splits are cut from one seeded permutation of all documents. Why not contiguous ranges
(Megatron's choice): a store lists documents shard by shard, in dump or crawl order, so its last
3 % is a few shards (one crawl segment, the newest Wikipedia pages), not a sample of the corpus; a
permutation gives valid and test the same make-up as train. Cutting one permutation keeps the
splits exactly disjoint and together every document, and makes them a pure function of
(num_documents, ratios, seed). The split seed is its own, not train.seed, so a new training seed
never moves a document between train and valid. Indices come back sorted, for locality.
"""

from __future__ import annotations

import math

import numpy as np

SPLIT_NAMES = ("train", "valid", "test")
SPLIT_SEED = 0


class SplitError(ValueError):
    """A split that cannot be parsed or applied; the message says what would work."""


def parse_split(split: str) -> tuple[float, float, float]:
    """`"969,30,1"` → (0.969, 0.03, 0.001): the train, valid, test shares; missing trailing parts are 0."""
    hint = "write up to three numbers ≥ 0 for train,valid,test with a positive sum, e.g. '969,30,1'"
    parts = str(split).split(",")
    try:
        values = [float(part) for part in parts]
    except ValueError:
        raise SplitError(f"split {split!r} is not a list of numbers; {hint}") from None
    if len(values) > len(SPLIT_NAMES):
        raise SplitError(f"split {split!r} has {len(values)} parts; {hint}")
    if not all(math.isfinite(value) and value >= 0 for value in values) or sum(values) <= 0:
        raise SplitError(f"split {split!r} has a negative, infinite or NaN part, or sums to 0; {hint}")
    values += [0.0] * (len(SPLIT_NAMES) - len(values))
    total = sum(values)
    return values[0] / total, values[1] / total, values[2] / total


def split_documents(num_documents: int, split: str, seed: int = SPLIT_SEED) -> dict[str, np.ndarray]:
    """Sorted document indices of each split: disjoint, together all documents, none empty that has a share."""
    ratios = np.array(parse_split(split))
    wanted = int((ratios > 0).sum())
    if num_documents < wanted:
        raise SplitError(f"split {split!r} needs at least {wanted} documents (one per split with a share) "
                         f"but the store has {num_documents}")
    sizes = _split_sizes(num_documents, ratios)
    order = np.random.default_rng(seed).permutation(num_documents)
    bounds = np.concatenate([[0], np.cumsum(sizes)])
    return {name: np.sort(order[bounds[i]: bounds[i + 1]]) for i, name in enumerate(SPLIT_NAMES)}


def _split_sizes(num_documents: int, ratios: np.ndarray) -> np.ndarray:
    """Documents per split: largest remainders of num_documents·ratios, then one for each empty split with a share."""
    exact = num_documents * ratios
    sizes = np.floor(exact).astype(np.int64)
    leftover = num_documents - int(sizes.sum())
    sizes[np.argsort(sizes - exact, kind="stable")[:leftover]] += 1
    for empty in np.flatnonzero((ratios > 0) & (sizes == 0)):
        sizes[np.argmax(sizes)] -= 1  # the largest split has ≥ 2: there are at least as many documents as shares
        sizes[empty] = 1
    return sizes
