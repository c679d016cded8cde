"""Train / valid / test splits of a store's documents by ratio (e.g. "969,30,1"), disjoint by construction.

Contiguous document ranges, as Megatron does: the split is a pure function of (number of
documents, ratios), so every rank and every restart agrees, and changing the seed never moves a
document from train into valid.
"""

from __future__ import annotations

import numpy as np

SPLITS = ("train", "valid", "test")


class SplitError(ValueError):
    """A split string that cannot be parsed or applied; the message says what would work."""


def parse_split(text: str) -> tuple[float, float, float]:
    """`"969,30,1"` → normalized ratios (train, valid, test); one or two numbers leave the rest 0."""
    try:
        parts = [float(part) for part in str(text).split(",")]
    except ValueError:
        raise SplitError(f"data.split = {text!r}: expected up to three comma-separated numbers, "
                         f"e.g. '969,30,1'") from None
    if not 1 <= len(parts) <= 3 or any(p < 0 for p in parts) or sum(parts) <= 0:
        raise SplitError(f"data.split = {text!r}: expected 1-3 non-negative numbers with a positive sum, "
                         f"e.g. '969,30,1'")
    parts += [0.0] * (3 - len(parts))
    total = sum(parts)
    return parts[0] / total, parts[1] / total, parts[2] / total


def split_documents(num_documents: int, split: str) -> dict[str, np.ndarray]:
    """Document indices of each split: contiguous, disjoint, together every document."""
    ratios = parse_split(split)
    wanted = [name for name, ratio in zip(SPLITS, ratios) if ratio > 0]
    if num_documents < len(wanted):
        raise SplitError(f"data.split = {split!r} needs at least {len(wanted)} documents "
                         f"(one per non-empty split: {', '.join(wanted)}); the store has {num_documents}")
    sizes = [int(np.floor(ratio * num_documents)) for ratio in ratios]
    remainders = sorted(range(3), key=lambda i: -(ratios[i] * num_documents - sizes[i]))
    for i in remainders[: num_documents - sum(sizes)]:  # largest remainders get the leftover documents
        sizes[i] += 1
    for i, ratio in enumerate(ratios):  # a requested split is never empty
        if ratio > 0 and sizes[i] == 0:
            sizes[int(np.argmax(sizes))] -= 1
            sizes[i] = 1
    bounds = np.cumsum([0, *sizes])
    return {name: np.arange(bounds[i], bounds[i + 1], dtype=np.int64) for i, name in enumerate(SPLITS)}
