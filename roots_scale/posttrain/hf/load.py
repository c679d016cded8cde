"""Initialize a roots_scale model, at any tensor-parallel size, from a `transformers` checkpoint directory.

For continued pretraining: `init_model_from_hf(model, DIR, cfg.model)` after the process groups exist and
before the engine wraps the model. Every rank reads the safetensors files, converts them to full weights
(`convert.rules_for`, read backwards) and keeps its own slice. The HF config must describe the same function
as the roots_scale config (layers, sizes, heads, norm eps, activation, RoPE theta, biases, tying), else
HFConversionError names the field. Two sizes may differ: an HF vocabulary smaller than our padded one is
padded with zero rows, and HF position rows beyond `model.seq_length` are dropped.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import torch
from megatron.core import parallel_state
from torch import nn

from roots_scale.config import ModelConfig
from roots_scale.models.tensor_parallel import load_full_params, partition_of
from roots_scale.posttrain.errors import HFConversionError
from roots_scale.posttrain.hf.convert import BERT, Rule, Tensors, check_hf_config, family_of, rules_for

_BUFFERS = (".attn.bias", ".attn.masked_bias", "rotary_emb.inv_freq", "embeddings.position_ids")
_ROBERTA_EXTRAS = ("lm_head.decoder.weight", "lm_head.decoder.bias", "roberta_prelayernorm.pooler.")


def read_hf_weights(hf_dir: Path) -> Tensors:
    """Every tensor of a transformers model directory (model.safetensors, or shards named by its index), fp32."""
    from safetensors.torch import load_file

    index = hf_dir / "model.safetensors.index.json"
    if index.is_file():
        files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    elif (hf_dir / "model.safetensors").is_file():
        files = ["model.safetensors"]
    else:
        raise HFConversionError(f"{hf_dir} holds no model.safetensors (nor model.safetensors.index.json); save the "
                                f"model with transformers' save_pretrained, whose default format that is")
    state: Tensors = {}
    for name in files:
        state.update(load_file(hf_dir / name))
    return {key: tensor.float() for key, tensor in state.items()}


def full_shapes(model: nn.Module) -> dict[str, torch.Size]:
    """Each parameter's unsharded shape: its tensor-parallel slice times the TP size along the partition dim."""
    tp_size = parallel_state.get_tensor_model_parallel_world_size()
    shapes = {}
    for name, param in model.named_parameters():
        shape = list(param.shape)
        where = partition_of(param)
        if where is not None:
            shape[where[0]] *= tp_size
        shapes[name] = torch.Size(shape)
    return shapes


def _with_base_prefix(state: Tensors, prefix: str) -> Tensors:
    """Keys of a base-model checkpoint (GPT2Model's `h.0...`) as the task model names them (`transformer.h.0...`)."""
    if any(key.startswith(prefix) for key in state):
        return state
    return {key if key.startswith("lm_head.") else prefix + key: tensor for key, tensor in state.items()}


def _ignorable(key: str, cfg: ModelConfig) -> bool:
    """HF tensors with no roots_scale counterpart that change nothing: buffers, tied copies, BERT's pooler."""
    if key.endswith(_BUFFERS):
        return True
    if family_of(cfg) is BERT:
        return key.startswith(_ROBERTA_EXTRAS)
    return key == "lm_head.weight" and cfg.tie_embeddings


def _fit(key: str, tensor: torch.Tensor, expected: torch.Size, rule: Rule) -> torch.Tensor:
    """`tensor` at the expected shape: exact, or with the rows an import may resize; else HFConversionError."""
    if tensor.shape == expected:
        return tensor
    rows, wanted = tensor.shape[0], expected[0]
    if rule.rows == "vocab" and tensor.shape[1:] == expected[1:] and rows < wanted:
        warnings.warn(f"{key}: the checkpoint has {rows} vocabulary rows, the model {wanted}; rows {rows}.. start "
                      f"at zero", stacklevel=3)
        return torch.cat([tensor, tensor.new_zeros(wanted - rows, *tensor.shape[1:])])
    if rule.rows == "positions" and tensor.shape[1:] == expected[1:] and rows > wanted:
        return tensor[:wanted]
    hint = {"vocab": "model.vocab_size and model.make_vocab_size_divisible_by set the padded vocabulary",
            "positions": "model.seq_length sets the positions"}.get(rule.rows or "", "the configs differ")
    raise HFConversionError(f"{key} has shape {list(tensor.shape)}; the roots_scale model needs {list(expected)} "
                            f"for {', '.join(rule.ours) or 'a zero bias'} ({hint})")


def params_from_hf(state: Tensors, cfg: ModelConfig, shapes: dict[str, torch.Size], pad_token_id: int = 0) -> Tensors:
    """Full roots_scale weights from an HF state dict; `shapes` are the model's full shapes (see `full_shapes`)."""
    family = family_of(cfg)
    state = _with_base_prefix(state, family.base_prefix)
    rules = rules_for(cfg, pad_token_id)
    probe = {name: torch.empty(shape, device="meta") for name, shape in shapes.items()}
    expected = {}
    for rule in rules:
        expected.update(zip(rule.theirs, (t.shape for t in rule.to_hf([probe[name] for name in rule.ours]))))
    unexpected = sorted(key for key in state if key not in expected and not _ignorable(key, cfg))
    if unexpected:
        raise HFConversionError(f"the checkpoint has tensors the roots_scale model has no place for: "
                                f"{', '.join(unexpected[:5])}{' ...' if len(unexpected) > 5 else ''} (more layers "
                                f"or another architecture than the config describes?)")
    params: Tensors = {}
    for rule in rules:
        missing = [key for key in rule.theirs if key not in state]
        if missing:
            raise HFConversionError(f"the checkpoint lacks {missing[0]} (shape {list(expected[missing[0]])}), which "
                                    f"the roots_scale model needs for {', '.join(rule.ours) or 'a zero bias'}")
        tensors = [_fit(key, state[key], expected[key], rule) for key in rule.theirs]
        params.update(zip(rule.ours, rule.from_hf(tensors)))
    return params


def init_model_from_hf(model: nn.Module, hf_dir: str | Path, cfg: ModelConfig) -> None:
    """Load a transformers checkpoint directory into a freshly built GPT/BERT of any TP size (every rank calls it).

    Needs megatron-core's groups (TP size and rank). Parameters the checkpoint cannot hold (BERT's pooler and
    sentence-order head) keep their initialization, with a warning. Raises HFConversionError.
    """
    from transformers import AutoConfig

    hf_dir = Path(hf_dir)
    if not (hf_dir / "config.json").is_file():
        raise HFConversionError(f"{hf_dir} is not a transformers model directory: it has no config.json")
    try:
        hf_config = AutoConfig.from_pretrained(hf_dir, local_files_only=True)
    except (OSError, ValueError) as err:
        raise HFConversionError(f"{hf_dir}/config.json is not a config transformers can read: {err}") from err
    check_hf_config(hf_config, cfg)
    pad_token_id = hf_config.pad_token_id if family_of(cfg) is BERT else 0
    params = params_from_hf(read_hf_weights(hf_dir), cfg, full_shapes(model), pad_token_id)
    named = dict(model.named_parameters())
    kept = [name for name in named if name not in params]
    for name in kept:
        if partition_of(named[name]) is not None:
            raise HFConversionError(f"{name} is tensor-parallel and has no counterpart in {hf_dir}")
        params[name] = named[name].detach().clone()
    if kept:
        warnings.warn(f"{hf_dir} has no weights for {', '.join(kept)}; they keep their initialization", stacklevel=2)
    load_full_params(model, params)
