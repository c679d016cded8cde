"""Serving orders that only ever grow at the end: extending a run (more `train.iters` or `train.tokens`)
never changes which samples the steps already planned see.

Indices are built for a whole number of blocks (about an epoch each) and shuffled within each block by a
generator of its own, so the first n samples are the same for every run length of at least n.
"""

from __future__ import annotations

import numpy as np

SHUFFLE_STREAM = 0x5EED  # keeps the shuffle's random stream apart from the others seeded by the same seed


def whole_blocks(count: int, block: int) -> int:
    """`count` rounded up to a whole number of `block`s."""
    return -(-count // block) * block


def block_shuffle(total: int, block: int, seed: int) -> np.ndarray:
    """A permutation of range(`total`) (whole blocks) moving entries only within their block; block k is
    shuffled by a generator seeded by (seed, k) alone."""
    return np.concatenate([k * block + np.random.default_rng([seed, SHUFFLE_STREAM, k]).permutation(block)
                           for k in range(total // block)]).astype(np.int64)
