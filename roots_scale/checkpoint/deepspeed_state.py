"""Reading and writing the fp32 master weights and Adam moments inside a DeepSpeed engine, and
moving the consolidated state (consolidated.py) out of and into a live engine.

The one module that touches DeepSpeed's internals (its optimizer wrappers, ZeRO's lazily linked
tensor fragments, `safe_get/set_full_*`): a DeepSpeed upgrade that moves them changes this file only.
Readers of a finished checkpoint (export, generate, evaluate) never import it, nor DeepSpeed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import deepspeed
import torch
from deepspeed.utils import (
    safe_get_local_fp32_param,
    safe_get_local_optimizer_state,
    safe_set_full_fp32_param,
    safe_set_full_optimizer_state,
    safe_set_local_fp32_param,
    safe_set_local_optimizer_state,
)

from roots_core.atomic import atomic_path
from roots_scale.checkpoint.consolidated import MOMENTS, LayoutFreeReader, Piece, SliceLayout, rank_file
from roots_scale.models.names import model_parameters
from roots_scale.models.tensor_parallel import ModelError, local_slice, partition_of


def base_optimizer(engine) -> torch.optim.Optimizer:
    """The torch optimizer underneath DeepSpeed's ZeRO / bf16 wrappers (itself at ZeRO-0 fp32)."""
    return getattr(engine.optimizer, "optimizer", engine.optimizer)


def link_optimizer_states(engine) -> None:
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


def adam_step(engine) -> int:
    """The Adam step count (the same for every parameter)."""
    for state in base_optimizer(engine).state.values():
        if "step" in state:
            return int(state["step"])
    return 0


def zero0_master(engine, param: torch.Tensor) -> torch.Tensor:
    """The tensor torch's AdamW updates for `param` at ZeRO-0: the parameter itself in fp32, or, in bf16/fp16,
    the fp32 master copy DeepSpeed's unfused mixed-precision optimizer keeps beside it (Adam's state is keyed by
    that copy, and the copy is what the next step writes back into the parameter)."""
    wrapper = engine.optimizer
    for low, masters in zip(getattr(wrapper, "fp16_groups", ()), getattr(wrapper, "fp32_groups", ())):
        for candidate, master in zip(low, masters):
            if candidate is param:
                return master
    return param


def set_fp32(engine, param: torch.Tensor, value: torch.Tensor, moments: dict[str, torch.Tensor]) -> None:
    """Set a parameter's weight, fp32 master copy and Adam moments (TP-local values) in any ZeRO stage. Collective."""
    if engine.zero_optimization_stage() == 3:
        with deepspeed.zero.GatheredParameters([param], modifier_rank=0):
            param.copy_(value)
    else:
        param.copy_(value)
    if hasattr(param, "ds_id") or hasattr(param, "_hp_mapping"):
        safe_set_full_fp32_param(param, value)
        for moment, tensor in moments.items():
            safe_set_full_optimizer_state(param, tensor, moment)
    else:  # ZeRO-0: torch's AdamW holds the moments of the parameter itself, or of its fp32 master copy
        master = zero0_master(engine, param)
        if master is not param:
            master.copy_(value)
        base_optimizer(engine).state[master].update(moments)




@dataclass(frozen=True)
class Coordinates:
    """Where this rank sits in the layout."""

    tp_rank: int
    tp_size: int
    stage: int
    stages: int
    dp_rank: int
    dp_size: int
    rank: int


def zero_fragment(param: torch.Tensor, dp_rank: int) -> tuple[int, int]:
    """(start, numel): the range of `param`'s flattened TP slice that this rank's ZeRO-1/2/3 partition holds."""
    if hasattr(param, "ds_id"):  # ZeRO-3: equal partitions of the flattened slice, the last one padded
        size = param.ds_tensor.ds_numel
        return dp_rank * size, max(0, min(size, param.ds_numel - dp_rank * size))
    mapping = param._hp_mapping  # ZeRO-1/2: the fragment of this rank's flat partition, if any
    return (mapping.lp_fragment_address.start, mapping.lp_fragment_address.numel) if mapping else (0, 0)


def owned_pieces(engine, at: Coordinates) -> Iterator[tuple[Piece, dict[str, torch.Tensor]]]:
    """This rank's share of the fp32 weights and Adam moments, without any communication: per parameter, the
    range of its flattened TP slice that this rank's ZeRO partition holds; at ZeRO-0 (whole copies on every
    replica) the data-parallel ranks take turns by parameter."""
    link_optimizer_states(engine)
    base = base_optimizer(engine)
    for index, (name, param) in enumerate(model_parameters(engine.module)):
        if hasattr(param, "ds_id"):
            start, numel = zero_fragment(param, at.dp_rank)
            values = {"param": safe_get_local_fp32_param(param),
                      **{m: safe_get_local_optimizer_state(param, m) for m in MOMENTS}}
        elif hasattr(param, "_hp_mapping"):
            start, numel = zero_fragment(param, at.dp_rank)
            mapping = param._hp_mapping
            values = {"param": mapping.get_hp_fragment(), **{m: mapping.get_hp_fragment(m) for m in MOMENTS}} \
                if mapping else {}
        else:
            master = zero0_master(engine, param)
            start, numel = 0, param.numel() if index % at.dp_size == at.dp_rank else 0
            values = {"param": master, **{m: base.state[master][m] for m in MOMENTS}}
        if numel:
            yield (Piece(name, at.tp_rank, at.stage, start, numel),
                   {key: value.detach().flatten()[:numel].float().cpu() for key, value in values.items()})


def slice_layouts(engine, tp_size: int) -> dict[str, SliceLayout]:
    """How each of this rank's parameters is cut across the tensor-parallel ranks."""
    return {name: SliceLayout(tuple(param.ds_shape if hasattr(param, "ds_shape") else param.shape), tp_size,
                              partition_of(param))
            for name, param in model_parameters(engine.module)}


def save_layout_free(engine, folder: Path, at: Coordinates) -> list[Piece]:
    """Write this rank's pieces to `folder/rank<N>.pt` (nothing gathered from other ranks); return them."""
    pieces, payload = [], {}
    for piece, values in owned_pieces(engine, at):
        piece = dataclasses.replace(piece, file=rank_file(at.rank))
        pieces.append(piece)
        payload[piece.key] = values
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_path(folder / rank_file(at.rank)) as tmp:
        torch.save(payload, tmp)
    return pieces


def load_into_engine(engine, reader: LayoutFreeReader, at: Coordinates) -> None:
    """Set every weight, fp32 master copy and Adam moment this rank holds from a layout-free folder. Collective.
    The caller checks the folder's names against the whole model (a pipeline stage sees only its part)."""
    link_optimizer_states(engine)
    with torch.no_grad():
        for name, param in model_parameters(engine.module):
            source = reader.source_tp_rank(name, at.tp_rank, at.tp_size)
            if source is None:  # saved on another tensor-parallel cut: re-slice the full tensors
                local = local_slice(param, reader.full(name), name, at.tp_rank, at.tp_size).to(engine.device)
                moments = {m: local_slice(param, reader.full(name, m), name, at.tp_rank, at.tp_size)
                           .to(engine.device) for m in MOMENTS}
                set_fp32(engine, param, local, moments)
            else:
                read_local(engine, reader, name, param, source, at.dp_rank)
    set_adam_step(engine, reader.adam_step)


def read_local(engine, reader: LayoutFreeReader, name: str, param: torch.Tensor, tp_rank: int, dp_rank: int) -> None:
    """Copy `param`'s weight and this rank's range of its fp32 master copy and Adam moments straight from the
    saved TP slice `tp_rank`, which has this rank's shape: no full tensor, and only this rank's ZeRO share of
    the optimizer state, is ever read. Local (no collective)."""
    shape = tuple(param.ds_shape if hasattr(param, "ds_shape") else param.shape)
    if reader.slice_shape(name) != shape:
        raise ModelError(f"parameter {name}: the checkpoint's slice has shape {reader.slice_shape(name)}, the model "
                         f"expects {shape}; the model config differs from the checkpoint's")
    if hasattr(param, "ds_id"):  # ZeRO-3: this rank's partition of the weight and of its state, padded
        start, numel = zero_fragment(param, dp_rank)
        buffer = torch.zeros(param.ds_tensor.ds_numel, dtype=torch.float32, device=param.ds_tensor.device)
        reader.read_into(buffer[:numel], name, None, tp_rank, start)
        param.ds_tensor.copy_(buffer)
        safe_set_local_fp32_param(param, buffer)
        for moment in MOMENTS:
            reader.read_into(buffer[:numel], name, moment, tp_rank, start)
            safe_set_local_optimizer_state(param, buffer, moment)
        return
    master = zero0_master(engine, param) if not hasattr(param, "_hp_mapping") else None
    weight = master if master is not None else param  # at ZeRO-0 the fp32 tensor Adam updates
    if weight.dtype == torch.float32 and weight.is_contiguous():
        reader.read_into(weight.view(-1), name, None, tp_rank, 0)
    else:  # a bf16/fp16 weight at ZeRO-1/2
        values = torch.empty(weight.numel(), dtype=torch.float32)
        reader.read_into(values, name, None, tp_rank, 0)
        weight.copy_(values.view(shape))
    if weight is not param:
        param.copy_(weight)
    if master is not None:  # ZeRO-0: every rank holds all of the state
        state = base_optimizer(engine).state[master]
        for moment in MOMENTS:
            reader.read_into(state[moment].view(-1), name, moment, tp_rank, 0)
    elif param._hp_mapping:  # ZeRO-1/2: the fragment of the flat fp32 partition this rank updates
        start, _ = zero_fragment(param, dp_rank)
        mapping = param._hp_mapping
        for moment in (None, *MOMENTS):
            reader.read_into(mapping.get_hp_fragment(moment), name, moment, tp_rank, start)


def set_adam_step(engine, step: int) -> None:
    for param_state in base_optimizer(engine).state.values():
        param_state["step"] = torch.tensor(float(step))
