"""Data-parallel micro-batches that resume exactly from a consumed-sample count.

Optimizer step k consumes global samples [k·G, (k+1)·G) of the dataset, G the global batch.
Data-parallel rank r takes micro-batch m as the slice starting at (m·DP + r)·micro. The mapping
depends only on the consumed count, so a restart (even on another data-parallel size) continues
with exactly the samples an uninterrupted run would have seen next. Tensor-parallel peers share a
data-parallel rank and therefore read identical batches without a broadcast. Samples are read
by torch DataLoader workers (`num_workers`), pinned in memory on GPUs.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler

from roots_scale.data import SampleSource



class MicroBatchSampler(Sampler[list[int]]):
    """This rank's sample indices, one list per micro-batch, step after step, from `consumed_samples`."""

    def __init__(self, total_samples: int, micro_batch_size: int, accumulation_steps: int,
                 data_parallel_rank: int, data_parallel_size: int, consumed_samples: int = 0) -> None:
        self.total = total_samples
        self.micro = micro_batch_size
        self.accumulation = accumulation_steps
        self.rank = data_parallel_rank
        self.world = data_parallel_size
        self.consumed = consumed_samples

    @property
    def global_batch_size(self) -> int:
        return self.micro * self.accumulation * self.world

    def __len__(self) -> int:
        return max(0, (self.total - self.consumed) // self.global_batch_size) * self.accumulation

    def __iter__(self) -> Iterator[list[int]]:
        for step_start in range(self.consumed, self.total - self.global_batch_size + 1, self.global_batch_size):
            for micro_step in range(self.accumulation):
                start = step_start + (micro_step * self.world + self.rank) * self.micro
                yield list(range(start, start + self.micro))


def collate(samples: Sequence[Any]) -> dict[str, torch.Tensor]:
    """GPT windows [seq+1] → tokens/labels shifted by one; dict samples (BERT) → stacked fields."""
    if isinstance(samples[0], dict):
        return {key: torch.from_numpy(np.stack([s[key] for s in samples])) for key in samples[0]}
    tokens = torch.from_numpy(np.stack(samples))
    return {"tokens": tokens[:, :-1], "labels": tokens[:, 1:]}


def step_batches(dataset: SampleSource, micro_batch_size: int, accumulation_steps: int,
                 data_parallel_rank: int, data_parallel_size: int, consumed_samples: int = 0,
                 num_workers: int = 0, pin_memory: bool = False) -> Iterator[list[dict[str, torch.Tensor]]]:
    """Yield, per optimizer step, this rank's `accumulation_steps` micro-batches."""
    sampler = MicroBatchSampler(len(dataset), micro_batch_size, accumulation_steps, data_parallel_rank,
                                data_parallel_size, consumed_samples)
    # A generator of its own: starting an iterator draws a worker seed, which must not come from the global stream
    # dropout draws from (a resumed run starts its iterator after restoring that stream: exact resume).
    loader = DataLoader(dataset, batch_sampler=sampler, num_workers=num_workers, collate_fn=collate,
                        pin_memory=pin_memory, persistent_workers=False,
                        prefetch_factor=4 if num_workers else None, generator=torch.Generator())
    micro_batches = iter(loader)
    for _ in range(len(sampler) // accumulation_steps):
        yield [next(micro_batches) for _ in range(accumulation_steps)]
