"""The same training path on a CUDA GPU (NCCL, bf16); skipped on CPU-only machines."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from distributed_helpers import torchrun
from store_helpers import write_random_store


@pytest.mark.gpu
def test_tiny_gpt_trains_in_bf16_on_one_gpu(tmp_path: Path) -> None:
    store = write_random_store(tmp_path / "store")
    proc = torchrun(1, "roots_scale/pretrain.py", "--config", "configs/tiny_gpt.yaml", "train.iters=20",
                    "train.precision=bf16", f"data.path={store}", f"run.output_dir={tmp_path / 'run'}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    losses = [json.loads(line)["loss"] for line in (tmp_path / "run/metrics.jsonl").read_text().splitlines()]
    assert len(losses) == 20 and losses[-1] < losses[0]


def _bf16_run(store: Path, run: Path, *overrides: str) -> list[float]:
    proc = torchrun(1, "roots_scale/pretrain.py", "--config", "configs/tiny_gpt.yaml", "train.iters=6",
                    "train.save_interval=3", "train.precision=bf16", f"data.path={store}", f"run.output_dir={run}",
                    *overrides)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return [json.loads(line)["loss"] for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.gpu
def test_bf16_run_resumes_exactly_and_reshapes_on_one_gpu(tmp_path: Path) -> None:
    """bf16 keeps fp32 master weights beside the bf16 ones: a stopped run continues bit for bit, and the
    layout-free state (the fp32 masters) resumes at another ZeRO stage."""
    store = write_random_store(tmp_path / "store")
    straight = _bf16_run(store, tmp_path / "straight")
    _bf16_run(store, tmp_path / "stopped", "train.exit_interval=3")
    assert _bf16_run(store, tmp_path / "stopped") == straight
    reshaped = tmp_path / "reshaped"
    shutil.copytree(tmp_path / "stopped", reshaped)
    (reshaped / "checkpoints" / "latest").write_text("iter_0000003\n")
    shutil.rmtree(reshaped / "checkpoints" / "iter_0000006")
    (reshaped / "metrics.jsonl").write_text("".join(line + "\n" for line in
                                                    (reshaped / "metrics.jsonl").read_text().splitlines()[:3]))
    losses = _bf16_run(store, reshaped, "parallel.zero_stage=3")
    assert losses[3] == pytest.approx(straight[3], rel=1e-2)
