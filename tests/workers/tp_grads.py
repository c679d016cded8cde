"""Gradient read-outs that compare across tensor-parallel sizes (shared by the model workers)."""

import torch
import torch.distributed as dist
from megatron.core import parallel_state


def global_grad_norm(model: torch.nn.Module) -> torch.Tensor:
    """The full model's gradient norm: TP-split parameters summed over the group, replicated ones once."""
    split, replicated = torch.zeros(()), torch.zeros(())
    for param in model.parameters():
        if getattr(param, "tensor_model_parallel", False):
            split += param.grad.float().pow(2).sum()
        else:
            replicated += param.grad.float().pow(2).sum()
    dist.all_reduce(split, group=parallel_state.get_tensor_model_parallel_group())
    return (split + replicated).sqrt()


def gather_vocab_rows(tensor: torch.Tensor) -> torch.Tensor:
    """A vocab-parallel tensor whole again (vocabulary rows are split contiguously across ranks)."""
    group = parallel_state.get_tensor_model_parallel_group()
    shards = [torch.empty_like(tensor) for _ in range(dist.get_world_size(group=group))]
    dist.all_gather(shards, tensor.contiguous(), group=group)
    return torch.cat(shards)
