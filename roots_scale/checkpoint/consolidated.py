"""The consolidated (layout-free) checkpoint state: full fp32 weights and Adam moments, whatever the
TP size, DP size or ZeRO stage that wrote them.

DeepSpeed's own files are sharded by the layout that wrote them (pipeline stage × tensor-parallel rank ×
ZeRO partition), so they only load into the same layout. Next to them every checkpoint holds one file per
pipeline stage and tensor-parallel rank, written by that pair's first data-parallel replica: each of the
stage's parameters, under its name in the whole model, as its TP-local slice gathered over ZeRO
partitions, with its Adam moments, plus how the slice was cut from the full tensor (megatron-core's
`partition_dim` / `partition_stride`). Merging the TP slices of each stage and joining the stages gives
the full model (a token embedding tied across the first and last stage is in both files, equal); slicing
it again fits any other layout. That is what resuming on another layout loads, what
`roots-train convert-checkpoint` writes as one state dict, and what the Hugging Face exporter reads.
The files hold only tensors, numbers and strings: they load with `torch.load(weights_only=True)`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml

from roots_scale.checkpoint.files import CONFIG, CONSOLIDATED, META, CheckpointError, resolve_checkpoint
from roots_scale.config import Config, load_config
from roots_scale.models.tensor_parallel import merge_shards

MOMENTS = ("exp_avg", "exp_avg_sq")  # the Adam moments saved beside each weight


_SHARD = re.compile(r"(?:pp(\d+)-of-(\d+)-)?tp(\d+)-of-(\d+)\.pt")


def shard_name(tp_rank: int, tp_size: int, stage: int = 0, stages: int = 1) -> str:
    """`tp00-of-02.pt`, or `pp01-of-04-tp00-of-02.pt` for a pipeline stage."""
    pipeline = f"pp{stage:02d}-of-{stages:02d}-" if stages > 1 else ""
    return f"{pipeline}tp{tp_rank:02d}-of-{tp_size:02d}.pt"


@dataclass
class FullState:
    """A checkpoint's full (unsharded) fp32 weights and Adam moments, keyed by TP=1 parameter names."""

    params: dict[str, torch.Tensor]
    moments: dict[str, dict[str, torch.Tensor]]
    adam_step: int
    step: int
    config: Config


def expected_shards(folder: Path) -> list[list[Path]]:
    """The shard files a complete consolidated folder holds, per pipeline stage, from the sizes one of them names."""
    names = sorted(path.name for path in folder.glob("*.pt") if _SHARD.fullmatch(path.name))
    if not names:
        return [[folder / shard_name(0, 1)]]
    _, stages, _, tp_size = _SHARD.fullmatch(names[0]).groups()
    stages, tp_size = int(stages or 1), int(tp_size)
    return [[folder / shard_name(rank, tp_size, stage, stages) for rank in range(tp_size)] for stage in range(stages)]


def read_consolidated(folder: Path) -> tuple[dict[str, torch.Tensor], dict[str, dict[str, torch.Tensor]], int]:
    """Merge the shard files of one checkpoint into full params, full moments and the Adam step."""
    stages = expected_shards(folder)
    missing = [str(p) for paths in stages for p in paths if not p.is_file()]
    if missing:
        raise CheckpointError(f"layout-free state in {folder} is incomplete, missing {', '.join(missing)}; it is "
                              f"written when checkpoint.layout_free is true")
    params: dict[str, torch.Tensor] = {}
    moments: dict[str, dict[str, torch.Tensor]] = {}
    adam_step = 0
    for paths in stages:
        shards = [torch.load(p, map_location="cpu", weights_only=True) for p in paths]
        partitions = shards[0]["partitions"]
        adam_step = int(shards[0]["adam_step"])
        for key in shards[0]["tensors"]:
            name, _, moment = key.partition("::")
            if (moment in moments.get(name, {})) if moment else (name in params):
                continue  # a tied weight, already read from an earlier stage
            if name in partitions:
                dim, stride = partitions[name]
                full = merge_shards([s["tensors"][key] for s in shards], dim, stride)
            else:
                full = shards[0]["tensors"][key]
            if moment:
                moments.setdefault(name, {})[moment] = full
            else:
                params[name] = full
    return params, moments, adam_step


def read_full_state(path: str | Path) -> FullState:
    """The full state of the checkpoint at `path` (see `resolve_checkpoint`), with the run's config."""
    folder = resolve_checkpoint(path)
    params, moments, adam_step = read_consolidated(folder / CONSOLIDATED)
    config_file = folder / CONFIG
    if not config_file.is_file():
        raise CheckpointError(f"{config_file} is missing: a checkpoint folder holds the config that wrote it")
    meta = yaml.safe_load((folder / META).read_text()) if (folder / META).is_file() else {}
    return FullState(params, moments, adam_step, int(meta.get("step", 0)), load_config(config_file))
