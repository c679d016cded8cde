"""The GPT is the same function whatever tensor-parallel size builds it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from in_process import run_ok
from model_step import main as model_step


@pytest.mark.slow
@pytest.mark.parametrize("style", ["gpt2", "llama"])
def test_tensor_parallel_matches_single_rank(style: str, tmp_path: Path) -> None:
    results = {}
    for tp in (1, 2):
        out = tmp_path / f"tp{tp}.pt"
        run_ok(model_step, tp, style, str(out))
        results[tp] = torch.load(out)
    one, two = results[1], results[2]
    assert torch.isfinite(one["loss"])
    torch.testing.assert_close(two["loss"], one["loss"], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(two["grad_norm"], one["grad_norm"], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(two["embedding_grad"], one["embedding_grad"], rtol=1e-4, atol=1e-6)
