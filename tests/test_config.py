"""Typed config: presets, overrides, and every class of mistake failing early with a useful message."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from roots_scale.config import ConfigError, load_config, validate
from roots_scale.training.deepspeed_config import build_deepspeed_config

ROOT = Path(__file__).resolve().parents[1]
PRESETS = sorted((ROOT / "configs").glob("*.yaml"))


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p.stem)
def test_every_preset_loads_and_validates(preset: Path, tmp_path: Path) -> None:
    cfg = load_config(preset, [f"data.path={tmp_path}"])
    model_parallel = cfg.parallel.tensor * cfg.parallel.pipeline
    world = 8 * model_parallel
    plan = validate(cfg, world)
    assert plan.global_batch_size == plan.micro_batch_size * plan.gradient_accumulation_steps * (
        world // model_parallel)


def test_named_presets_exist() -> None:
    names = {p.stem for p in PRESETS}
    assert {"tiny_gpt", "tiny_bert", "gpt2_125m", "gpt_350m", "gpt_1b3", "llama_1b",
            "bert_base", "bert_large"} <= names


def test_published_shapes() -> None:
    gpt2 = load_config(ROOT / "configs/gpt2_125m.yaml").model
    assert (gpt2.num_layers, gpt2.hidden_size, gpt2.num_attention_heads) == (12, 768, 12)
    llama = load_config(ROOT / "configs/llama_1b.yaml").model
    assert (llama.kv_heads, llama.ffn_size, llama.activation) == (4, 5632, "swiglu")
    bert = load_config(ROOT / "configs/bert_large.yaml").model
    assert (bert.num_layers, bert.hidden_size, bert.ffn_size) == (24, 1024, 4096)


def test_overrides_in_both_spellings_are_typed() -> None:
    cfg = load_config(ROOT / "configs/tiny_gpt.yaml",
                      ["train.iters=7", "--optimizer.lr", "3e-4", "--parallel.tensor=2", "model.num_kv_heads=null"])
    assert cfg.train.iters == 7 and cfg.parallel.tensor == 2
    assert cfg.optimizer.lr == pytest.approx(3e-4) and isinstance(cfg.optimizer.lr, float)
    assert cfg.model.num_kv_heads is None


def test_misspelled_key_in_yaml_names_key_and_suggestion(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  itres: 5\n")
    with pytest.raises(ConfigError) as err:
        load_config(bad)
    message = str(err.value)
    assert "train.itres" in message and "did you mean 'train.iters'" in message and str(bad) in message


def test_misspelled_section_and_override() -> None:
    with pytest.raises(ConfigError, match="did you mean 'parallel.zero_stage'"):
        load_config(None, ["parallel.zero_stag=2"])
    with pytest.raises(ConfigError, match="unknown key 'trian'"):
        load_config(None, ["trian.iters=2"])


@pytest.mark.parametrize("override, fragment", [
    ("train.iters=abc", "expected an integer"),
    ("train.iters=1.5", "expected an integer"),
    ("run.tensorboard=maybe", "expected true or false"),
    ("parallel.zero_stage=4", "not one of 0, 1, 2, 3"),
    ("train.precision=fp8", "not one of 'fp32', 'bf16', 'fp16'"),
])
def test_wrong_types_are_refused(override: str, fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        load_config(None, [override])


def test_tensor_parallel_must_divide_heads(tmp_path: Path) -> None:
    cfg = load_config(ROOT / "configs/tiny_gpt.yaml", ["parallel.tensor=3", f"data.path={tmp_path}"])
    with pytest.raises(ConfigError, match=r"parallel.tensor = 3 .*num_attention_heads \(4\).*1, 2, 4"):
        validate(cfg, 6)


def test_world_size_must_be_divisible_by_model_parallel(tmp_path: Path) -> None:
    cfg = load_config(ROOT / "configs/tiny_gpt.yaml", ["parallel.tensor=2", f"data.path={tmp_path}"])
    with pytest.raises(ConfigError, match=r"2 × 1 = 2 does not divide the 3 processes of this job.*one of 1, 3"):
        validate(cfg, 3)


def test_global_batch_arithmetic(tmp_path: Path) -> None:
    cfg = load_config(ROOT / "configs/tiny_gpt.yaml", [
        "train.global_batch_size=10", "train.micro_batch_size=4", "train.gradient_accumulation_steps=null",
        f"data.path={tmp_path}"])
    with pytest.raises(ConfigError, match="multiples of 8"):
        validate(cfg, 2)
    cfg.train.global_batch_size = 32
    plan = validate(cfg, 2)
    assert (plan.gradient_accumulation_steps, plan.data_parallel_size) == (4, 2)
    cfg.train.gradient_accumulation_steps = 2
    with pytest.raises(ConfigError, match="contradicts"):
        validate(cfg, 2)


def test_missing_data_path_is_reported(tmp_path: Path) -> None:
    cfg = load_config(ROOT / "configs/tiny_gpt.yaml", [f"data.path={tmp_path / 'nope'}"])
    with pytest.raises(ConfigError, match="data.path .*nope.*roots-data tokenize"):
        validate(cfg, 1)


def test_deepspeed_config_is_derived_and_passthrough_wins(tmp_path: Path) -> None:
    cfg = load_config(ROOT / "configs/tiny_gpt.yaml", [
        "parallel.zero_stage=2", "deepspeed.zero_optimization.overlap_comm=true",
        "train.gradient_accumulation_steps=3", f"data.path={tmp_path}"])
    ds = build_deepspeed_config(cfg, validate(cfg, 2))
    assert ds["train_batch_size"] == 4 * 3 * 2
    assert ds["gradient_accumulation_steps"] == 3
    assert ds["zero_optimization"] == {"stage": 2, "overlap_comm": True}
    assert ds["bf16"]["enabled"] is False and ds["fp16"]["enabled"] is False


@pytest.mark.parametrize("override, key", [("parallel.tensor=3", "parallel.tensor"),
                                           ("train.itres=5", "train.itres")])
def test_cli_fails_before_any_process_group(override: str, key: str, tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "roots_scale/pretrain.py"), "--config", str(ROOT / "configs/tiny_gpt.yaml"),
         f"data.path={tmp_path}", override],
        capture_output=True, text=True, timeout=120, env={"PATH": "/usr/bin:/bin"})
    assert result.returncode == 2, result.stderr
    assert key in result.stderr and "Traceback" not in result.stderr
