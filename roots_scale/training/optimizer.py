"""AdamW with weight decay only where it belongs: matrices, not norms, biases or embeddings."""

from __future__ import annotations

import torch
from torch import nn

from roots_scale.config import OptimizerConfig


def parameter_groups(model: nn.Module, opt: OptimizerConfig) -> list[dict]:
    """Split parameters into a decayed and a non-decayed group."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        is_embedding = "embedding" in name
        if param.ndim < 2 or (is_embedding and opt.no_decay_on_embeddings):
            no_decay.append(param)
        else:
            decay.append(param)
    return [
        {"params": decay, "weight_decay": opt.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def build_optimizer(model: nn.Module, opt: OptimizerConfig) -> torch.optim.Optimizer:
    """torch's AdamW: runs on any accelerator and is in ZeRO's list of supported optimizers."""
    return torch.optim.AdamW(parameter_groups(model, opt), lr=opt.lr,
                             betas=(opt.beta1, opt.beta2), eps=opt.eps)
