"""Dataset blending: blend files (YAML), their weights, and a deterministic interleave of datasets.

A blend file names token stores and their proportions, ROOTS-style (per language, per source):

    datasets:
      - {name: wikipedia_en, path: ../stores/wikipedia_en, weight: 0.3}
      - {name: oscar_fr, path: ../stores/oscar_fr, weight: 0.1}
    # or no weights and `temperature: 3`: weight ∝ num_tokens^(1/3); neither: ∝ num_tokens

The interleave solves the chairman assignment problem (Tijdeman 1980): with D datasets and
σ = 1/(2D − 2), dataset d's k-th sample goes to a position p (1-based) with
(k − 1 + σ)/w_d ≤ p ≤ (k − σ)/w_d + 1, which is |count_d(n) − n·w_d| ≤ 1 − σ < 1 at every prefix n.
Tijdeman proved such a schedule exists for any weights; earliest-deadline-first (EDF: at each
position, of the samples whose window is open, the one whose window closes first) finds one,
as it does for any unit jobs with integer windows that admit a schedule. Merging per-dataset keys
such as (k + ½)/w_d (Webster's method) is not enough from four datasets on: with weights
[0.9, six × 1/60] the first dataset runs 2.7 samples ahead of its share.

EDF is sequential; to use numpy, the blend is cut into blocks simulated side by side, each from a
guess at its state (largest-remainder counts) a warm-up before it starts. EDF usually forgets its
starting state within about 1/min(w) positions, and a block whose start disagrees with its
predecessor's end is simulated again from that end, so the result is always exactly EDF from the
empty state: the same on every rank and restart, and the first n positions of a longer blend are
the blend of n.
"""

from __future__ import annotations

import difflib
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from roots_scale.data import SampleSource
from roots_scale.data.errors import BlendError
from roots_scale.data.index_cache import cached_arrays
from roots_core.token_store import TokenStoreError, read_manifest

BLEND_SUFFIXES = (".yaml", ".yml")
_TOP_KEYS = ("datasets", "temperature")
_ENTRY_KEYS = ("name", "path", "weight")
_ROWS = 4096  # blocks simulated side by side: enough to amortize numpy's per-call cost
_MIN_WARMUP, _MAX_WARMUP = 256, 1 << 17
_CHUNK = 64  # steps recorded per transposed write
_SLACK = 1e-12  # relative: a window end this close to an integer counts as it, so float rounding of
# an exact ratio such as (k - 1 + σ)/w = 7 never moves a window by a whole position


@dataclass(frozen=True)
class BlendEntry:
    """One dataset of a blend: its name, token store directory, weight (None = from temperature), token count."""

    name: str
    path: Path
    weight: float | None
    num_tokens: int


@dataclass(frozen=True)
class BlendSpec:
    """A validated blend: its datasets, and the temperature deriving weights from token counts when none are given."""

    datasets: tuple[BlendEntry, ...]
    temperature: float | None
    source: Path


def is_blend_file(path: str | os.PathLike[str]) -> bool:
    """Whether `path` names a blend file (.yaml/.yml) rather than a token store directory."""
    path = Path(path)
    return path.suffix.lower() in BLEND_SUFFIXES and not path.is_dir()


def load_blend(path: str | os.PathLike[str]) -> BlendSpec:
    """Read and validate a blend file; relative store paths are resolved against the file's directory."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError as err:
        raise BlendError(f"blend file {path} does not exist") from err
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        raise BlendError(f"blend file {path} is not readable YAML: {err}") from err
    if not isinstance(raw, dict):
        raise BlendError(f"{path} must hold a mapping with keys {', '.join(_TOP_KEYS)}, got {type(raw).__name__}")
    _check_keys(raw, _TOP_KEYS, path, "")
    items = raw.get("datasets")
    if not isinstance(items, list) or not items:
        raise BlendError(f"{path}: a blend with no datasets; 'datasets' must be a non-empty list of "
                         f"{{name, path, weight}} entries, got {items!r}")
    entries = [_entry(item, index, path) for index, item in enumerate(items)]
    names = [entry.name for entry in entries]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise BlendError(f"{path}: dataset name(s) {repeated} appear more than once; give each entry a unique 'name'")
    temperature = _temperature(raw.get("temperature"), path)
    unweighted = [entry.name for entry in entries if entry.weight is None]
    if not unweighted:
        if temperature is not None:
            raise BlendError(f"{path}: both weights and 'temperature' are given; keep the weights, or drop them "
                             f"and let temperature derive weights from token counts")
        if sum(entry.weight for entry in entries) == 0:
            raise BlendError(f"{path}: every weight is 0; at least one dataset needs a positive weight")
        return BlendSpec(tuple(entries), None, path)
    if len(unweighted) < len(entries):
        raise BlendError(f"{path}: dataset(s) {unweighted} have no 'weight' but others do; give every dataset "
                         f"a weight, or none (weights then come from token counts and 'temperature')")
    if sum(entry.num_tokens for entry in entries) == 0:
        raise BlendError(f"{path}: the stores hold no tokens, so temperature sampling has nothing to weigh")
    return BlendSpec(tuple(entries), 1.0 if temperature is None else temperature, path)


def _check_keys(raw: dict[Any, Any], valid: Sequence[str], path: Path, prefix: str) -> None:
    """BlendError for the first key of `raw` not in `valid`, suggesting the closest valid one."""
    for key in raw:
        if key not in valid:
            close = difflib.get_close_matches(str(key), valid, n=1)
            hint = f"; did you mean '{prefix}{close[0]}'?" if close else ""
            raise BlendError(f"{path}: unknown key '{prefix}{key}'{hint} Valid keys here: {', '.join(valid)}")


def _entry(item: Any, index: int, path: Path) -> BlendEntry:
    """One validated `datasets` entry; its store must exist (its manifest gives the token count)."""
    where = f"{path}: datasets[{index}]"
    if not isinstance(item, dict):
        raise BlendError(f"{where} must be a mapping with keys {', '.join(_ENTRY_KEYS)}, got {item!r}")
    _check_keys(item, _ENTRY_KEYS, path, f"datasets[{index}].")
    if not isinstance(item.get("path"), str) or not item["path"]:
        raise BlendError(f"{where} needs a 'path': the token store directory (relative paths are resolved "
                         f"against {path.parent}), got {item.get('path')!r}")
    store = Path(os.path.normpath(path.parent / Path(item["path"]).expanduser()))
    name = item.get("name", store.name)
    if not isinstance(name, str) or not name:
        raise BlendError(f"{where}: 'name' must be a non-empty string, got {name!r}")
    weight = item.get("weight")
    if weight is not None and (isinstance(weight, bool) or not isinstance(weight, (int, float))
                               or not math.isfinite(weight) or weight < 0):
        raise BlendError(f"{where} ({name}): 'weight' must be a finite number ≥ 0, got {weight!r}")
    try:
        num_tokens = int(read_manifest(store)["num_tokens"])
    except TokenStoreError as err:
        raise BlendError(f"{where} ({name}): 'path' {store} is not a token store ({err})") from err
    return BlendEntry(name, store, None if weight is None else float(weight), num_tokens)


def _temperature(value: Any, path: Path) -> float | None:
    """The blend's temperature: None, or a finite number > 0."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise BlendError(f"{path}: 'temperature' must be a finite number > 0 (1 = proportional to tokens, "
                         f"larger = closer to uniform), got {value!r}")
    return float(value)


def blend_weights(spec: BlendSpec) -> list[float]:
    """The normalized weights of `spec`: as given, or ∝ num_tokens^(1/temperature) (computed in log space)."""
    if spec.temperature is None:
        return _normalized([entry.weight for entry in spec.datasets]).tolist()
    tokens = np.array([entry.num_tokens for entry in spec.datasets], dtype=np.float64)
    with np.errstate(divide="ignore"):  # a store with no tokens gets weight 0
        scaled = np.log(tokens) / spec.temperature
    return _normalized(np.exp(scaled - scaled.max())).tolist()


def _normalized(weights: Sequence[float] | np.ndarray) -> np.ndarray:
    """`weights` as float64 summing to 1; BlendError unless finite, ≥ 0 and not all 0."""
    w = np.asarray(weights, dtype=np.float64)
    if w.ndim != 1 or not len(w) or not np.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
        raise BlendError(f"blend weights must be a non-empty list of finite numbers ≥ 0, not all 0; got {list(w)}")
    return w / w.sum()


def _index_dtype(num_datasets: int) -> type[np.signedinteger]:
    """The smallest dtype for dataset numbers: int16, or int32 past 32,767 datasets."""
    return np.int16 if num_datasets <= np.iinfo(np.int16).max else np.int32


def interleave(weights: Sequence[float], num_samples: int) -> tuple[np.ndarray, np.ndarray]:
    """The blend order: position i serves sample dataset_sample_index[i] of dataset dataset_index[i].

    Every prefix of n positions holds within 1 − 1/(2D − 2) samples of n·w_d from each dataset d
    (w normalized, D ≥ 2 the datasets of positive weight; one dataset is drawn every time).
    """
    w = _normalized(weights)
    if num_samples < 0:
        raise BlendError(f"num_samples must be ≥ 0, got {num_samples}")
    active = np.flatnonzero(w)  # a dataset of weight 0 is never drawn
    chosen, sample = _edf(w[active], num_samples)
    return active.astype(_index_dtype(len(w)))[chosen], sample


def _edf(w: np.ndarray, n: int, warmup: int | None = None, block: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """EDF over n positions: (dataset per position, that dataset's count before it), simulated in blocks."""
    warmup = warmup or int(np.clip(2 / w.min(), _MIN_WARMUP, _MAX_WARMUP))
    block = block or max(warmup, -(-n // _ROWS))
    if block < warmup:
        raise BlendError(f"block {block} must be at least the warm-up {warmup}")
    sigma = 1 / (2 * len(w) - 2) if len(w) > 1 else 0.0
    starts = np.arange(max(1, -(-n // block)), dtype=np.float64) * block
    counts = _largest_remainder(np.maximum(starts - warmup, 0), w)  # row 0 starts exactly: empty
    if len(starts) > 1:
        _simulate(1 / w, sigma, starts[1:] - warmup, counts[1:], warmup)
    chosen = np.empty((len(starts), block), dtype=_index_dtype(len(w)))
    sample = np.empty((len(starts), block), dtype=np.int64)
    begin = counts.copy()
    _simulate(1 / w, sigma, starts, counts, block, (chosen, sample))
    while True:  # re-run each block whose start is not its predecessor's end; row 0 is exact, so this ends
        stale = np.flatnonzero((begin[1:] != counts[:-1]).any(axis=1)) + 1
        if not len(stale):
            return chosen.reshape(-1)[:n], sample.reshape(-1)[:n]
        begin[stale] = counts[stale - 1]
        state = begin[stale].copy()
        record = (np.empty((len(stale), block), chosen.dtype), np.empty((len(stale), block), np.int64))
        _simulate(1 / w, sigma, starts[stale], state, block, record)
        chosen[stale], sample[stale] = record
        counts[stale] = state


def _simulate(inv: np.ndarray, sigma: float, first: np.ndarray, counts: np.ndarray, steps: int,
              record: tuple[np.ndarray, np.ndarray] | None = None) -> None:
    """Advance every row's EDF state (`counts`, C-contiguous [rows, D], in place) `steps` positions past first[row].

    `record`, if given, receives [row, step] the dataset served and its count before; steps are
    gathered _CHUNK at a time and written transposed, which keeps both the gather and the write
    contiguous (writing one column per step would touch a page per row).
    """
    rows, num = counts.shape
    flat = counts.reshape(-1)  # a view: updates land in `counts`
    row_start = np.arange(rows) * num
    release = (counts + sigma) * inv * (1 - _SLACK)  # d's next sample may be served from position release[d]
    deadline = np.floor((counts + 1 - sigma) * inv * (1 + _SLACK))  # ... and must be by position deadline[d] + 1
    released, keys = np.empty(counts.shape, dtype=bool), np.empty(counts.shape)
    position = first[:, None].copy()
    if record is not None:
        chunk = (np.empty((_CHUNK, rows), record[0].dtype), np.empty((_CHUNK, rows), np.int64))
    for step in range(steps):
        position += 1
        np.less_equal(release, position, out=released)
        keys.fill(np.inf)
        np.copyto(keys, deadline, where=released)
        d = keys.argmin(axis=1)
        at = row_start + d
        served = flat.take(at)
        if record is not None:
            row = step % _CHUNK
            chunk[0][row], chunk[1][row] = d, served
            if row == _CHUNK - 1 or step == steps - 1:
                record[0][:, step - row: step + 1] = chunk[0][: row + 1].T
                record[1][:, step - row: step + 1] = chunk[1][: row + 1].T
        served += 1
        flat.put(at, served)
        step_inv = inv.take(d)
        release.put(at, (served + sigma) * step_inv * (1 - _SLACK))
        deadline.put(at, np.floor((served + 1 - sigma) * step_inv * (1 + _SLACK)))


def _largest_remainder(positions: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Per position, counts within one of position·w summing to it: a guess at EDF's state there."""
    ideal = positions[:, None] * w
    counts = np.floor(ideal)
    missing = np.round(positions - counts.sum(axis=1))
    rank = np.argsort(np.argsort(counts - ideal, axis=1, kind="stable"), axis=1, kind="stable")
    return counts + (rank < missing[:, None])


def blend_indices(weights: Sequence[float], num_samples: int,
                  cache_dir: str | os.PathLike[str] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """interleave(weights, num_samples), built once and memory-mapped from `cache_dir` when given."""
    w = _normalized(weights)
    if cache_dir is None:
        return interleave(w, num_samples)
    description = {"kind": "blend", "schedule": "edf-tijdeman", "weights": w.tolist(), "num_samples": num_samples}

    def build() -> dict[str, np.ndarray]:
        dataset_index, dataset_sample_index = interleave(w, num_samples)
        return {"dataset_index": dataset_index, "dataset_sample_index": dataset_sample_index}

    arrays = cached_arrays(cache_dir, description, build)
    return arrays["dataset_index"], arrays["dataset_sample_index"]


def samples_per_dataset(weights: Sequence[float], num_samples: int,
                        cache_dir: str | os.PathLike[str] | None = None) -> list[int]:
    """How many samples the blend takes from each dataset: build each component with exactly that many."""
    return np.bincount(blend_indices(weights, num_samples, cache_dir)[0], minlength=len(weights)).tolist()


class BlendedDataset:
    """`num_samples` samples of `datasets` interleaved by `weights`: ds[i] = datasets[dataset_index[i]][dataset_sample_index[i]]."""

    def __init__(self, datasets: Sequence[SampleSource], weights: Sequence[float], num_samples: int,
                 cache_dir: str | os.PathLike[str] | None = None) -> None:
        if len(datasets) != len(weights):
            raise BlendError(f"{len(datasets)} datasets but {len(weights)} weights; give one weight per dataset")
        self.datasets = list(datasets)
        self.weights = _normalized(weights).tolist()
        self.num_samples = num_samples
        self.dataset_index, self.dataset_sample_index = blend_indices(self.weights, num_samples, cache_dir)
        self.samples_per_dataset = np.bincount(self.dataset_index, minlength=len(datasets)).tolist()
        for number, (dataset, needed) in enumerate(zip(self.datasets, self.samples_per_dataset)):
            if len(dataset) < needed:
                raise BlendError(f"dataset {number} has {len(dataset)} samples but a blend of {num_samples} takes "
                                 f"{needed} from it; build it with samples_per_dataset(weights, num_samples)")

    def __len__(self) -> int:
        """Number of samples."""
        return self.num_samples

    def __getitem__(self, index: int) -> Any:
        """Sample `index` of the blend: a sample of the component dataset the interleave puts there."""
        if not 0 <= index < self.num_samples:
            raise IndexError(f"sample {index} out of range [0, {self.num_samples})")
        return self.datasets[int(self.dataset_index[index])][int(self.dataset_sample_index[index])]

    def consumed_per_dataset(self, consumed_samples: int) -> list[int]:
        """How many of the first `consumed_samples` samples came from each dataset (for logs and checkpoints)."""
        return np.bincount(self.dataset_index[:consumed_samples], minlength=len(self.datasets)).tolist()
