"""Blends: blend files and their errors, temperature weights, the prefix property, and blended samples."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from roots_scale.data import blending
from roots_scale.data.blending import (BlendedDataset, BlendError, blend_indices, blend_weights, interleave,
                                       is_blend_file, load_blend, samples_per_dataset)
from roots_scale.data.gpt_dataset import GPTDataset
from roots_core.token_store import TokenStore
from store_helpers import write_random_store

ROOT = Path(__file__).resolve().parents[1]
RNG = np.random.default_rng(7)
WEIGHTS = {
    "even": [0.5, 0.5],
    "extreme": [0.999, 0.001],
    "one dominant, six small (Webster's counter-example)": [0.9] + [0.1 / 6] * 6,
    "ROOTS-like languages": [0.3, 0.16, 0.13, 0.12, 0.1, 0.1, 0.09],
    "seven equal": [1] * 7,
    "dyadic": [0.5, 0.25, 0.125, 0.0625, 0.03125, 0.015625, 0.015625],
    "a zero weight": [0.6, 0.2, 0.2, 0.0],
    "one dataset": [3.0],
    **{f"dirichlet {k}x{a}": list(RNG.dirichlet(np.ones(k) * a)) for k in (3, 7, 12) for a in (0.1, 1.0)},
}


def max_deviation(dataset_index: np.ndarray, weights: list[float]) -> float:
    """max over datasets d and prefixes n of |count_d(n) - n·w_d|, every prefix."""
    w = np.asarray(weights, dtype=np.float64) / np.sum(weights)
    prefix = np.arange(1, len(dataset_index) + 1)
    return max(float(np.abs(np.cumsum(dataset_index == d) - prefix * w[d]).max()) for d in range(len(w)))


def reference_edf(weights: list[float], n: int) -> np.ndarray:
    """The same schedule one position at a time, in plain Python: what the blocked numpy version must equal."""
    w = np.asarray(weights, dtype=np.float64) / np.sum(weights)
    inv = 1.0 / w[w > 0]
    sigma = 1 / (2 * len(inv) - 2) if len(inv) > 1 else 0.0
    counts = [0] * len(inv)
    order = []
    for position in range(1, n + 1):
        open_windows = [(math.floor((c + 1 - sigma) * i * (1 + 1e-12)), d)
                        for d, (c, i) in enumerate(zip(counts, inv)) if (c + sigma) * i * (1 - 1e-12) <= position]
        _, chosen = min(open_windows)
        order.append(chosen)
        counts[chosen] += 1
    return np.flatnonzero(w)[order]


@pytest.mark.parametrize("weights", WEIGHTS.values(), ids=WEIGHTS.keys())
def test_every_prefix_is_within_one_sample_of_its_weight(weights: list[float]) -> None:
    n = 20_000
    dataset_index, sample_index = interleave(weights, n)
    active = sum(w > 0 for w in weights)
    assert max_deviation(dataset_index, weights) <= 1 - (1 / (2 * active - 2) if active > 1 else 1) + 1e-6
    for d in range(len(weights)):  # each dataset's samples are taken in order, 0, 1, 2, ...
        assert np.array_equal(sample_index[dataset_index == d], np.arange(np.sum(dataset_index == d)))


def test_webster_keys_would_break_the_bound() -> None:
    weights = WEIGHTS["one dominant, six small (Webster's counter-example)"]
    keys = np.concatenate([(np.arange(10_000) + 0.5) / w for w in weights])
    webster = np.repeat(np.arange(len(weights)), 10_000)[np.argsort(keys, kind="stable")][:5000]
    assert max_deviation(webster, weights) > 2.5
    assert max_deviation(interleave(weights, 5000)[0], weights) < 1


@pytest.mark.parametrize("weights", [[0.5, 0.3, 0.19, 0.01, 0.0], WEIGHTS["dirichlet 7x0.1"]])
def test_blocks_reproduce_the_sequential_schedule(weights: list[float], monkeypatch: pytest.MonkeyPatch) -> None:
    expected = reference_edf(weights, 6000)
    assert np.array_equal(interleave(weights, 6000)[0], expected)
    runs = []
    simulate = blending._simulate
    monkeypatch.setattr(blending, "_simulate", lambda *args: runs.append(1) or simulate(*args))
    w = np.asarray(weights) / np.sum(weights)
    chosen, _ = blending._edf(w[w > 0], 6000, warmup=2, block=50)  # warm-ups too short: blocks are re-run
    assert np.array_equal(np.flatnonzero(w)[chosen], expected)
    assert len(runs) > 2


def test_interleave_is_deterministic_and_a_prefix_of_longer_blends() -> None:
    weights = WEIGHTS["ROOTS-like languages"]
    first, again = interleave(weights, 30_000), interleave(weights, 30_000)
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    for n in (1, 999, 12_345):
        shorter = interleave(weights, n)
        assert all(np.array_equal(a[:n], b) for a, b in zip(first, shorter))
    assert first[0].dtype == np.int16 and first[1].dtype == np.int64
    assert [len(a) for a in interleave(weights, 0)] == [0, 0]


def test_samples_per_dataset_is_the_largest_index_plus_one() -> None:
    weights = [0.3, 0.7]
    assert samples_per_dataset(weights, 1000) == [300, 700]
    dataset_index, sample_index = interleave(WEIGHTS["dyadic"], 777)
    counts = samples_per_dataset(WEIGHTS["dyadic"], 777)
    assert sum(counts) == 777
    assert counts == [int(sample_index[dataset_index == d].max()) + 1 for d in range(len(counts))]


@pytest.mark.parametrize("weights, num_samples", [([], 5), ([1, -1], 5), ([0, 0], 5), ([1, math.nan], 5),
                                                  ([1, 1], -1)])
def test_bad_interleave_arguments(weights: list[float], num_samples: int) -> None:
    with pytest.raises(BlendError):
        interleave(weights, num_samples)


def test_cache_is_built_once_and_reused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    weights = [0.2, 0.8]
    built = blend_indices(weights, 500, tmp_path)
    monkeypatch.setattr(blending, "interleave", lambda *args: pytest.fail("rebuilt a cached interleave"))
    cached = blend_indices(weights, 500, tmp_path)
    assert isinstance(cached[0], np.memmap)
    assert all(np.array_equal(a, b) for a, b in zip(built, cached))
    assert samples_per_dataset(weights, 500, tmp_path) == [100, 400]
    with pytest.raises(pytest.fail.Exception):
        blend_indices(weights, 501, tmp_path)  # another length is another interleave


# --------------------------------------------------------------------------- blend files


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Three stores told apart by their ids: below 100, below 1000, below 10000."""
    root = tmp_path_factory.mktemp("stores")
    return [write_random_store(root / f"store{i}", num_documents=60 * (i + 1), vocab_size=10 ** (i + 2), seed=i)
            for i in range(3)]


def write_blend(directory: Path, body: object) -> Path:
    path = directory / "blend.yaml"
    path.write_text(yaml.safe_dump(body))
    return path


def test_blend_file_with_relative_paths_and_weights(tmp_path: Path, stores: list[Path]) -> None:
    shutil.copytree(stores[0], tmp_path / "stores" / "a")
    blend = write_blend(tmp_path / "stores", {"datasets": [{"name": "a", "path": "a", "weight": 1},
                                                           {"path": str(stores[1]), "weight": 3}]})
    spec = load_blend(blend)
    assert [entry.path for entry in spec.datasets] == [tmp_path / "stores" / "a", stores[1]]
    assert [entry.name for entry in spec.datasets] == ["a", "store1"]  # the name defaults to the directory's
    assert spec.temperature is None and blend_weights(spec) == [0.25, 0.75]
    assert is_blend_file(blend) and is_blend_file(tmp_path / "other.yml") and not is_blend_file(stores[0])


def test_temperature_weights(tmp_path: Path, stores: list[Path]) -> None:
    entries = [{"path": str(path)} for path in stores]
    tokens = np.array([TokenStore(path).num_tokens for path in stores], dtype=np.float64)
    natural = load_blend(write_blend(tmp_path, {"datasets": entries}))  # no weights, no temperature: T = 1
    assert natural.temperature == 1 and np.allclose(blend_weights(natural), tokens / tokens.sum())
    squared = blend_weights(load_blend(write_blend(tmp_path, {"temperature": 2, "datasets": entries})))
    assert np.allclose(squared, np.sqrt(tokens) / np.sqrt(tokens).sum())
    flat = blend_weights(load_blend(write_blend(tmp_path, {"temperature": 1e6, "datasets": entries})))
    assert np.allclose(flat, 1 / 3, rtol=0, atol=1e-5) and not np.allclose(flat, 1 / 3, rtol=0, atol=1e-9)
    sharp = blend_weights(load_blend(write_blend(tmp_path, {"temperature": 0.01, "datasets": entries})))
    assert sharp[2] == pytest.approx(1) and np.isfinite(sharp).all()  # in log space: tokens^100 cannot overflow


@pytest.mark.parametrize("body, fragments", [
    ({"datasets": [{"path": "{0}"}], "temprature": 2}, ["unknown key 'temprature'", "did you mean 'temperature'"]),
    ({"datasets": [{"path": "{0}", "wieght": 1}]}, ["unknown key 'datasets[0].wieght'", "'datasets[0].weight'"]),
    ({"datasets": [{"name": "x", "weight": 1}]}, ["datasets[0] needs a 'path'"]),
    ({"datasets": [{"path": "{0}", "weight": -1}]}, ["datasets[0]", "'weight' must be a finite number ≥ 0", "-1"]),
    ({"datasets": [{"path": "{0}", "weight": "heavy"}]}, ["'weight' must be a finite number"]),
    ({"datasets": [{"path": "{0}", "weight": 0}]}, ["every weight is 0"]),
    ({"temperature": 2, "datasets": [{"path": "{0}", "weight": 1}]}, ["both weights and 'temperature'"]),
    ({"temperature": 0, "datasets": [{"path": "{0}"}]}, ["'temperature' must be a finite number > 0"]),
    ({"datasets": [{"path": "{0}", "weight": 1}, {"path": "{1}"}]}, ["['store1'] have no 'weight' but others do"]),
    ({"datasets": [{"path": "{0}"}, {"path": "{0}"}]}, ["['store0'] appear more than once"]),
    ({"datasets": [{"name": "ghost", "path": "nowhere", "weight": 1}]}, ["datasets[0] (ghost)", "is not a token store",
                                                                          "manifest.json not found"]),
    ({"datasets": []}, ["a blend with no datasets"]),
    ({"temperature": 1}, ["a blend with no datasets"]),
    ({"datasets": ["{0}"]}, ["datasets[0] must be a mapping with keys name, path, weight"]),
    (["{0}"], ["must hold a mapping with keys datasets, temperature"]),
])
def test_blend_errors_name_the_file_the_key_and_what_is_valid(tmp_path: Path, stores: list[Path], body: object,
                                                             fragments: list[str]) -> None:
    text = yaml.safe_dump(body).replace("'{0}'", str(stores[0])).replace("'{1}'", str(stores[1]))
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(BlendError) as err:
        load_blend(path)
    for fragment in [str(path), *fragments]:
        assert fragment in str(err.value)


def test_unreadable_blend_files(tmp_path: Path) -> None:
    with pytest.raises(BlendError, match="does not exist"):
        load_blend(tmp_path / "missing.yaml")
    (tmp_path / "broken.yaml").write_text("datasets: [unclosed")
    with pytest.raises(BlendError, match="broken.yaml is not readable YAML"):
        load_blend(tmp_path / "broken.yaml")


@pytest.mark.parametrize("example", sorted((ROOT / "configs" / "blends").glob("*.yaml")), ids=lambda p: p.name)
def test_example_blends_load_once_their_stores_exist(tmp_path: Path, stores: list[Path], example: Path) -> None:
    copy = tmp_path / "configs" / "blends" / example.name
    copy.parent.mkdir(parents=True)
    shutil.copy(example, copy)
    for entry in yaml.safe_load(example.read_text())["datasets"]:
        shutil.copytree(stores[0], copy.parent / entry["path"])
    spec = load_blend(copy)
    assert len(spec.datasets) >= 3 and math.isclose(sum(blend_weights(spec)), 1)


# --------------------------------------------------------------------------- blended samples


def source_store(sample: np.ndarray) -> int:
    """Which of the three stores a GPT sample came from, by its largest id (random ids fill each store's range)."""
    return int(np.searchsorted([100, 1000], sample.max(), side="right"))


def test_blended_samples_come_from_the_right_store_in_proportion(tmp_path: Path, stores: list[Path]) -> None:
    blend = write_blend(tmp_path, {"datasets": [{"path": str(p), "weight": w} for p, w in zip(stores, (5, 3, 2))]})
    spec = load_blend(blend)
    weights, total = blend_weights(spec), 600
    counts = samples_per_dataset(weights, total)
    components = [GPTDataset(TokenStore(entry.path), 16, count, seed=1) for entry, count in zip(spec.datasets, counts)]
    blended = BlendedDataset(components, weights, total, cache_dir=tmp_path / "cache")
    sources = np.array([source_store(blended[i]) for i in range(total)])
    assert np.array_equal(sources, blended.dataset_index)
    assert blended.samples_per_dataset == counts == [300, 180, 120]
    assert max_deviation(sources, weights) < 1
    for i in range(0, total, 37):
        assert np.array_equal(blended[i], components[sources[i]][int(blended.dataset_sample_index[i])])
    assert blended.consumed_per_dataset(10) == np.bincount(sources[:10], minlength=3).tolist()
    assert len(blended) == total
    with pytest.raises(IndexError):
        blended[total]


def test_a_component_too_short_for_its_share_is_reported(stores: list[Path]) -> None:
    components = [GPTDataset(TokenStore(path), 16, 10, seed=1) for path in stores[:2]]
    with pytest.raises(BlendError, match="dataset 0 has 10 samples but a blend of 40 takes 20"):
        BlendedDataset(components, [1, 1], 40)
    with pytest.raises(BlendError, match="2 datasets but 3 weights"):
        BlendedDataset(components, [1, 1, 1], 10)
