"""The global gradient norm of a tensor-parallel model: split weights summed over the group, replicated ones once."""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.distributed as dist


def global_grad_norm(parameters: Iterable[torch.nn.Parameter], tensor_parallel_group) -> torch.Tensor:
    """The L2 norm of all gradients of the whole (unsplit) model, the same on every rank of the group."""
    parameters = [p for p in parameters if p.grad is not None]
    device = parameters[0].grad.device if parameters else torch.device("cpu")
    split, replicated = torch.zeros((), device=device), torch.zeros((), device=device)
    for param in parameters:
        if getattr(param, "tensor_model_parallel", False):
            split += param.grad.float().pow(2).sum()
        else:
            replicated += param.grad.float().pow(2).sum()
    dist.all_reduce(split, group=tensor_parallel_group)
    return (split + replicated).sqrt()
