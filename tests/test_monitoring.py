"""Monitoring: tensorboard and metrics.jsonl fields, the console line, validation, time budget, train.tokens."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from in_process import ROOT, RankResult, pretrain_ranks
from roots_scale.config import ConfigError, load_config, save_config, validate
from roots_scale.training.metrics import format_console, tensorboard_tag
from store_helpers import write_random_store

TRAIN_FIELDS = {"loss", "lr", "grad_norm", "consumed_samples", "skipped_steps", "tokens_per_sec", "samples_per_sec",
                "tflops_per_device", "mfu", "mem_gb"}
VALID_FIELDS = {"valid_loss", "valid_ppl"}


def train(run_dir: Path, store: Path, *overrides: str, nproc: int = 2, expect: int = 0) -> list[RankResult]:
    return pretrain_ranks(nproc, "--config", "configs/tiny_gpt.yaml", f"data.path={store}",
                          f"run.output_dir={run_dir}", "train.log_interval=1", *overrides, expect=expect, timeout=120)


def records(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_console_line_format() -> None:
    values = {"loss": 3.4123, "lr": 2.9e-4, "grad_norm": 0.81, "consumed_samples": 9, "tokens_per_sec": 41234.0,
              "tflops_per_device": 123.4, "mfu": 0.451, "mem_gb": 31.2}
    assert format_console(120, 1000, values) == (
        "step 120/1000 | loss 3.412 | lr 2.9e-04 | grad 0.81 | 41.2k tok/s | 123.4 TFLOP/s | MFU 45.1% | mem 31.2 GB")
    valid = {"valid_loss": 3.0, "valid_ppl": 20.09}
    assert format_console(6, 8, valid) == "step 6/8 | valid loss 3.000 | valid ppl 20.09"
    tags = [tensorboard_tag(f) for f in ("loss", "valid_loss", "valid_ppl")]
    assert tags == ["train/loss", "valid/loss", "valid/ppl"]


def test_train_tokens_resolves_iters_and_config_records_both(tmp_path: Path) -> None:
    cfg = load_config(ROOT / "configs/tiny_gpt.yaml", ["train.tokens=10000", f"data.path={tmp_path}"])
    plan = validate(cfg, 2)  # global batch 4 × 1 × 2 = 8 samples of 64 tokens = 512 tokens per step
    assert plan.global_batch_size == 8 and cfg.train.iters == 20  # ceil(10000 / 512)
    save_config(cfg, tmp_path / "config.yaml")
    recorded = load_config(tmp_path / "config.yaml").train
    assert (recorded.tokens, recorded.iters) == (10000, 20)


def test_validation_needs_a_valid_split(tmp_path: Path) -> None:
    cfg = load_config(ROOT / "configs/tiny_gpt.yaml", ["train.eval_interval=5", "data.split=100,0,0",
                                                       f"data.path={tmp_path}"])
    with pytest.raises(ConfigError, match="data.split .*valid share.*train.eval_interval"):
        validate(cfg, 1)


@pytest.mark.slow
def test_metrics_tensorboard_console_and_validation_leave_training_unchanged(tmp_path: Path) -> None:
    store = write_random_store(tmp_path / "store")
    steps = 6
    monitored = train(tmp_path / "monitored", store, f"train.iters={steps}", "train.eval_interval=3",
                      "train.eval_iters=2", "train.peak_tflops=0.5")
    metrics = records(tmp_path / "monitored")
    assert [m["step"] for m in metrics] == list(range(1, steps + 1))
    for m in metrics:
        expected = TRAIN_FIELDS | (VALID_FIELDS if m["step"] % 3 == 0 else set())
        assert set(m) - {"step"} == expected, m
        assert 0 < m["mfu"] < 1 and m["mem_gb"] > 0.05 and m["tokens_per_sec"] == 64 * m["samples_per_sec"]
    valid = [m for m in metrics if "valid_loss" in m]
    assert all(m["valid_ppl"] == pytest.approx(math.exp(m["valid_loss"])) for m in valid)

    events = EventAccumulator(str(tmp_path / "monitored" / "tensorboard"))
    events.Reload()
    assert set(events.Tags()["scalars"]) == {tensorboard_tag(f) for f in TRAIN_FIELDS | VALID_FIELDS}
    for field in TRAIN_FIELDS | VALID_FIELDS:
        logged = [(e.step, e.value) for e in events.Scalars(tensorboard_tag(field))]
        assert logged == [(m["step"], pytest.approx(m[field], rel=1e-6)) for m in metrics if field in m], field

    lines = [line for line in monitored[0].output.splitlines() if line.startswith("step ")]
    assert len(lines) == steps
    assert not [line for line in monitored[1].output.splitlines() if line.startswith("step ")]  # rank 0 only
    assert lines[2].startswith("step 3/6 | loss ") and " tok/s | " in lines[2] and "| MFU " in lines[2]
    assert lines[2].endswith(f"| valid loss {valid[0]['valid_loss']:.3f} | valid ppl {valid[0]['valid_ppl']:.2f}")

    train(tmp_path / "plain", store, f"train.iters={steps}")
    assert [m["loss"] for m in records(tmp_path / "plain")] == [m["loss"] for m in metrics]  # bitwise
    assert [m["grad_norm"] for m in records(tmp_path / "plain")] == [m["grad_norm"] for m in metrics]


@pytest.mark.slow
def test_exit_duration_saves_stops_and_the_same_command_continues(tmp_path: Path) -> None:
    store = write_random_store(tmp_path / "store")
    run = tmp_path / "run"
    budget = ["train.iters=8", "train.exit_duration_minutes=0.001"]  # spent before the first step ends
    first = train(run, store, *budget, expect=3)
    assert "stopped after the exit-duration budget (exit code 3); rerun the same command to continue" in first[0].output
    assert json.loads((run / "exit_status.json").read_text())["requeue"] is True
    assert (run / "checkpoints" / "latest").read_text().strip() == "iter_0000001"
    second = train(run, store, *budget, expect=3)
    assert "resumed from step 1" in second[0].output and "exit-duration budget" in second[0].output
    assert (run / "checkpoints" / "latest").read_text().strip() == "iter_0000002"
    assert [m["step"] for m in records(run)] == [1, 2]


@pytest.mark.gpu
def test_fp16_logs_the_loss_scale_on_gpu(tmp_path: Path) -> None:
    store = write_random_store(tmp_path / "store")
    train(tmp_path / "run", store, "train.iters=4", "train.precision=fp16", nproc=1)
    assert all(m["loss_scale"] > 0 for m in records(tmp_path / "run"))
