"""BERT trains through the same entry point as GPT: MLM + sentence order, 2 processes, ZeRO-1."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from in_process import pretrain_ranks
from store_helpers import write_random_store


@pytest.mark.slow
def test_tiny_bert_trains_and_resumes_on_two_processes(tmp_path: Path) -> None:
    store = write_random_store(tmp_path / "store", num_documents=200, max_length=120)
    args = ["--config", "configs/tiny_bert.yaml", "train.iters=8", "model.seq_length=32", "train.save_interval=4",
            f"data.path={store}", f"run.output_dir={tmp_path / 'run'}", "train.exit_interval=4"]
    for _ in range(2):  # stops at step 4 with a checkpoint, then the same command finishes
        ranks = pretrain_ranks(2, *args)
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == list(range(1, 9))
    assert all(math.isfinite(r["loss"]) and r["loss"] > 0 for r in records)
    assert "resumed from step 4" in ranks[0].output
