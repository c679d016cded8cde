"""Layout-free state: TP slices merge back into the full tensor exactly as megatron-core cut them."""

from __future__ import annotations

import pytest
import torch

from roots_scale.checkpoint.files import CheckpointError, resolve_checkpoint
from roots_scale.models.tensor_parallel import ModelError, merge_shards, slice_for_rank


@pytest.mark.parametrize("dim,stride,size", [(0, 1, 2), (1, 1, 4), (0, 2, 2), (0, 2, 4)])
def test_slices_merge_back_to_the_full_tensor(dim: int, stride: int, size: int) -> None:
    full = torch.arange(16 * 8, dtype=torch.float32).reshape(16, 8)
    shards = [slice_for_rank(full, dim, stride, rank, size) for rank in range(size)]
    assert all(s.shape[dim] == full.shape[dim] // size for s in shards)
    assert torch.equal(merge_shards(shards, dim, stride), full)


def test_stride_two_slices_hold_their_part_of_each_half() -> None:
    """SwiGLU's fc_in is [gate; up]: with stride 2 each rank holds its gate rows and its up rows."""
    full = torch.arange(8.0).reshape(8, 1)  # gate = 0..3, up = 4..7
    assert slice_for_rank(full, 0, 2, 0, 2).flatten().tolist() == [0, 1, 4, 5]
    assert slice_for_rank(full, 0, 2, 1, 2).flatten().tolist() == [2, 3, 6, 7]


def test_uneven_split_and_non_checkpoint_paths_are_refused(tmp_path) -> None:
    with pytest.raises(ModelError, match="cannot be split into 3"):
        slice_for_rank(torch.zeros(8, 2), 0, 1, 0, 3)
    with pytest.raises(CheckpointError, match="is not a checkpoint"):
        resolve_checkpoint(tmp_path)
