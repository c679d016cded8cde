"""Which config changes a run may make when it resumes a checkpoint, and which would silently change what it
trains: the model's definition (the weights would no longer mean the same) or the data order."""

from __future__ import annotations

from typing import Any

from roots_scale.config import Config

FREE_MODEL_KEYS = {"model.activation_checkpointing", "model.init_from_hf"}  # memory and a fresh start's source only
DATA_ORDER_KEYS = {"train.seed", "data.split", "data.num_epochs"}


def flatten(config: Config) -> dict[str, Any]:
    """`section.key` -> value for every key of `config` (the DeepSpeed passthrough as one value)."""
    flat: dict[str, Any] = {}
    for section, values in config.to_dict().items():
        if section == "deepspeed":
            flat[section] = values
        else:
            flat.update({f"{section}.{key}": value for key, value in values.items()})
    return flat


def refused_changes(saved: Config, now: Config) -> list[str]:
    """'key: before -> now' for each change to the model or the data order, in key order."""
    before, after = flatten(saved), flatten(now)
    guarded = {key for key in before if key.startswith("model.") and key not in FREE_MODEL_KEYS} | DATA_ORDER_KEYS
    return [f"{key}: {before[key]!r} -> {after[key]!r}" for key in sorted(guarded) if before[key] != after[key]]
