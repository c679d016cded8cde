"""Learning-rate schedules: linear warmup, then a decay toward a floor (`min_lr`)."""

from __future__ import annotations

import math

from roots_scale.config import OptimizerConfig


def learning_rate(step: int, total_steps: int, opt: OptimizerConfig) -> float:
    """The learning rate for optimizer step `step` (0-based) of `total_steps`."""
    if opt.warmup_iters > 0 and step < opt.warmup_iters:
        return opt.lr * (step + 1) / opt.warmup_iters
    if opt.decay_style == "constant":
        return opt.lr
    if opt.decay_style == "inverse_sqrt":
        return max(opt.min_lr, opt.lr * math.sqrt(max(1, opt.warmup_iters) / (step + 1)))
    decay_steps = max(1, total_steps - opt.warmup_iters)
    progress = min(1.0, (step - opt.warmup_iters) / decay_steps)
    if opt.decay_style == "linear":
        coefficient = 1.0 - progress
    elif opt.decay_style == "cosine":
        coefficient = 0.5 * (1.0 + math.cos(math.pi * progress))
    else:  # exponential: lr → min_lr geometrically over the decay
        floor = max(opt.min_lr, 1e-12)
        return opt.lr * (floor / opt.lr) ** progress
    return opt.min_lr + (opt.lr - opt.min_lr) * coefficient
