"""Hugging Face conversion at TP=1, both ways: the same logits (≤ 1e-4, fp32), the same token ids, clear errors."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from hf_models import (
    STYLES,
    TOKENIZER_VOCAB,
    VOCAB_ROWS,
    hf_logits,
    inputs,
    max_difference,
    our_logits,
    random_model,
    write_text_store,
)
from roots_scale.config import ModelConfig
from roots_scale.posttrain.errors import HFConversionError
from roots_scale.posttrain.hf.convert import family_of
from roots_scale.posttrain.hf.export import export_hf
from roots_scale.posttrain.hf.load import init_model_from_hf
from roots_scale.models import build_model
from roots_scale.posttrain.load import single_process_world

TEXTS = [
    "The model and the data.",
    "  two leading spaces, trailing spaces   ",
    "tabs\tin\t\tthe middle\nand\n\nnew lines\r\n",
    "digits 0123456789 3.14159 2024-05-18",
    "emoji 😀🚀👩‍👩‍👧 and CJK 日本語の文章, Cyrillic Привет, accents é ü ñ",
    "a<mask>b <cls> query<sep>key",
    "▁already escaped▁▁",
    "",
]


@pytest.fixture(scope="module", autouse=True)
def world():
    with single_process_world():
        yield


@pytest.fixture(scope="module")
def spm_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_text_store(tmp_path_factory.mktemp("text"))[0]


@pytest.fixture(scope="module")
def exported(spm_model: Path, tmp_path_factory: pytest.TempPathFactory):
    """style → (the random model, its export directory), made once per style."""
    made = {}

    def export(style: str):
        if style not in made:
            model = random_model(style, seed=1)
            directory = tmp_path_factory.mktemp(style) / "hf"
            export_hf(dict(model.named_parameters()), STYLES[style], spm_model, directory)
            made[style] = model, directory
        return made[style]

    return export


def assert_round_trip(style: str, exported) -> None:
    """Export: HF logits = ours. Import into a differently initialized model: the same weights and logits again."""
    model, directory = exported(style)
    batch = inputs(style)
    theirs = hf_logits(directory, style, batch)
    assert theirs.shape == (2, 32, VOCAB_ROWS)
    assert max_difference(our_logits(model, batch), theirs, batch) <= 1e-4
    torch.manual_seed(99)
    fresh = build_model(STYLES[style], VOCAB_ROWS).eval()
    init_model_from_hf(fresh, directory, STYLES[style])
    assert max_difference(our_logits(fresh, batch), theirs, batch) <= 1e-4
    original = dict(model.named_parameters())
    for name, param in fresh.named_parameters():
        if not name.startswith(("pooler", "sop_head")):  # BERT's sentence-order head has no HF counterpart
            assert torch.equal(param, original[name]), name


@pytest.mark.parametrize("style", ["gpt2", "gpt2_untied_nobias", "llama_gqa", "llama_tied_bias"])
def test_gpt_families_convert_both_ways_exactly(style: str, exported) -> None:
    assert_round_trip(style, exported)


def test_bert_converts_both_ways_exactly(exported) -> None:
    assert_round_trip("bert", exported)


def test_exported_tokenizer_gives_our_ids(spm_model: Path, exported) -> None:
    from transformers import AutoTokenizer

    from roots_core.tokenizer import Tokenizer

    ours = Tokenizer(spm_model)
    for style in ("gpt2", "bert"):
        hf = AutoTokenizer.from_pretrained(exported(style)[1], local_files_only=True)
        assert len(hf) == TOKENIZER_VOCAB
        assert {name: getattr(hf, f"{name}_token_id") for name in ("pad", "unk", "eos", "mask", "cls", "sep")} == \
            {"pad": 0, "unk": 1, "eos": 2, "mask": 3, "cls": 4, "sep": 5}
        for text in TEXTS:
            ids = hf(text, add_special_tokens=False)["input_ids"]
            assert ids == ours.encode(text), text
            assert hf.decode(ids) == ours.decode(ids)
    bert = AutoTokenizer.from_pretrained(exported("bert")[1], local_files_only=True)
    pair = bert("model data", "loss")
    a, b = ours.encode("model data"), ours.encode("loss")
    assert pair["input_ids"] == [4, *a, 5, *b, 5]  # [CLS] A [SEP] B [SEP], as our BERT samples
    assert pair["token_type_ids"] == [0] * (len(a) + 2) + [1] * (len(b) + 1)
    gpt = AutoTokenizer.from_pretrained(exported("gpt2")[1], local_files_only=True)
    assert gpt("model data")["input_ids"] == ours.encode("model data")  # no BOS/EOS added for GPTs


def test_hub_shaped_gpt2_imports(exported, tmp_path: Path) -> None:
    """A GPT2Model checkpoint (keys without `transformer.`), a smaller vocabulary and more positions than ours."""
    _, directory = exported("gpt2")
    hub = tmp_path / "hub"
    hub.mkdir()
    exported_state = load_file(directory / "model.safetensors")
    state = {key.removeprefix("transformer."): value for key, value in exported_state.items()}
    state["wte.weight"] = state["wte.weight"][:TOKENIZER_VOCAB].clone()
    state["wpe.weight"] = torch.cat([state["wpe.weight"], torch.randn(32, 64)])
    save_file(state, hub / "model.safetensors")
    config = json.loads((directory / "config.json").read_text())
    (hub / "config.json").write_text(json.dumps({**config, "vocab_size": TOKENIZER_VOCAB, "n_positions": 64,
                                                 "architectures": ["GPT2Model"]}))
    model = build_model(STYLES["gpt2"], VOCAB_ROWS).eval()
    with pytest.warns(UserWarning, match="300 vocabulary rows"):
        init_model_from_hf(model, hub, STYLES["gpt2"])
    batch = inputs("gpt2")
    ours = our_logits(model, batch)
    assert torch.count_nonzero(ours[..., TOKENIZER_VOCAB:]) == 0  # padding rows start at zero
    theirs = hf_logits(directory, "gpt2", batch)[..., :TOKENIZER_VOCAB]
    assert max_difference(ours[..., :TOKENIZER_VOCAB], theirs, batch) <= 1e-4


def test_mismatches_are_named(exported, tmp_path: Path) -> None:
    _, directory = exported("llama_gqa")
    cfg = STYLES["llama_gqa"]
    deeper = dataclasses.replace(cfg, num_layers=3)
    with pytest.raises(HFConversionError, match=r"num_hidden_layers = 2; .* needs 3 \(model.num_layers\)"):
        init_model_from_hf(build_model(deeper, VOCAB_ROWS).eval(), directory, deeper)
    theta = dataclasses.replace(cfg, rope_theta=10000.0)
    with pytest.raises(HFConversionError, match="rope_parameters .*model.rope_theta"):
        init_model_from_hf(build_model(theta, VOCAB_ROWS).eval(), directory, theta)

    broken = tmp_path / "broken"
    shutil.copytree(directory, broken)
    state = load_file(broken / "model.safetensors")
    state["model.layers.1.self_attn.k_proj.weight"] = torch.zeros(16, 64)
    del state["model.layers.0.mlp.up_proj.weight"]
    save_file(state, broken / "model.safetensors")
    with pytest.raises(HFConversionError, match=r"lacks model\.layers\.0\.mlp\.up_proj\.weight \(shape \[256, 64\]\)"):
        init_model_from_hf(build_model(cfg, VOCAB_ROWS).eval(), broken, cfg)
    state["model.layers.0.mlp.up_proj.weight"] = torch.zeros(256, 64)
    save_file(state, broken / "model.safetensors")
    with pytest.raises(HFConversionError, match=r"k_proj\.weight has shape \[16, 64\]; .* needs \[32, 64\]"):
        init_model_from_hf(build_model(cfg, VOCAB_ROWS).eval(), broken, cfg)

    with pytest.raises(HFConversionError, match="is a 'llama' model; .* is the 'gpt2' family"):
        init_model_from_hf(build_model(STYLES["gpt2"], VOCAB_ROWS).eval(), directory, STYLES["gpt2"])
    with pytest.raises(HFConversionError, match="matches neither GPT-2 style .* nor Llama style"):
        family_of(ModelConfig(position_embedding="rope", normalization="layernorm", activation="gelu"))
    with pytest.raises(HFConversionError, match="is not empty"):
        export_hf(dict(random_model("llama_gqa", 1).named_parameters()), cfg, Path("unused.model"), directory)
