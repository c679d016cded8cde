"""The activation bytes a model really keeps: what `counts.activation_bytes` is checked against."""

from __future__ import annotations

import torch
from torch import nn


def saved_activation_bytes(model: nn.Module, tokens: torch.Tensor, labels: torch.Tensor) -> int:
    """Bytes of the distinct non-parameter storages autograd saves for backward in one forward with the loss
    (counted with saved-tensor hooks, so exact on any device)."""
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in params:
            seen[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        model(tokens, labels)
    return sum(seen.values())
