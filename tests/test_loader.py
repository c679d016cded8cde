"""The data-parallel loader: disjoint ranks, layout-independent steps, exact resume, workers."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from roots_scale.data.loader import MicroBatchSampler, step_batches


class NumberedSamples:
    """Sample i is [i, i+1, i+2]: lets a test read back which samples a batch holds."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> np.ndarray:
        return np.array([index, index + 1, index + 2])


def step_samples(steps, count: int) -> list[set[int]]:
    return [{int(x) for micro in batches for x in micro["tokens"][:, 0]} for batches in itertools.islice(steps, count)]


def test_gpt_windows_become_shifted_tokens_and_labels() -> None:
    (batches,) = list(step_batches(NumberedSamples(2), 2, 1, 0, 1))
    assert batches[0]["tokens"].tolist() == [[0, 1], [1, 2]]
    assert batches[0]["labels"].tolist() == [[1, 2], [2, 3]]


@pytest.mark.parametrize("ranks", [1, 2, 4])
def test_the_global_order_is_the_same_for_any_number_of_ranks(ranks: int) -> None:
    data = NumberedSamples(96)
    accumulation = 4 // ranks  # global batch 8 = micro 2 × accumulation × ranks
    per_rank = [step_samples(step_batches(data, 2, accumulation, rank, ranks), 6) for rank in range(ranks)]
    for step in range(6):
        union = set().union(*(samples[step] for samples in per_rank))
        assert union == set(range(step * 8, (step + 1) * 8))  # global batch k is samples [8k, 8k+8)
        assert sum(len(samples[step]) for samples in per_rank) == 8  # disjoint


def test_resume_from_consumed_samples_continues_exactly() -> None:
    data = NumberedSamples(80)
    uninterrupted = step_samples(step_batches(data, 2, 2, 1, 2), 10)
    head = step_samples(step_batches(data, 2, 2, 1, 2), 3)
    resumed = step_samples(step_batches(data, 2, 2, 1, 2, consumed_samples=3 * 8), 7)
    assert head + resumed == uninterrupted


def test_resume_on_a_different_number_of_ranks_skips_and_repeats_nothing() -> None:
    data = NumberedSamples(64)
    before = step_samples(step_batches(data, 2, 1, 0, 4), 3)
    after = [a | b for a, b in zip(*(step_samples(step_batches(data, 4, 1, r, 2, consumed_samples=24), 5)
                                     for r in range(2)))]
    assert after[0] == set(range(24, 32)) and after[-1] == set(range(56, 64))
    assert all(s <= set(range(24)) for s in before)


def test_workers_deliver_the_same_batches_in_the_same_order() -> None:
    data = NumberedSamples(40)
    serial = [[b["tokens"].tolist() for b in step] for step in step_batches(data, 2, 2, 0, 2)]
    parallel = [[b["tokens"].tolist() for b in step] for step in step_batches(data, 2, 2, 0, 2, num_workers=2)]
    assert serial == parallel and len(serial) == 5


def test_dict_samples_are_stacked_field_by_field() -> None:
    class Masked(NumberedSamples):
        def __getitem__(self, index: int) -> dict[str, np.ndarray]:
            return {"input_ids": np.full(4, index), "attention_mask": np.ones(4, dtype=np.int64)}

    (batches,) = list(step_batches(Masked(3), 3, 1, 0, 1))
    assert batches[0]["input_ids"][:, 0].tolist() == [0, 1, 2] and batches[0]["attention_mask"].shape == (3, 4)


def test_only_full_global_batches_are_served() -> None:
    sampler = MicroBatchSampler(10, 2, 1, 0, 2)
    assert len(sampler) == 2 and list(sampler) == [[0, 1], [4, 5]]
