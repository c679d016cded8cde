"""The same training path on a CUDA GPU (NCCL, bf16); skipped on CPU-only machines."""

from __future__ import annotations

import json
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
