"""Blends: YAML checks, temperature weights, the prefix property, and samples from the right store."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from roots_scale.data.blending import (BlendedDataset, BlendError, blend_weights, interleave, load_blend,
                                       samples_per_dataset)
from roots_scale.data.gpt_dataset import GPTDataset
from roots_scale.data.token_store import TokenStore
from store_helpers import write_random_store

RNG = np.random.default_rng(0)
WEIGHT_CASES = [[0.999, 0.001], [1] * 7, [0.5, 0.25, 0.125, 0.0625, 0.03125, 0.015625, 0.015625],
                [1 / 3] * 3, [0.6, 0.2, 0.2, 0.0], [1.0]] + [list(RNG.dirichlet(np.ones(k) * a))
                                                            for k in (2, 3, 5, 8) for a in (0.1, 1, 10)]


@pytest.mark.parametrize("weights", WEIGHT_CASES)
def test_every_prefix_is_within_one_sample_of_its_weight(weights: list[float]) -> None:
    n = 5000
    dataset_index, sample_index = interleave(weights, n)
    w = np.asarray(weights) / np.sum(weights)
    prefix = np.arange(1, n + 1)
    for d in range(len(w)):
        chosen = dataset_index == d
        assert np.abs(np.cumsum(chosen) - prefix * w[d]).max() < 1.0
        assert np.array_equal(sample_index[chosen], np.arange(chosen.sum()))  # each dataset read in order


def test_interleave_is_deterministic_and_counts_add_up() -> None:
    first, again = interleave([0.3, 0.7], 1000), interleave([0.3, 0.7], 1000)
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    assert samples_per_dataset([0.3, 0.7], 1000) == [300, 700]


def write_blend(tmp_path: Path, body: dict) -> Path:
    path = tmp_path / "blend.yaml"
    path.write_text(yaml.safe_dump(body))
    return path


@pytest.fixture
def stores(tmp_path: Path) -> list[Path]:
    return [write_random_store(tmp_path / f"store{i}", num_documents=60 * (i + 1), seed=i, vocab_size=512)
            for i in range(2)]


def test_weights_and_temperature(tmp_path: Path, stores: list[Path]) -> None:
    entries = [{"name": f"s{i}", "path": str(p)} for i, p in enumerate(stores)]
    weighted = load_blend(write_blend(tmp_path, {"datasets": [{**e, "weight": w} for e, w in zip(entries, (1, 3))]}))
    assert blend_weights(weighted) == [0.25, 0.75]
    tokens = np.array([TokenStore(p).num_tokens for p in stores], dtype=float)
    natural = load_blend(write_blend(tmp_path, {"temperature": 1, "datasets": entries}))
    assert np.allclose(blend_weights(natural), tokens / tokens.sum())
    flat = blend_weights(load_blend(write_blend(tmp_path, {"temperature": 1000, "datasets": entries})))
    assert np.allclose(flat, [0.5, 0.5], atol=0.01)


@pytest.mark.parametrize("body, fragment", [
    ({"datasets": []}, "non-empty list"),
    ({"datasets": [{"path": "nowhere"}], "weights": 1}, "top-level keys"),
    ({"datasets": [{"path": "nowhere", "weight": 1}]}, "is not a token store"),
    ({"datasets": [{"path": "{0}", "weight": -1}]}, "must be a number ≥ 0"),
    ({"datasets": [{"path": "{0}"}]}, "have no weight"),
    ({"temperature": 2, "datasets": [{"path": "{0}", "weight": 1}]}, "not both"),
    ({"temperature": 0, "datasets": [{"path": "{0}"}]}, "positive number"),
])
def test_blend_errors_name_the_file_and_entry(tmp_path: Path, stores: list[Path], body: dict, fragment: str) -> None:
    text = yaml.safe_dump(body).replace("'{0}'", str(stores[0])).replace("{0}", str(stores[0]))
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(BlendError, match=fragment) as err:
        load_blend(path)
    assert str(path) in str(err.value)


def test_blended_gpt_samples_come_from_the_right_store(tmp_path: Path, stores: list[Path]) -> None:
    opened = [TokenStore(p) for p in stores]
    weights, total = [0.25, 0.75], 400
    counts = samples_per_dataset(weights, total)
    components = [GPTDataset(s, 16, n, seed=1) for s, n in zip(opened, counts)]
    blended = BlendedDataset(components, weights, total, cache_dir=tmp_path / "cache")
    for i in range(0, total, 7):
        d, k = int(blended.dataset_index[i]), int(blended.dataset_sample_index[i])
        assert np.array_equal(blended[i], components[d][k])
    assert np.bincount(blended.dataset_index).tolist() == counts == [100, 300]
    cached = BlendedDataset(components, weights, total, cache_dir=tmp_path / "cache")
    assert isinstance(cached.dataset_index, np.memmap)
