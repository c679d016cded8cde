"""The DeepSpeed config derived from ours: one source of truth, passthrough merged on top."""

from __future__ import annotations

from pathlib import Path

from roots_scale.config import load_config, validate
from roots_scale.training.deepspeed_config import build_deepspeed_config

ROOT = Path(__file__).resolve().parents[1]


def derived(tmp_path: Path, world: int, *overrides: str) -> dict:
    cfg = load_config(ROOT / "configs/tiny_gpt.yaml", [f"data.path={tmp_path}", *overrides])
    return build_deepspeed_config(cfg, validate(cfg, world))


def test_batch_precision_and_passthrough(tmp_path: Path) -> None:
    ds = derived(tmp_path, 4, "train.gradient_accumulation_steps=2", "train.precision=fp16",
                 "deepspeed.zero_optimization.overlap_comm=true")
    assert (ds["train_batch_size"], ds["train_micro_batch_size_per_gpu"], ds["gradient_accumulation_steps"]) == (32, 4, 2)
    assert ds["fp16"]["enabled"] and ds["fp16"]["loss_scale"] == 0  # dynamic loss scaling
    assert not ds["bf16"]["enabled"]
    assert ds["zero_optimization"] == {"stage": 1, "overlap_comm": True}


def test_zero_1_and_2_on_one_data_parallel_rank_run_as_stage_0(tmp_path: Path) -> None:
    assert derived(tmp_path, 1, "parallel.zero_stage=1")["zero_optimization"]["stage"] == 0
    assert derived(tmp_path, 2, "parallel.zero_stage=2", "parallel.tensor=2")["zero_optimization"]["stage"] == 0
    assert derived(tmp_path, 2, "parallel.zero_stage=2")["zero_optimization"]["stage"] == 2
    assert derived(tmp_path, 1, "parallel.zero_stage=3")["zero_optimization"]["stage"] == 3
