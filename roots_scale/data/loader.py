"""Data-parallel micro-batches that resume exactly from a consumed-sample count.

Optimizer step k consumes global samples [k·G, (k+1)·G) of the dataset, G the global batch.
Data-parallel rank r takes micro-batch m as the slice starting at (m·DP + r)·micro. The mapping
depends only on the consumed count, so a restart (even on another data-parallel size) continues
with exactly the samples an uninterrupted run would have seen next. Tensor-parallel peers share a
data-parallel rank and therefore read identical batches without a broadcast.
"""

from __future__ import annotations

from typing import Iterator, Protocol

import numpy as np
import torch


class SampleSource(Protocol):
    def __len__(self) -> int: ...
    def __getitem__(self, index: int) -> np.ndarray: ...


class DistributedBatches:
    """Yields, per optimizer step, this rank's list of micro-batches as int64 tensors."""

    def __init__(self, dataset: SampleSource, micro_batch_size: int, accumulation_steps: int,
                 data_parallel_rank: int, data_parallel_size: int, consumed_samples: int = 0) -> None:
        self.dataset = dataset
        self.micro = micro_batch_size
        self.accumulation = accumulation_steps
        self.rank = data_parallel_rank
        self.world = data_parallel_size
        self.consumed_samples = consumed_samples

    @property
    def global_batch_size(self) -> int:
        return self.micro * self.accumulation * self.world

    def micro_batch_indices(self, step_start: int, micro_step: int) -> range:
        start = step_start + (micro_step * self.world + self.rank) * self.micro
        return range(start, start + self.micro)

    def __iter__(self) -> Iterator[list[torch.Tensor]]:
        while self.consumed_samples + self.global_batch_size <= len(self.dataset):
            step_start = self.consumed_samples
            batches = [
                torch.from_numpy(np.stack([self.dataset[i] for i in self.micro_batch_indices(step_start, m)]))
                for m in range(self.accumulation)
            ]
            self.consumed_samples += self.global_batch_size
            yield batches
