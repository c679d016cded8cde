"""Megatron's sequence-parallel communication, on any device: the sequence (dim 0, sequence first) split over
the tensor-parallel group between the tensor-parallel layers, gathered before them and reduce-scattered after.

megatron-core's own sequence-parallel path allocates its buffers on CUDA, so these are ours (the same
collectives, through torch.distributed: NCCL on GPUs, gloo on CPU). Each pairs a forward collective with
its adjoint in backward:
- `scatter_sequence`: keep this rank's slice | all-gather the gradient;
- `reduce_scatter_sequence`: sum the partial outputs and keep this rank's slice | all-gather the gradient;
- `gather_linear`: all-gather the slices into a linear layer | reduce-scatter the input's gradient (each rank's
  is partial); it keeps only this rank's slice for backward and gathers it again there (as Megatron does), so
  the layer's saved input shrinks with the TP size too.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from megatron.core import parallel_state


def _group():
    return parallel_state.get_tensor_model_parallel_group()


def _all_gather(x: torch.Tensor) -> torch.Tensor:
    size = dist.get_world_size(_group())
    out = torch.empty((x.shape[0] * size, *x.shape[1:]), dtype=x.dtype, device=x.device)
    dist.all_gather_into_tensor(out, x.contiguous(), group=_group())
    return out


def _reduce_scatter(x: torch.Tensor) -> torch.Tensor:
    size = dist.get_world_size(_group())
    out = torch.empty((x.shape[0] // size, *x.shape[1:]), dtype=x.dtype, device=x.device)
    dist.reduce_scatter_tensor(out, x.contiguous(), group=_group())
    return out


def _split(x: torch.Tensor) -> torch.Tensor:
    size, rank = dist.get_world_size(_group()), dist.get_rank(_group())
    return x.chunk(size, dim=0)[rank].contiguous()


class _Scatter(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return _split(x)

    @staticmethod
    def backward(ctx, grad):
        return _all_gather(grad)


class _ReduceScatter(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return _reduce_scatter(x)

    @staticmethod
    def backward(ctx, grad):
        return _all_gather(grad)


class _GatherLinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias):
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return torch.nn.functional.linear(_all_gather(x), weight, bias)

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        full = _all_gather(x)
        grad_input = _reduce_scatter(grad.matmul(weight))
        grad_weight = grad.flatten(0, -2).t().matmul(full.flatten(0, -2))
        grad_bias = grad.flatten(0, -2).sum(0) if ctx.has_bias else None
        return grad_input, grad_weight, grad_bias


def gather_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """`linear(gather_sequence(x), weight, bias)`, keeping only `x` (this rank's slice) for backward."""
    return _GatherLinear.apply(x, weight, bias)


def scatter_sequence(x: torch.Tensor) -> torch.Tensor:
    return _Scatter.apply(x)


def reduce_scatter_sequence(x: torch.Tensor) -> torch.Tensor:
    return _ReduceScatter.apply(x)
