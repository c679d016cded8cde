"""Hugging Face conversion at TP=2 (two processes over gloo): export from the shards, import into the shards."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from hf_models import main as hf_models_main
from hf_models import write_text_store
from in_process import run_ok


@pytest.mark.slow
def test_three_families_convert_both_ways_at_tensor_parallel_2(tmp_path: Path) -> None:
    spm_model, _ = write_text_store(tmp_path / "text", documents=40)
    run_ok(hf_models_main, 2, str(spm_model), str(tmp_path))
    results = torch.load(tmp_path / "results.pt")
    assert set(results) == {"gpt2", "llama_gqa", "bert"}
    for style, differences in results.items():
        for direction, difference in differences.items():
            assert difference <= 1e-4, f"{style} {direction}: logits differ by {difference}"
