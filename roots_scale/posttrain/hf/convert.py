"""The name and layout mapping between roots_scale's full weights and Hugging Face `transformers` models.

"Full weights" are keyed by a TP=1 model's `named_parameters()` (what `layout_free.read_full_state` returns
for a checkpoint of any TP size). Three families, the same function in both frameworks (BERT: but for one
activation, below):

- GPT-2 style (learned positions, LayerNorm, tanh-GELU, multi-head) → `GPT2LMHeadModel`. HF's Conv1D keeps
  weights transposed ([in, out]); `c_attn` is [q; k; v] along the output, ours is grouped per head.
- Llama style (RoPE, RMSNorm, SwiGLU, optionally GQA) → `LlamaForCausalLM`. Our fused QKV rows are
  [kv_heads, q_per_kv + 2, head_dim] (each KV group's query heads, then its key, then its value); HF keeps
  q/k/v apart with query head h served by KV head h // q_per_kv, as in our attention. Our SwiGLU `fc_in`
  is [gate; up] along the output. Both use rotate-half RoPE with the same frequencies.
- BERT (pre-norm, with an embedding LayerNorm and a final norm) → `RobertaPreLayerNormForMaskedLM`,
  the only `transformers` encoder with that exact block order (`BertModel` is post-norm; `MegatronBertModel`
  is pre-norm but has no embedding LayerNorm). RoBERTa numbers positions from `pad_token_id + 1`, so
  our position rows are written after `pad_token_id + 1` zero rows. Its MLM head uses erf-GELU where ours
  uses tanh-GELU (see `BERT_HEAD_GELU_NOTE`); the sentence-order head has no place there and stays behind.

Vocabulary rows are the padded vocabulary (`make_vocab_size_divisible_by`); `vocab_size` in the HF config is
that padded size. A `Rule` ties a group of our tensors to a group of theirs with the layout change both
ways, so export and import are one table read in two directions.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from roots_scale.config import ModelConfig
from roots_scale.posttrain.errors import HFConversionError

Tensors = dict[str, torch.Tensor]
Transform = Callable[[list[torch.Tensor]], list[torch.Tensor]]

TANH_GELUS = ("gelu_new", "gelu_pytorch_tanh", "gelu_fast")  # the same tanh approximation, three HF names
BERT_HEAD_GELU_NOTE = (
    "RobertaPreLayerNorm's MLM head applies erf-GELU where roots_scale's BERT applies tanh-GELU (at most "
    "4.7e-4 apart per activation); everything else is exact")


@dataclass(frozen=True)
class Rule:
    """Our tensors `ours` ↔ HF tensors `theirs`; `rows` marks a first dim an import may resize (vocab/positions)."""

    ours: tuple[str, ...]
    theirs: tuple[str, ...]
    to_hf: Transform
    from_hf: Transform
    rows: str | None = None


@dataclass(frozen=True)
class Family:
    """One HF architecture: config model_type, task model class, the key prefix of its base model, LM kind."""

    model_type: str
    architecture: str
    base_prefix: str  # what the task model prepends to its base model's keys
    causal: bool


GPT2 = Family("gpt2", "GPT2LMHeadModel", "transformer.", causal=True)
LLAMA = Family("llama", "LlamaForCausalLM", "model.", causal=True)
BERT = Family("roberta-prelayernorm", "RobertaPreLayerNormForMaskedLM", "roberta_prelayernorm.", causal=False)


def family_of(cfg: ModelConfig) -> Family:
    """The HF family that represents `cfg` exactly; HFConversionError naming what fits neither."""
    shape = (f"position_embedding={cfg.position_embedding}, normalization={cfg.normalization}, "
             f"activation={cfg.activation}, num_kv_heads={cfg.num_kv_heads}")
    if cfg.arch == "bert":
        if cfg.normalization == "layernorm" and cfg.activation == "gelu" and cfg.kv_heads == cfg.num_attention_heads:
            return BERT
        raise HFConversionError(f"a BERT with {shape} has no transformers equivalent: RobertaPreLayerNorm needs "
                                f"normalization=layernorm, activation=gelu and no grouped-query attention")
    if (cfg.position_embedding, cfg.normalization, cfg.activation) == ("learned", "layernorm", "gelu"):
        if cfg.kv_heads != cfg.num_attention_heads:
            raise HFConversionError(f"a GPT-2 style model with num_kv_heads={cfg.num_kv_heads} (grouped-query) has "
                                    f"no transformers equivalent: GPT2LMHeadModel is multi-head only")
        return GPT2
    if (cfg.position_embedding, cfg.normalization, cfg.activation) == ("rope", "rmsnorm", "swiglu"):
        return LLAMA
    raise HFConversionError(f"a GPT with {shape} matches neither GPT-2 style (learned, layernorm, gelu) nor Llama "
                            f"style (rope, rmsnorm, swiglu), the two transformers families roots_scale converts to")


# --------------------------------------------------------------------------- layouts


def split_qkv(qkv: torch.Tensor, cfg: ModelConfig) -> list[torch.Tensor]:
    """Our fused rows [kv_heads, q_per_kv + 2, head_dim] (weight or bias) → [q, k, v], q rows in head order."""
    groups, dim, rest = cfg.kv_heads, cfg.head_dim, qkv.shape[1:]
    per = cfg.num_attention_heads // groups
    grouped = qkv.reshape(groups, per + 2, dim, *rest)
    return [grouped[:, :per].reshape(groups * per * dim, *rest),
            grouped[:, per].reshape(groups * dim, *rest),
            grouped[:, per + 1].reshape(groups * dim, *rest)]


def merge_qkv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cfg: ModelConfig) -> torch.Tensor:
    """The inverse of `split_qkv`."""
    groups, dim, rest = cfg.kv_heads, cfg.head_dim, q.shape[1:]
    per = cfg.num_attention_heads // groups
    grouped = torch.cat([q.reshape(groups, per, dim, *rest), k.reshape(groups, 1, dim, *rest),
                         v.reshape(groups, 1, dim, *rest)], dim=1)
    return grouped.reshape(-1, *rest)


def _same(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    return tensors


def _transposed(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    return [t.t() for t in tensors]


def _copy(ours: str, theirs: str, transpose: bool = False, rows: str | None = None) -> Rule:
    """One tensor each side, the same values (transposed for HF's Conv1D)."""
    change = _transposed if transpose else _same
    return Rule((ours,), (theirs,), change, change, rows)


def _qkv_apart(ours: str, q: str, k: str, v: str, cfg: ModelConfig) -> Rule:
    """Our fused QKV ↔ separate q/k/v projections (Llama, RoBERTa)."""
    return Rule((ours,), (q, k, v), lambda t: split_qkv(t[0], cfg), lambda t: [merge_qkv(*t, cfg)])


def _qkv_conv1d(ours: str, theirs: str, cfg: ModelConfig, transpose: bool) -> Rule:
    """Our fused QKV ↔ GPT-2's c_attn: [q; k; v] along the output, weights transposed."""
    change = _transposed if transpose else _same
    return Rule((ours,), (theirs,), lambda t: change([torch.cat(split_qkv(t[0], cfg))]),
                lambda t: [merge_qkv(*change(t)[0].chunk(3), cfg)])


def _zero_bias(theirs: str, size: int) -> Rule:
    """A bias HF always has and a bias-free roots_scale model lacks: written as zeros, checked zero on import."""
    def check(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
        if tensors[0].count_nonzero():
            raise HFConversionError(f"{theirs} is non-zero, but the roots_scale config has model.bias=false; "
                                    f"set model.bias=true to keep it")
        return []
    return Rule((), (theirs,), lambda _: [torch.zeros(size)], check)


def _linear(ours: str, theirs: str, cfg: ModelConfig, out_features: int, conv1d: bool = False,
            always_bias: bool = False) -> list[Rule]:
    """A projection's weight and bias; a bias HF always has (`always_bias`) is zero for a bias-free model."""
    rules = [_copy(f"{ours}.weight", f"{theirs}.weight", transpose=conv1d)]
    if cfg.bias:
        rules.append(_copy(f"{ours}.bias", f"{theirs}.bias"))
    elif always_bias:
        rules.append(_zero_bias(f"{theirs}.bias", out_features))
    return rules


def _norm(ours: str, theirs: str, with_bias: bool = True) -> list[Rule]:
    names = ("weight", "bias") if with_bias else ("weight",)
    return [_copy(f"{ours}.{name}", f"{theirs}.{name}") for name in names]


def _gpt2_rules(cfg: ModelConfig) -> list[Rule]:
    rules = [_copy("embedding.weight", "transformer.wte.weight", rows="vocab"),
             _copy("position_embedding.weight", "transformer.wpe.weight", rows="positions")]
    qkv_size = 3 * cfg.hidden_size
    for i in range(cfg.num_layers):
        ours, theirs = f"layers.{i}", f"transformer.h.{i}"
        rules += _norm(f"{ours}.attn_norm", f"{theirs}.ln_1")
        rules.append(_qkv_conv1d(f"{ours}.attn.qkv.weight", f"{theirs}.attn.c_attn.weight", cfg, transpose=True))
        if cfg.bias:
            rules.append(_qkv_conv1d(f"{ours}.attn.qkv.bias", f"{theirs}.attn.c_attn.bias", cfg, transpose=False))
        else:
            rules.append(_zero_bias(f"{theirs}.attn.c_attn.bias", qkv_size))
        rules += _linear(f"{ours}.attn.proj", f"{theirs}.attn.c_proj", cfg, cfg.hidden_size, True, True)
        rules += _norm(f"{ours}.mlp_norm", f"{theirs}.ln_2")
        rules += _linear(f"{ours}.mlp.fc_in", f"{theirs}.mlp.c_fc", cfg, cfg.ffn_size, True, True)
        rules += _linear(f"{ours}.mlp.fc_out", f"{theirs}.mlp.c_proj", cfg, cfg.hidden_size, True, True)
    rules += _norm("final_norm", "transformer.ln_f")
    if not cfg.tie_embeddings:
        rules.append(_copy("output.weight", "lm_head.weight", rows="vocab"))
    return rules


def _llama_rules(cfg: ModelConfig) -> list[Rule]:
    rules = [_copy("embedding.weight", "model.embed_tokens.weight", rows="vocab")]
    names = ("weight", "bias") if cfg.bias else ("weight",)
    for i in range(cfg.num_layers):
        ours, theirs = f"layers.{i}", f"model.layers.{i}"
        rules += _norm(f"{ours}.attn_norm", f"{theirs}.input_layernorm", with_bias=False)
        attn = f"{theirs}.self_attn"
        rules += [_qkv_apart(f"{ours}.attn.qkv.{n}", f"{attn}.q_proj.{n}", f"{attn}.k_proj.{n}",
                             f"{attn}.v_proj.{n}", cfg) for n in names]
        rules += _linear(f"{ours}.attn.proj", f"{attn}.o_proj", cfg, cfg.hidden_size)
        rules += _norm(f"{ours}.mlp_norm", f"{theirs}.post_attention_layernorm", with_bias=False)
        mlp = f"{theirs}.mlp"
        rules += [Rule((f"{ours}.mlp.fc_in.{n}",), (f"{mlp}.gate_proj.{n}", f"{mlp}.up_proj.{n}"),
                       lambda t: list(t[0].chunk(2)), lambda t: [torch.cat(t)]) for n in names]
        rules += _linear(f"{ours}.mlp.fc_out", f"{mlp}.down_proj", cfg, cfg.hidden_size)
    rules += _norm("final_norm", "model.norm", with_bias=False)
    if not cfg.tie_embeddings:
        rules.append(_copy("output.weight", "lm_head.weight", rows="vocab"))
    return rules


def _bert_rules(cfg: ModelConfig, pad_token_id: int) -> list[Rule]:
    base, offset = "roberta_prelayernorm", pad_token_id + 1
    rules = [_copy("embedding.weight", f"{base}.embeddings.word_embeddings.weight", rows="vocab"),
             Rule(("position_embedding.weight",), (f"{base}.embeddings.position_embeddings.weight",),
                  lambda t: [torch.cat([t[0].new_zeros(offset, t[0].shape[1]), t[0]])],
                  lambda t: [t[0][offset:]], rows="positions"),
             _copy("token_type_embedding.weight", f"{base}.embeddings.token_type_embeddings.weight")]
    rules += _norm("embedding_norm", f"{base}.embeddings.LayerNorm")
    for i in range(cfg.num_layers):
        ours, theirs = f"layers.{i}", f"{base}.encoder.layer.{i}"
        attn = f"{theirs}.attention"
        rules += _norm(f"{ours}.attn_norm", f"{attn}.LayerNorm")
        rules.append(_qkv_apart(f"{ours}.attn.qkv.weight", f"{attn}.self.query.weight", f"{attn}.self.key.weight",
                                f"{attn}.self.value.weight", cfg))
        if cfg.bias:
            rules.append(_qkv_apart(f"{ours}.attn.qkv.bias", f"{attn}.self.query.bias", f"{attn}.self.key.bias",
                                    f"{attn}.self.value.bias", cfg))
        else:
            rules += [_zero_bias(f"{attn}.self.{n}.bias", cfg.hidden_size) for n in ("query", "key", "value")]
        rules += _linear(f"{ours}.attn.proj", f"{attn}.output.dense", cfg, cfg.hidden_size, always_bias=True)
        rules += _norm(f"{ours}.mlp_norm", f"{theirs}.intermediate.LayerNorm")
        rules += _linear(f"{ours}.mlp.fc_in", f"{theirs}.intermediate.dense", cfg, cfg.ffn_size, always_bias=True)
        rules += _linear(f"{ours}.mlp.fc_out", f"{theirs}.output.dense", cfg, cfg.hidden_size, always_bias=True)
    rules += _norm("final_norm", f"{base}.LayerNorm")
    rules += [_copy("lm_dense.weight", "lm_head.dense.weight"), _copy("lm_dense.bias", "lm_head.dense.bias")]
    rules += _norm("lm_norm", "lm_head.layer_norm")
    rules.append(_copy("lm_bias", "lm_head.bias", rows="vocab"))
    return rules


def rules_for(cfg: ModelConfig, pad_token_id: int = 0) -> list[Rule]:
    """Every tensor correspondence of `cfg`'s family (`pad_token_id` sets RoBERTa's position offset)."""
    family = family_of(cfg)
    if family is GPT2:
        return _gpt2_rules(cfg)
    if family is LLAMA:
        return _llama_rules(cfg)
    return _bert_rules(cfg, pad_token_id)


def to_hf(params: Tensors, cfg: ModelConfig, pad_token_id: int = 0) -> Tensors:
    """Our full weights → the HF state dict (contiguous tensors, ready for safetensors)."""
    out: Tensors = {}
    for rule in rules_for(cfg, pad_token_id):
        tensors = rule.to_hf([params[name] for name in rule.ours])
        out.update((name, tensor.contiguous()) for name, tensor in zip(rule.theirs, tensors))
    return out


# --------------------------------------------------------------------------- HF config


def hf_config_values(cfg: ModelConfig, vocab_size: int, special_tokens: dict[str, int]) -> dict[str, Any]:
    """The HF config.json fields (model_type and architecture included) of `cfg` with `vocab_size` padded rows."""
    family = family_of(cfg)
    common = {"model_type": family.model_type, "architectures": [family.architecture], "vocab_size": vocab_size,
              "pad_token_id": special_tokens["pad"], "eos_token_id": special_tokens["eod"], "bos_token_id": None}
    if family is GPT2:
        return {**common, "n_positions": cfg.seq_length, **checked_values(cfg),
                "resid_pdrop": cfg.dropout, "embd_pdrop": cfg.dropout, "attn_pdrop": cfg.attention_dropout}
    if family is LLAMA:
        return {**common, "max_position_embeddings": cfg.seq_length, **checked_values(cfg),
                "attention_dropout": cfg.attention_dropout}
    return {**common, "max_position_embeddings": cfg.seq_length + special_tokens["pad"] + 1,
            **checked_values(cfg), "hidden_dropout_prob": cfg.dropout,
            "attention_probs_dropout_prob": cfg.attention_dropout, "cls_token_id": special_tokens["cls"],
            "sep_token_id": special_tokens["sep"], "mask_token_id": special_tokens["mask"]}


def checked_values(cfg: ModelConfig) -> dict[str, Any]:
    """The HF config fields that define the function, as `cfg` sets them; an import checks each one."""
    family = family_of(cfg)
    if family is GPT2:
        return {"n_layer": cfg.num_layers, "n_embd": cfg.hidden_size, "n_head": cfg.num_attention_heads,
                "n_inner": cfg.ffn_size, "layer_norm_epsilon": cfg.norm_eps, "activation_function": "gelu_new",
                "tie_word_embeddings": cfg.tie_embeddings}
    if family is LLAMA:
        return {"num_hidden_layers": cfg.num_layers, "hidden_size": cfg.hidden_size,
                "num_attention_heads": cfg.num_attention_heads, "num_key_value_heads": cfg.kv_heads,
                "head_dim": cfg.head_dim, "intermediate_size": cfg.ffn_size, "rms_norm_eps": cfg.norm_eps,
                "hidden_act": "silu", "attention_bias": cfg.bias, "mlp_bias": cfg.bias,
                "rope_parameters": {"rope_type": "default", "rope_theta": cfg.rope_theta},
                "tie_word_embeddings": cfg.tie_embeddings}
    return {"num_hidden_layers": cfg.num_layers, "hidden_size": cfg.hidden_size,
            "num_attention_heads": cfg.num_attention_heads, "intermediate_size": cfg.ffn_size,
            "layer_norm_eps": cfg.norm_eps, "hidden_act": "gelu_new", "type_vocab_size": 2,
            "tie_word_embeddings": cfg.tie_embeddings}


ROOTS_FIELD = {  # the roots_scale config key behind each checked HF field, for error messages
    "n_layer": "model.num_layers", "num_hidden_layers": "model.num_layers",
    "n_embd": "model.hidden_size", "hidden_size": "model.hidden_size",
    "n_head": "model.num_attention_heads", "num_attention_heads": "model.num_attention_heads",
    "num_key_value_heads": "model.num_kv_heads", "head_dim": "model.hidden_size / model.num_attention_heads",
    "n_inner": "model.ffn_hidden_size", "intermediate_size": "model.ffn_hidden_size",
    "layer_norm_epsilon": "model.norm_eps", "layer_norm_eps": "model.norm_eps", "rms_norm_eps": "model.norm_eps",
    "activation_function": "model.activation", "hidden_act": "model.activation",
    "attention_bias": "model.bias", "mlp_bias": "model.bias", "rope_parameters": "model.rope_theta",
    "type_vocab_size": "(BERT's two token types)", "tie_word_embeddings": "model.tie_embeddings",
}


def check_hf_config(hf: Any, cfg: ModelConfig) -> None:
    """HFConversionError unless the transformers config `hf` (a PretrainedConfig) describes `cfg`'s function."""
    family = family_of(cfg)
    if hf.model_type != family.model_type:
        raise HFConversionError(f"the checkpoint is a {hf.model_type!r} model; the roots_scale config "
                                f"(arch={cfg.arch}, position_embedding={cfg.position_embedding}, "
                                f"normalization={cfg.normalization}, activation={cfg.activation}) is the "
                                f"{family.model_type!r} family")
    for key, ours in checked_values(cfg).items():
        theirs = _hf_value(hf, key)
        if key in ("activation_function", "hidden_act") and ours in TANH_GELUS:
            agrees = theirs in TANH_GELUS
        elif isinstance(ours, float):
            agrees = isinstance(theirs, (int, float)) and abs(theirs - ours) <= 1e-6 * abs(ours)
        else:
            agrees = theirs == ours
        if not agrees:
            raise HFConversionError(f"config.json has {key} = {theirs!r}; the roots_scale config needs {ours!r} "
                                    f"({ROOTS_FIELD[key]})")


def _hf_value(hf: Any, key: str) -> Any:
    """A config field with transformers' defaults resolved (GPT-2's n_inner None = 4 × n_embd)."""
    if key == "n_inner":
        return hf.n_inner or 4 * hf.n_embd
    if key == "rope_parameters":
        rope = dict(hf.rope_parameters or {})
        return {"rope_type": rope.get("rope_type", "default"), "rope_theta": rope.get("rope_theta")}
    return getattr(hf, key, None)
