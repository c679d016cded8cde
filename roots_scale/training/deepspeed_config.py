"""The DeepSpeed config, derived from the typed config so users never keep two files in sync."""

from __future__ import annotations

import copy
from typing import Any

from roots_scale.config import BatchPlan, Config


def effective_zero_stage(cfg: Config, plan: BatchPlan) -> int:
    """ZeRO-1/2 on a single data-parallel rank partition nothing and only add flat-buffer copies: run
    them as stage 0 (same math). ZeRO-3 is kept: its offload options still matter on one rank, and so is
    ZeRO-1 under pipeline parallelism, whose ZeRO-0 path miscounts the gradient norm across stages."""
    stage = cfg.parallel.zero_stage
    if cfg.parallel.pipeline > 1:
        return stage
    return 0 if stage in (1, 2) and plan.data_parallel_size == 1 else stage


def build_deepspeed_config(cfg: Config, plan: BatchPlan) -> dict[str, Any]:
    """Batch arithmetic, precision, clipping and ZeRO from `cfg`; `cfg.deepspeed` merged on top."""
    derived: dict[str, Any] = {
        "train_batch_size": plan.global_batch_size,
        "train_micro_batch_size_per_gpu": plan.micro_batch_size,
        "gradient_accumulation_steps": plan.gradient_accumulation_steps,
        "gradient_clipping": cfg.optimizer.clip_grad,
        "zero_optimization": {"stage": effective_zero_stage(cfg, plan)},
        "bf16": {"enabled": cfg.train.precision == "bf16"},
        "fp16": {"enabled": cfg.train.precision == "fp16", "loss_scale": 0,
                 "initial_scale_power": 16, "loss_scale_window": 1000, "hysteresis": 2,
                 "min_loss_scale": 1},
        "steps_per_print": 10**9,  # the trainer logs; keep DeepSpeed quiet
        "wall_clock_breakdown": False,
    }
    if cfg.parallel.sequence_parallel:
        # The pipeline engine splits what stages exchange across the TP group, assuming every TP rank holds the
        # same activation; under sequence parallelism each holds its own slice of the sequence: send it whole.
        derived["pipeline"] = {"pipe_partitioned": False, "grad_partitioned": False}
    return _merge(derived, cfg.deepspeed)


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged
