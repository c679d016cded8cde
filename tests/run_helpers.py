"""Short training runs on forked gloo ranks and their comparison, shared by the layout tests (pipeline, sequence
parallelism, checkpoints): a tiny GPT-2 or Llama-style model, 10 steps, losses, gradient norms and validation
compared at fp32; two checkpoints' layout-free states compared bit for bit."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from in_process import pretrain_ranks
from roots_scale.checkpoint.consolidated import MOMENTS, LayoutFreeReader

STEPS = 10
LLAMA = ["model.position_embedding=rope", "model.normalization=rmsnorm", "model.activation=swiglu",
         "model.num_kv_heads=2", "model.bias=false", "model.tie_embeddings=false"]
STYLES = {"gpt2": [], "llama": LLAMA}
PIPELINE_4_LAYERS = ["model.num_layers=4"]  # every stage of a 2-stage pipeline holds two blocks


def records(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def train(store: Path, run_dir: Path, nproc: int, *overrides: str, callbacks=None, expect: int = 0) -> str:
    """A tiny GPT on `nproc` ranks; what the ranks printed."""
    results = pretrain_ranks(
        nproc, "--config", "configs/tiny_gpt.yaml", f"data.path={store}", f"run.output_dir={run_dir}",
        "model.seq_length=32", *PIPELINE_4_LAYERS, f"train.iters={STEPS}", "optimizer.warmup_iters=2",
        "train.log_interval=1", "train.eval_interval=5", "train.eval_iters=2", "train.save_interval=100",
        "run.tensorboard=false", "train.peak_tflops=1", *overrides, callbacks=callbacks, expect=expect)
    return "\n".join(result.output for result in results)


def assert_same_run(run: Path, reference: Path, label: str, same_validation_set: bool = True) -> None:
    """Loss, gradient norm and (on the same number of data-parallel ranks, which sets the validation samples)
    validation loss of every step, within fp32 tolerance (1e-5 relative)."""
    ours, theirs = records(run), records(reference)
    assert [r["step"] for r in ours] == [r["step"] for r in theirs] == list(range(1, STEPS + 1))
    for mine, ref in zip(ours, theirs):
        for key in ("loss", "grad_norm", "valid_loss") if same_validation_set else ("loss", "grad_norm"):
            if key in ref:
                assert mine[key] == pytest.approx(ref[key], rel=1e-5), f"{label}: {key} at step {ref['step']}"


def same_weights_and_moments(first: Path, second: Path) -> bool:
    """Whether two checkpoints' layout-free states hold bit-identical weights, moments and Adam step."""
    a, b = (LayoutFreeReader(folder / "layout_free") for folder in (first, second))
    return a.names == b.names and a.adam_step == b.adam_step and all(
        torch.equal(a.full(name, moment), b.full(name, moment)) for name in a.names for moment in (None, *MOMENTS))
