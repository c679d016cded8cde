"""End to end: the README's `make demo`, proof that its resume continued exactly, then `make demo-finetune`."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from distributed_helpers import ROOT, torchrun


def read_metrics(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.slow
def test_make_demo_trains_checkpoints_resumes_and_logs(tmp_path: Path) -> None:
    demo = tmp_path / "demo"
    result = subprocess.run(["make", "demo", f"DEMO={demo}"], cwd=ROOT, capture_output=True, text=True,
                            timeout=900, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "resumed from step 20" in result.stdout
    assert "tensorboard --logdir" in result.stdout

    run = demo / "tiny_gpt"
    checkpoints = run / "checkpoints"
    assert (checkpoints / "latest").read_text().strip() == "iter_0000040"
    assert (checkpoints / "iter_0000020").is_dir()
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    assert (run / "config.yaml").is_file()

    metrics = read_metrics(run / "metrics.jsonl")
    assert [m["step"] for m in metrics] == list(range(1, 41))  # resumed at 21, nothing lost or repeated
    assert {"loss", "lr", "grad_norm", "consumed_samples", "tokens_per_sec"} <= metrics[0].keys()
    assert [m["consumed_samples"] for m in metrics] == [8 * s for s in range(1, 41)]
    assert metrics[-1]["loss"] < metrics[0]["loss"] - 0.5  # it learns

    # The resumed run continues exactly as an uninterrupted one would: bitwise-equal losses.
    straight = tmp_path / "straight"
    proc = torchrun(2, "roots_scale/pretrain.py", "--config", "configs/tiny_gpt.yaml",
                    f"data.path={demo / 'store'}", f"run.output_dir={straight}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert [m["loss"] for m in read_metrics(straight / "metrics.jsonl")] == [m["loss"] for m in metrics]

    # make demo-finetune: the tiny GPT fine-tuned to tell each passage's source, above the majority baseline
    result = subprocess.run(["make", "demo-finetune", f"DEMO={demo}"], cwd=ROOT, capture_output=True, text=True,
                            timeout=900, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "f1_macro" in result.stdout and "true \\ predicted" in result.stdout
    evaluation = json.loads((demo / "finetune_source" / "evaluation.json").read_text())
    labels = [json.loads(line)["label"] for line in (demo / "labels" / "valid.jsonl").read_text().splitlines()]
    majority = max(labels.count(label) for label in set(labels)) / len(labels)
    assert evaluation["metrics"]["accuracy"] > majority + 0.05
    best = json.loads((demo / "finetune_source" / "checkpoints" / "best.json").read_text())
    assert best["metric"] == "valid_f1_macro" and evaluation["metrics"]["f1_macro"] == pytest.approx(best["value"])
