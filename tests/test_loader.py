"""The data-parallel loader: disjoint ranks, layout-independent steps, exact resume."""

from __future__ import annotations

import itertools

import numpy as np

from roots_scale.data.loader import DistributedBatches


class NumberedSamples:
    """Sample i is [i, i]: lets a test read back which samples a batch holds."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> np.ndarray:
        return np.array([index, index])


def step_samples(loader: DistributedBatches, steps: int) -> list[set[int]]:
    return [{int(x) for batch in micro for x in batch[:, 0]} for micro in itertools.islice(loader, steps)]


def test_ranks_are_disjoint_and_cover_the_global_batch() -> None:
    data = NumberedSamples(96)
    per_rank = [step_samples(DistributedBatches(data, 2, 3, rank, 4), 4) for rank in range(4)]
    for step in range(4):
        union = set().union(*(ranks[step] for ranks in per_rank))
        assert union == set(range(step * 24, (step + 1) * 24))
        assert sum(len(ranks[step]) for ranks in per_rank) == 24


def test_step_contents_do_not_depend_on_the_data_parallel_layout() -> None:
    data = NumberedSamples(64)
    dp1 = step_samples(DistributedBatches(data, 4, 2, 0, 1), 8)
    dp2 = [a | b for a, b in zip(*(step_samples(DistributedBatches(data, 4, 1, r, 2), 8) for r in range(2)))]
    assert dp1 == dp2


def test_resume_from_consumed_samples_continues_exactly() -> None:
    data = NumberedSamples(80)
    uninterrupted = step_samples(DistributedBatches(data, 2, 2, 1, 2), 10)
    first = DistributedBatches(data, 2, 2, 1, 2)
    head = step_samples(first, 3)
    resumed = step_samples(DistributedBatches(data, 2, 2, 1, 2, consumed_samples=first.consumed_samples), 7)
    assert head + resumed == uninterrupted


def test_stops_when_a_full_global_batch_no_longer_fits() -> None:
    loader = DistributedBatches(NumberedSamples(10), 2, 1, 0, 2)
    assert len(list(loader)) == 2 and loader.consumed_samples == 8
