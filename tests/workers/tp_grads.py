"""Gradient read-outs that compare across tensor-parallel sizes (shared by the model workers)."""

import torch
import torch.distributed as dist
from megatron.core import parallel_state

from roots_scale.training.grad_norm import global_grad_norm


def model_grad_norm(model: torch.nn.Module) -> torch.Tensor:
    """The full model's gradient norm, as the trainer computes it."""
    return global_grad_norm(model.parameters(), parallel_state.get_tensor_model_parallel_group())


def gather_vocab_rows(tensor: torch.Tensor) -> torch.Tensor:
    """A vocab-parallel tensor whole again (vocabulary rows are split contiguously across ranks)."""
    group = parallel_state.get_tensor_model_parallel_group()
    shards = [torch.empty_like(tensor) for _ in range(dist.get_world_size(group=group))]
    dist.all_gather(shards, tensor.contiguous(), group=group)
    return torch.cat(shards)
