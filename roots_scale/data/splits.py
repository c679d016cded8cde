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

import numpy as np


from roots_scale.config import SPLIT_NAMES, parse_split
from roots_scale.data.errors import SplitError

SPLIT_SEED = 0


def split_documents(num_documents: int, split: str, seed: int = SPLIT_SEED,
                    source: str = "") -> dict[str, np.ndarray]:
    """Sorted document indices of each split: disjoint, together all documents, none empty that has a share.
    `source` names the store in errors."""
    ratios = np.array(parse_split(split))
    wanted = int((ratios > 0).sum())
    if num_documents < wanted:
        raise SplitError(f"{source + ': ' if source else ''}split {split!r} needs at least {wanted} documents "
                         "(one per split with a share) "
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
