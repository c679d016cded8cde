"""`roots-train export-hf CHECKPOINT --output DIR`: a checkpoint as a `transformers` model directory.

Writes config.json, model.safetensors (fp32), generation_config.json (GPTs) and the tokenizer
(tokenizer.json + tokenizer_config.json), so `AutoModelForCausalLM` / `AutoModelForMaskedLM` and
`AutoTokenizer.from_pretrained(DIR)` load it offline, with no roots_scale installed. The checkpoint may come
from any TP size and ZeRO stage: its layout-free full weights are what is converted (see `convert`).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from roots_core.tokenizer import Tokenizer
from roots_scale.checkpoint.consolidated import read_full_state
from roots_scale.config import ModelConfig
from roots_scale.models.recurrent import is_recurrent
from roots_scale.posttrain.errors import HFConversionError
from roots_scale.posttrain.load import run_tokenizer
from roots_scale.posttrain.hf.convert import (
    BERT,
    BERT_HEAD_GELU_NOTE,
    Family,
    Tensors,
    family_of,
    hf_config_values,
    to_hf,
)
from roots_scale.posttrain.hf.tokenizer import build_tokenizer


def _check_against_hf(config, state: Tensors, family: Family) -> None:
    """HFConversionError unless `state` holds exactly the HF model's parameters, at its shapes (built on meta)."""
    import transformers

    with torch.device("meta"):
        model = getattr(transformers, family.architecture)(config)
    expected = {name: param.shape for name, param in model.named_parameters()}
    missing, unexpected = sorted(expected.keys() - state.keys()), sorted(state.keys() - expected.keys())
    wrong = [name for name in expected.keys() & state.keys() if state[name].shape != expected[name]]
    if missing or unexpected or wrong:
        raise HFConversionError(f"the converted weights do not fit {family.architecture}: missing {missing[:5]}, "
                                f"unexpected {unexpected[:5]}, wrong shapes {wrong[:5]}")


def export_hf(params: Tensors, cfg: ModelConfig, tokenizer_model: Path, output: Path) -> Family:
    """Write full roots_scale weights (TP=1 names) and the run's sentencepiece model as a transformers directory."""
    from safetensors.torch import save_file
    from transformers import AutoConfig, GenerationConfig

    if is_recurrent(cfg):
        raise HFConversionError(f"model.arch={cfg.arch} has no transformers architecture to export to; write its "
                                f"weights as one state dict with `roots-train convert-checkpoint CHECKPOINT --output "
                                f"FILE` instead")
    if output.exists() and any(output.iterdir()):
        raise HFConversionError(f"{output} is not empty; export into a new directory")
    family = family_of(cfg)
    tokenizer = Tokenizer(tokenizer_model)
    specials = tokenizer.special_tokens
    rows = params["embedding.weight"].shape[0]
    if tokenizer.vocab_size > rows:
        raise HFConversionError(f"tokenizer {tokenizer_model} has {tokenizer.vocab_size} ids; the model only "
                                f"{rows} vocabulary rows: it is not the run's tokenizer")
    values = hf_config_values(cfg, rows, specials)
    config = AutoConfig.for_model(values.pop("model_type"), **values)
    state = to_hf(params, cfg, specials["pad"])
    _check_against_hf(config, state, family)
    output.mkdir(parents=True, exist_ok=True)
    config.save_pretrained(output)
    save_file(state, str(output / "model.safetensors"), metadata={"format": "pt"})
    if family.causal:  # padding rows are never generated: they are no token of the tokenizer
        padding = list(range(tokenizer.vocab_size, rows))
        GenerationConfig(eos_token_id=specials["eod"], pad_token_id=specials["pad"],
                         suppress_tokens=padding or None).save_pretrained(output)
    build_tokenizer(tokenizer.path, family, specials, cfg.seq_length).save_pretrained(output)
    return family


def main(argv: list[str] | None = None) -> int:
    """The `roots-train export-hf` command."""
    parser = argparse.ArgumentParser(
        prog="roots-train export-hf",
        description="Write a checkpoint (any TP size, any ZeRO stage) as a Hugging Face transformers model "
                    "directory with its tokenizer: GPT-2 style → GPT2LMHeadModel, Llama style → LlamaForCausalLM, "
                    "BERT → RobertaPreLayerNormForMaskedLM.")
    parser.add_argument("checkpoint", help="run directory, its checkpoints/ folder, or one iter_NNNNNNN folder")
    parser.add_argument("--output", required=True, type=Path, help="new directory to write")
    parser.add_argument("--tokenizer", type=Path,
                        help="the run's sentencepiece .model (default: the one the run's store manifest names)")
    args = parser.parse_args(argv)
    state = read_full_state(args.checkpoint)
    tokenizer = run_tokenizer(state.config, args.tokenizer)
    family = export_hf(state.params, state.config.model, tokenizer.path, args.output)
    rows = state.params["embedding.weight"].shape[0]
    auto = "AutoModelForCausalLM" if family.causal else "AutoModelForMaskedLM"
    print(f"wrote {args.output}: {family.architecture} from step {state.step}, "
          f"{sum(t.numel() for t in state.params.values()):,} parameters (fp32); vocab_size {rows} = the tokenizer's "
          f"{tokenizer.vocab_size} ids padded to a multiple of {state.config.model.make_vocab_size_divisible_by}")
    if family is BERT:
        print(f"note: {BERT_HEAD_GELU_NOTE}")
    print(f"load it with transformers.{auto}.from_pretrained('{args.output}') and "
          f"AutoTokenizer.from_pretrained('{args.output}')")
    return 0
