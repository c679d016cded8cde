"""How megatron-core's tensor-parallel layers cut a full weight into per-rank slices, and back.

A sliced parameter carries `tensor_model_parallel`, `partition_dim` and `partition_stride` (set by
megatron-core); a slice with stride s holds s interleaved chunks (e.g. SwiGLU's [gate; up]). These
three functions are the whole of the slicing math: checkpoints, reshaping and Hugging Face import use them.
"""

from __future__ import annotations

import torch
from megatron.core import parallel_state

from roots_core.errors import RootsError


class ModelError(RootsError):
    """Weights that do not fit a model's shapes or its tensor-parallel split."""


def partition_of(param: torch.Tensor) -> tuple[int, int] | None:
    """(dim, stride) of a tensor-parallel slice, or None for a weight every TP rank holds whole."""
    if not getattr(param, "tensor_model_parallel", False):
        return None
    return int(param.partition_dim), int(getattr(param, "partition_stride", 1))


def merge_shards(shards: list[torch.Tensor], dim: int, stride: int) -> torch.Tensor:
    """The full tensor from its TP slices; a slice with stride s holds s interleaved chunks."""
    pieces = [shard.chunk(stride, dim) for shard in shards]
    return torch.cat([pieces[rank][k] for k in range(stride) for rank in range(len(shards))], dim)


def slice_for_rank(full: torch.Tensor, dim: int, stride: int, rank: int, size: int) -> torch.Tensor:
    """This rank's TP slice of a full tensor, cut the way megatron-core's layers cut their weights."""
    if full.shape[dim] % (size * stride):
        raise ModelError(f"a tensor of shape {tuple(full.shape)} cannot be split into {size} "
                         f"tensor-parallel slices along dim {dim} (stride {stride})")
    return torch.cat(full.chunk(size * stride, dim)[rank::size], dim)


def local_slice(param: torch.Tensor, full: torch.Tensor, name: str, tp_rank: int, tp_size: int) -> torch.Tensor:
    """The slice of the full tensor `full` that parameter `name` holds on TP rank `tp_rank`, shape-checked."""
    where = partition_of(param)
    local = full if where is None else slice_for_rank(full, where[0], where[1], tp_rank, tp_size)
    if tuple(local.shape) != tuple(param.ds_shape if hasattr(param, "ds_shape") else param.shape):
        raise ModelError(f"parameter {name}: the checkpoint's slice has shape {tuple(local.shape)}, the model "
                         f"expects {tuple(param.shape)}; the model config differs from the checkpoint's")
    return local


def check_names(names: set[str], params: dict[str, torch.Tensor]) -> None:
    """ModelError unless `params` names exactly the model's parameters `names`."""
    missing, unexpected = sorted(names - params.keys()), sorted(params.keys() - names)
    if missing or unexpected:
        raise ModelError(f"the checkpoint does not fit the model: missing {missing[:5]}, "
                         f"unexpected {unexpected[:5]}; the model config differs from the checkpoint's")


def load_full_params(model: torch.nn.Module, params: dict[str, torch.Tensor]) -> None:
    """Copy full weights into a freshly built (non-DeepSpeed) model of any TP size, sliced for this rank."""
    check_names({name for name, _ in model.named_parameters()}, params)
    tp_rank = parallel_state.get_tensor_model_parallel_rank()
    tp_size = parallel_state.get_tensor_model_parallel_world_size()
    with torch.no_grad():
        for name, param in model.named_parameters():
            param.copy_(local_slice(param, params[name], name, tp_rank, tp_size))
