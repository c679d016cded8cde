"""Sequence parallelism (Megatron's, with our own collectives so it runs on CPU too): TP=2 with SP trains exactly
like TP=2 without and like one process, also under pipeline parallelism and with activation checkpointing
(fp32, gloo, 10 steps, GPT-2 and Llama style); what it cannot run is refused at config time."""

from __future__ import annotations

from pathlib import Path

import pytest

from roots_scale.config import ConfigError, load_config, validate
from run_helpers import STYLES, assert_same_run, train
from store_helpers import write_random_store

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.parametrize("style", sorted(STYLES))
def test_sequence_parallel_layouts_train_exactly_like_one_process(style: str, tmp_path: Path) -> None:
    store = write_random_store(tmp_path / "store", num_documents=200, max_length=120)
    reference = tmp_path / "tp1"
    train(store, reference, 1, "train.gradient_accumulation_steps=2", *STYLES[style])
    sp = ["parallel.tensor=2", "parallel.sequence_parallel=true", "train.gradient_accumulation_steps=2"]
    layouts = {
        "tp2": (2, ["parallel.tensor=2", "train.gradient_accumulation_steps=2"]),
        "tp2_sp": (2, sp),
        "tp2_sp_pp2": (4, [*sp, "parallel.pipeline=2"]),
        "tp2_sp_recompute": (2, [*sp, "model.activation_checkpointing=true"]),
    }
    for name, (nproc, overrides) in layouts.items():
        train(store, tmp_path / name, nproc, *overrides, *STYLES[style])
        assert_same_run(tmp_path / name, reference, f"{style} {name}")


@pytest.mark.parametrize("overrides,fragment", [
    (["parallel.tensor=1"], "false with parallel.tensor = 1"),
    (["parallel.tensor=4", "model.seq_length=30"], "model.seq_length = 30 is invalid: it must be a multiple of"),
])
def test_what_sequence_parallelism_cannot_run_is_refused(overrides: list[str], fragment: str, tmp_path: Path) -> None:
    cfg = load_config(ROOT / "configs/tiny_gpt.yaml", [f"data.path={tmp_path}", "parallel.sequence_parallel=true",
                                                      *overrides])
    with pytest.raises(ConfigError) as err:
        validate(cfg, 4)
    assert fragment in str(err.value)


def test_bert_with_sequence_parallelism_is_refused(tmp_path: Path) -> None:
    cfg = load_config(ROOT / "configs/tiny_bert.yaml", [f"data.path={tmp_path}", "parallel.tensor=2",
                                                       "parallel.sequence_parallel=true"])
    with pytest.raises(ConfigError, match="false for BERT"):
        validate(cfg, 2)
