"""Extending a run never changes its past: the first n samples are the same for every run length of at
least n, for GPT, BERT and a blend (the index is built in whole epochs, shuffled within each)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from in_process import pretrain_ranks
from roots_scale.data.builder import SampleSettings, build_dataset, resolve_sources
from store_helpers import write_random_store

pytestmark = pytest.mark.filterwarnings("ignore:the tokenizer model none")


def as_arrays(sample) -> list[np.ndarray]:
    return [sample[key] for key in sorted(sample)] if isinstance(sample, dict) else [sample]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("order")
    stores = [write_random_store(root / f"store{i}", num_documents=40, max_length=100, seed=i) for i in range(2)]
    blend = root / "blend.yaml"
    blend.write_text("datasets:\n" + "".join(f"  - {{path: {p}, weight: {w}}}\n" for p, w in zip(stores, (1, 3))))
    return {"store": stores[0], "blend": blend}


@pytest.mark.parametrize("arch", ["gpt", "bert"])
@pytest.mark.parametrize("source", ["store", "blend"])
def test_a_longer_run_sees_the_same_samples_first(data: dict[str, Path], tmp_path: Path, arch: str,
                                                  source: str) -> None:
    settings = SampleSettings(arch, 32, 1234, "969,30,1", None)
    sources = resolve_sources(data[source])
    planned = 48  # a few steps, less than an epoch
    short = build_dataset(sources, settings, planned, cache_dir=tmp_path / "short")
    longer = build_dataset(sources, settings, 20 * planned, cache_dir=tmp_path / "long")  # many epochs more
    assert len(short) == planned and len(longer) == 20 * planned
    for index in range(planned):
        for ours, theirs in zip(as_arrays(short[index]), as_arrays(longer[index])):
            np.testing.assert_array_equal(ours, theirs, err_msg=f"sample {index}")
    tokens = [longer[i]["input_ids"] if arch == "bert" else longer[i] for i in range(planned, 20 * planned)]
    assert len({tuple(t[:8]) for t in tokens}) > planned  # the longer run does go on to other samples


@pytest.mark.slow
def test_extending_train_iters_keeps_the_losses_of_the_first_steps(data: dict[str, Path], tmp_path: Path) -> None:
    """Same data, constant learning rate: the first 4 steps of an 8-step run are those of a 4-step run."""
    losses = {}
    for iters in (4, 8):
        run = tmp_path / f"iters{iters}"
        pretrain_ranks(2, "--config", "configs/tiny_gpt.yaml", f"data.path={data['blend']}", f"run.output_dir={run}",
                       f"train.iters={iters}", "model.seq_length=32", "optimizer.decay_style=constant",
                       "optimizer.warmup_iters=0", "train.log_interval=1", "data.num_workers=0")
        losses[iters] = [json.loads(line)["loss"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert losses[8][:4] == losses[4]
