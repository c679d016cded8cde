"""The same training run on any layout: ZeRO stages 0-3, and TP=2 × DP=2 on 4 processes (CPU, fp32),
for GPT-2 style, Llama style and BERT (MLM + sentence order). Ranks are forked gloo processes
(tests/in_process.py); real launchers are proven in test_training_layouts and test_launch."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from in_process import pretrain_ranks
from store_helpers import write_random_store

STEPS = 10
STYLES = {  # config preset and overrides
    "gpt2": ("configs/tiny_gpt.yaml", []),
    "llama": ("configs/tiny_gpt.yaml", ["model.position_embedding=rope", "model.normalization=rmsnorm",
                                        "model.activation=swiglu", "model.num_kv_heads=2", "model.bias=false",
                                        "model.tie_embeddings=false"]),
    "bert": ("configs/tiny_bert.yaml", ["model.seq_length=32", "model.dropout=0", "model.attention_dropout=0"]),
}


def train(tmp_path: Path, name: str, nproc: int, style: str, *overrides: str) -> list[tuple[float, float]]:
    store = tmp_path / "store"
    if not store.exists():
        write_random_store(store)
    run_dir = tmp_path / name
    preset, style_overrides = STYLES[style]
    pretrain_ranks(nproc, "--config", preset, f"train.iters={STEPS}", "optimizer.warmup_iters=2",
                   f"data.path={store}", f"run.output_dir={run_dir}", "train.log_interval=1", *style_overrides,
                   *overrides)
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == list(range(1, STEPS + 1))
    return [(r["loss"], r["grad_norm"]) for r in records]


def assert_same_curve(curve: list[tuple[float, float]], reference: list[tuple[float, float]], label: str) -> None:
    for step, ((loss, norm), (ref_loss, ref_norm)) in enumerate(zip(curve, reference), start=1):
        assert loss == pytest.approx(ref_loss, rel=1e-5), f"{label}: loss at step {step}"
        assert norm == pytest.approx(ref_norm, rel=1e-5), f"{label}: grad norm at step {step}"


@pytest.mark.slow
@pytest.mark.parametrize("style", sorted(STYLES))
def test_zero_stages_give_the_same_loss_curve(style: str, tmp_path: Path) -> None:
    curves = {stage: train(tmp_path, f"zero{stage}", 2, style, f"parallel.zero_stage={stage}")
              for stage in (0, 1, 2, 3)}
    for stage in (0, 2, 3):
        assert_same_curve(curves[stage], curves[1], f"{style} ZeRO-{stage} vs ZeRO-1")


@pytest.mark.slow
@pytest.mark.parametrize("style", sorted(STYLES))
def test_tp2_dp2_on_four_processes_matches_one_process(style: str, tmp_path: Path) -> None:
    # global batch 8 = micro 4 × accumulation 2 × DP 1  =  micro 4 × accumulation 1 × DP 2
    single = train(tmp_path, "tp1dp1", 1, style, "train.gradient_accumulation_steps=2")
    grid = train(tmp_path, "tp2dp2", 4, style, "parallel.tensor=2", "train.gradient_accumulation_steps=1")
    assert_same_curve(grid, single, f"{style} TP2×DP2 vs TP1×DP1")
