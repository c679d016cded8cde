"""The consolidated (layout-free) checkpoint state: full fp32 weights and Adam moments, whatever the
TP size, DP size or ZeRO stage that wrote them.

DeepSpeed's own files are sharded by the layout that wrote them (tensor-parallel rank × ZeRO
partition), so they only load into the same layout. Next to them every checkpoint holds one file per
tensor-parallel rank, written by that rank's first data-parallel replica: each parameter's TP-local
slice gathered over ZeRO partitions, with its Adam moments, plus how the slice was cut from the full
tensor (megatron-core's `partition_dim` / `partition_stride`). Merging the files gives the full
model; slicing it again fits any other layout. That is what resuming on another layout loads, what
`roots-train convert-checkpoint` writes as one state dict, and what the Hugging Face exporter reads.
The files hold only tensors, numbers and strings: they load with `torch.load(weights_only=True)`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import yaml

from roots_scale.checkpoint.files import CONFIG, CONSOLIDATED, META, CheckpointError, resolve_checkpoint
from roots_scale.config import Config, load_config
from roots_scale.models.tensor_parallel import merge_shards

MOMENTS = ("exp_avg", "exp_avg_sq")  # the Adam moments saved beside each weight


def shard_name(tp_rank: int, tp_size: int) -> str:
    return f"tp{tp_rank:02d}-of-{tp_size:02d}.pt"


@dataclass
class FullState:
    """A checkpoint's full (unsharded) fp32 weights and Adam moments, keyed by TP=1 parameter names."""

    params: dict[str, torch.Tensor]
    moments: dict[str, dict[str, torch.Tensor]]
    adam_step: int
    step: int
    config: Config


def expected_shards(folder: Path) -> list[Path]:
    """The shard files a complete consolidated folder holds, from the TP size its first shard names."""
    found = sorted(folder.glob("tp*-of-*.pt"))
    if not found:
        return [folder / shard_name(0, 1)]
    tp_size = int(found[0].stem.split("-of-")[1])
    return [folder / shard_name(rank, tp_size) for rank in range(tp_size)]


def read_consolidated(folder: Path) -> tuple[dict[str, torch.Tensor], dict[str, dict[str, torch.Tensor]], int]:
    """Merge the TP shard files of one checkpoint into full params, full moments and the Adam step."""
    paths = expected_shards(folder)
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise CheckpointError(f"layout-free state in {folder} is incomplete, missing {', '.join(missing)}; it is "
                              f"written when checkpoint.layout_free is true")
    shards = [torch.load(p, map_location="cpu", weights_only=True) for p in paths]
    partitions = shards[0]["partitions"]
    params: dict[str, torch.Tensor] = {}
    moments: dict[str, dict[str, torch.Tensor]] = {}
    for key in shards[0]["tensors"]:
        name, _, moment = key.partition("::")
        if name in partitions:
            dim, stride = partitions[name]
            full = merge_shards([s["tensors"][key] for s in shards], dim, stride)
        else:
            full = shards[0]["tensors"][key]
        if moment:
            moments.setdefault(name, {})[moment] = full
        else:
            params[name] = full
    return params, moments, int(shards[0]["adam_step"])


def read_full_state(path: str | Path) -> FullState:
    """The full state of the checkpoint at `path` (see `resolve_checkpoint`), with the run's config."""
    folder = resolve_checkpoint(path)
    params, moments, adam_step = read_consolidated(folder / CONSOLIDATED)
    config_file = folder / CONFIG
    if not config_file.is_file():
        raise CheckpointError(f"{config_file} is missing: a checkpoint folder holds the config that wrote it")
    meta = yaml.safe_load((folder / META).read_text()) if (folder / META).is_file() else {}
    return FullState(params, moments, adam_step, int(meta.get("step", 0)), load_config(config_file))
