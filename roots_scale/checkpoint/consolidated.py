"""Layout-free checkpoint state: full fp32 weights and Adam moments, independent of TP, DP and ZeRO.

DeepSpeed's own files are sharded by the layout that wrote them (tensor-parallel rank × ZeRO
partition), so they only load into the same layout. Next to them every checkpoint holds one file per
tensor-parallel rank, written by that rank's first data-parallel replica: each parameter's TP-local
slice gathered over ZeRO partitions, with its Adam moments, plus how the slice was cut from the full
tensor (megatron-core's `partition_dim` / `partition_stride`). Merging the files gives the full
model; slicing it again fits any other layout. That is what resuming on another TP/DP size or ZeRO
stage loads, what `roots-train convert-checkpoint` writes as one state dict, and what the Hugging
Face exporter reads. The files hold only tensors, numbers and strings: they load with
`torch.load(weights_only=True)`.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import yaml

from roots_scale.config import Config, load_config

FOLDER = "layout_free"
MOMENTS = ("exp_avg", "exp_avg_sq")
CONFIG_FILE = "config.yaml"


class LayoutFreeError(RuntimeError):
    """Layout-free state that is missing, incomplete or does not fit the model it is loaded into."""


def shard_name(tp_rank: int, tp_size: int) -> str:
    return f"tp{tp_rank:02d}-of-{tp_size:02d}.pt"


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
        raise LayoutFreeError(f"a tensor of shape {tuple(full.shape)} cannot be split into {size} "
                              f"tensor-parallel slices along dim {dim} (stride {stride})")
    return torch.cat(full.chunk(size * stride, dim)[rank::size], dim)


# --------------------------------------------------------------------------- from an engine


def base_optimizer(engine) -> torch.optim.Optimizer:
    """The torch optimizer underneath DeepSpeed's ZeRO / bf16 wrappers (itself at ZeRO-0 fp32)."""
    return getattr(engine.optimizer, "optimizer", engine.optimizer)


def _link_optimizer_states(engine) -> None:
    """Make sure every Adam state exists and DeepSpeed's per-parameter views of it are current.

    torch creates Adam state at the first step, and ZeRO-1/2 link each parameter to its fragment of
    that state when first asked, which may be before it exists; so create it (zeros, step 0) where
    missing, then (re)link.
    """
    base = base_optimizer(engine)
    flats = [flat for group in base.param_groups for flat in group["params"]]
    flats += getattr(engine.optimizer, "fp32_partitioned_groups_flat", [])  # ZeRO-3 empties param_groups between steps
    for flat in flats:
        if not base.state.get(flat):
            base.state[flat] = {"step": torch.tensor(0.0), "exp_avg": torch.zeros_like(flat),
                                "exp_avg_sq": torch.zeros_like(flat)}
    wrapper = engine.optimizer
    if hasattr(wrapper, "_lazy_init_hp_params_optimizer_state"):
        wrapper._hp_optimizer_states_linked = False
        wrapper._lazy_init_hp_params_optimizer_state()


def _adam_step(engine) -> int:
    for state in base_optimizer(engine).state.values():
        if "step" in state:
            return int(state["step"])
    return 0


def _full_fp32(engine, param: torch.Tensor, moment: str | None) -> torch.Tensor:
    """This rank's TP-local parameter (or Adam moment), gathered over ZeRO partitions. Collective."""
    from deepspeed.utils import safe_get_full_fp32_param, safe_get_full_optimizer_state

    value = safe_get_full_fp32_param(param) if moment is None else safe_get_full_optimizer_state(param, moment)
    if value is not None:
        return value.detach().float().cpu()
    if moment is None:
        return param.detach().float().cpu()
    return base_optimizer(engine).state[param][moment].detach().float().cpu()


def save_layout_free(engine, folder: Path, tp_rank: int, tp_size: int, dp_rank: int) -> None:
    """Collective over every rank: gather each TP-local tensor over ZeRO; DP rank 0 writes one file per TP rank."""
    tensors: dict[str, torch.Tensor] = {}
    partitions: dict[str, list[int]] = {}
    _link_optimizer_states(engine)
    for name, param in engine.module.named_parameters():
        tensors[name] = _full_fp32(engine, param, None)
        for moment in MOMENTS:
            tensors[f"{name}::{moment}"] = _full_fp32(engine, param, moment)
        where = partition_of(param)
        if where is not None:
            partitions[name] = list(where)
    if dp_rank != 0:
        return
    folder.mkdir(parents=True, exist_ok=True)
    payload = {"tensors": tensors, "partitions": partitions, "adam_step": _adam_step(engine),
               "tp_rank": tp_rank, "tp_size": tp_size}
    path = folder / shard_name(tp_rank, tp_size)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)


def expected_shards(folder: Path) -> list[Path]:
    """The shard files a complete layout-free folder holds, from the TP size its first shard names."""
    found = sorted(folder.glob("tp*-of-*.pt"))
    if not found:
        return [folder / shard_name(0, 1)]
    tp_size = int(found[0].stem.split("-of-")[1])
    return [folder / shard_name(rank, tp_size) for rank in range(tp_size)]


@dataclass
class FullState:
    """A checkpoint's full (unsharded) fp32 weights and Adam moments, keyed by TP=1 parameter names."""

    params: dict[str, torch.Tensor]
    moments: dict[str, dict[str, torch.Tensor]]
    adam_step: int
    step: int
    config: Config


def read_layout_free(folder: Path) -> tuple[dict[str, torch.Tensor], dict[str, dict[str, torch.Tensor]], int]:
    """Merge the TP shard files of one checkpoint into full params, full moments and the Adam step."""
    paths = expected_shards(folder)
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise LayoutFreeError(f"layout-free state in {folder} is incomplete, missing {', '.join(missing)}; it is "
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


def resolve_checkpoint(path: str | Path) -> Path:
    """An `iter_*` checkpoint folder from a run directory, its `checkpoints/` folder, or the folder itself."""
    path = Path(path)
    for candidate in (path, path / "checkpoints"):
        pointer = candidate / "latest"
        if pointer.is_file():
            return candidate / pointer.read_text().strip()
    if (path / FOLDER).is_dir() or any(path.glob("*model_states.pt")):
        return path
    raise LayoutFreeError(f"{path} is not a checkpoint: expected a run directory, its checkpoints/ folder "
                          f"(with a 'latest' pointer) or an iter_NNNNNNN folder")


def read_full_state(path: str | Path) -> FullState:
    """The full state of the checkpoint at `path` (see `resolve_checkpoint`), with the run's config."""
    folder = resolve_checkpoint(path)
    params, moments, adam_step = read_layout_free(folder / FOLDER)
    config_file = folder / CONFIG_FILE
    if not config_file.is_file():
        raise LayoutFreeError(f"{config_file} is missing: a checkpoint folder holds the config that wrote it")
    meta = yaml.safe_load((folder / "meta.yaml").read_text()) if (folder / "meta.yaml").is_file() else {}
    return FullState(params, moments, adam_step, int(meta.get("step", 0)), load_config(config_file))


# --------------------------------------------------------------------------- into a model or an engine


def _local_slice(param: torch.Tensor, full: torch.Tensor, name: str, tp_rank: int, tp_size: int) -> torch.Tensor:
    where = partition_of(param)
    local = full if where is None else slice_for_rank(full, where[0], where[1], tp_rank, tp_size)
    if tuple(local.shape) != tuple(param.ds_shape if hasattr(param, "ds_shape") else param.shape):
        raise LayoutFreeError(f"parameter {name}: the checkpoint's slice has shape {tuple(local.shape)}, the model "
                              f"expects {tuple(param.shape)}; the model config differs from the checkpoint's")
    return local


def _check_names(model: torch.nn.Module, params: dict[str, torch.Tensor]) -> None:
    names = {name for name, _ in model.named_parameters()}
    missing, unexpected = sorted(names - params.keys()), sorted(params.keys() - names)
    if missing or unexpected:
        raise LayoutFreeError(f"the checkpoint does not fit the model: missing {missing[:5]}, "
                              f"unexpected {unexpected[:5]}; the model config differs from the checkpoint's")


def load_full_params(model: torch.nn.Module, params: dict[str, torch.Tensor]) -> None:
    """Copy full weights into a freshly built (non-DeepSpeed) model of any TP size, sliced for this rank."""
    from megatron.core import parallel_state

    _check_names(model, params)
    tp_rank, tp_size = parallel_state.get_tensor_model_parallel_rank(), parallel_state.get_tensor_model_parallel_world_size()
    with torch.no_grad():
        for name, param in model.named_parameters():
            param.copy_(_local_slice(param, params[name], name, tp_rank, tp_size))


def load_into_engine(engine, state: FullState, tp_rank: int, tp_size: int) -> None:
    """Set every weight, fp32 master copy and Adam moment of `engine` from a full state. Collective."""
    import deepspeed
    from deepspeed.utils import safe_set_full_fp32_param, safe_set_full_optimizer_state

    _check_names(engine.module, state.params)
    _link_optimizer_states(engine)
    base = base_optimizer(engine)
    zero3 = engine.zero_optimization_stage() == 3
    with torch.no_grad():
        for name, param in engine.module.named_parameters():
            local = _local_slice(param, state.params[name], name, tp_rank, tp_size).to(engine.device)
            moments = {m: _local_slice(param, state.moments[name][m], name, tp_rank, tp_size).to(engine.device)
                       for m in MOMENTS}
            if zero3:
                with deepspeed.zero.GatheredParameters([param], modifier_rank=0):
                    param.copy_(local)
            else:
                param.copy_(local)
            if hasattr(param, "ds_id") or hasattr(param, "_hp_mapping"):
                safe_set_full_fp32_param(param, local)
                for moment, value in moments.items():
                    safe_set_full_optimizer_state(param, value, moment)
            else:  # ZeRO-0 fp32: torch's AdamW holds the moments of the parameter itself
                base.state[param].update(moments)
    for param_state in base.state.values():
        param_state["step"] = torch.tensor(float(state.adam_step))


# --------------------------------------------------------------------------- roots-train convert-checkpoint


def main(argv: list[str] | None = None) -> int:
    """`roots-train convert-checkpoint CHECKPOINT --output FILE`: one consolidated fp32 state dict."""
    parser = argparse.ArgumentParser(
        prog="roots-train convert-checkpoint",
        description="Write a checkpoint's full fp32 weights (any TP size, any ZeRO stage) as one state dict, "
                    "loadable with torch.load(FILE, weights_only=True).")
    parser.add_argument("checkpoint", help="run directory, its checkpoints/ folder, or one iter_NNNNNNN folder")
    parser.add_argument("--output", required=True, help="file to write, e.g. model_fp32.pt")
    parser.add_argument("--with-optimizer", action="store_true", help="also write the Adam moments and step")
    args = parser.parse_args(argv)
    try:
        state = read_full_state(args.checkpoint)
    except LayoutFreeError as err:
        print(f"roots-train convert-checkpoint: error: {err}", file=sys.stderr)
        return 2
    payload: dict[str, Any] = dict(state.params)
    if args.with_optimizer:
        payload = {"model": state.params, "moments": state.moments, "adam_step": state.adam_step}
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(output.name + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(output)
    total = sum(t.numel() for t in state.params.values())
    print(f"wrote {output}: {len(state.params)} tensors, {total:,} parameters (fp32), from step {state.step}")
    return 0


def tensor_parallel_coordinates() -> tuple[int, int, int]:
    """(tp_rank, tp_size, dp_rank) of this process, from megatron-core's groups."""
    from megatron.core import parallel_state

    return (parallel_state.get_tensor_model_parallel_rank(), parallel_state.get_tensor_model_parallel_world_size(),
            dist.get_rank(group=parallel_state.get_data_parallel_group()))
