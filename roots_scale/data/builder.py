"""From `data.path` (a token store or a blend file) to the training dataset, split and cached.

The one place that knows how stores, splits, blends and sample datasets fit together, so a run trains
on a single store or a ROOTS-style blend with no code change. `data.path` is resolved (and a blend file
read and validated) once, into `DataSources`; datasets are then built from that and `SampleSettings`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from roots_core.token_store import TokenStore, read_manifest
from roots_scale.config import Config
from roots_scale.data import SampleSource
from roots_scale.data.bert_dataset import BERTDataset
from roots_scale.data.blending import (
    BlendedDataset,
    BlendSpec,
    blend_weights,
    is_blend_file,
    load_blend,
    samples_per_dataset,
)
from roots_scale.data.errors import DatasetError
from roots_scale.data.gpt_dataset import GPTDataset
from roots_scale.data.splits import split_documents


@dataclass(frozen=True)
class SampleSettings:
    """What defines a run's samples, besides the stores: the architecture's sample kind, length, seed, split."""

    arch: str
    seq_length: int
    seed: int
    split: str
    num_epochs: int | None

    @classmethod
    def from_config(cls, cfg: Config) -> SampleSettings:
        return cls(cfg.model.arch, cfg.model.seq_length, cfg.train.seed, cfg.data.split, cfg.data.num_epochs)


@dataclass(frozen=True)
class DataSources:
    """The token stores `data.path` names (itself, or each dataset of a blend) and their manifests."""

    stores: tuple[Path, ...]
    manifests: tuple[dict[str, Any], ...]
    blend: BlendSpec | None

    @property
    def vocab_size(self) -> int:
        """The stores' one vocabulary size; DatasetError if they were made with different tokenizers."""
        sizes = {manifest["vocab_size"] for manifest in self.manifests}
        if len(sizes) != 1:
            raise DatasetError(f"the stores {[str(p) for p in self.stores]} have different vocabularies "
                               f"{sorted(sizes)}; a blend needs stores made with one tokenizer")
        return sizes.pop()

    def fingerprints(self) -> dict[str, dict[str, str]]:
        """Data and tokenizer fingerprint per store, keyed `index:name` (names may repeat across a blend)."""
        return {f"{i}:{path.name}": {"data": m["fingerprint"], "tokenizer": m["tokenizer"]["fingerprint"]}
                for i, (path, m) in enumerate(zip(self.stores, self.manifests))}


def store_paths(data_path: str | os.PathLike[str]) -> list[Path]:
    """Every token store `data_path` names: itself, or each dataset of a blend (validating the blend)."""
    if is_blend_file(data_path):
        return [Path(entry.path) for entry in load_blend(data_path).datasets]
    return [Path(data_path)]


def resolve_sources(data_path: str | os.PathLike[str]) -> DataSources:
    """Read `data_path` once: the blend (if it is one) and every store's manifest."""
    blend = load_blend(data_path) if is_blend_file(data_path) else None
    stores = tuple(Path(entry.path) for entry in blend.datasets) if blend else (Path(data_path),)
    return DataSources(stores, tuple(read_manifest(path) for path in stores), blend)


def check_sources(data_path: str | os.PathLike[str], split: str) -> DataSources:
    """What training does with `data_path` before it builds a sample, in seconds and without a GPU, for the
    pre-launch checks: read the blend, open every store (manifest, file sizes) and split its documents. A bad
    blend, a missing, empty or damaged store, or a split a store cannot satisfy fails here, naming the file."""
    sources = resolve_sources(data_path)
    for path in sources.stores:
        split_documents(len(TokenStore(path)), split, source=str(path))
    _ = sources.vocab_size  # one tokenizer across a blend
    return sources


def build_dataset(sources: DataSources, settings: SampleSettings, num_samples: int, split: str = "train",
                  cache_dir: Path | None = None) -> SampleSource:
    """`num_samples` samples of `split` for the configured architecture, blended if the sources are a blend."""
    if sources.blend is None:
        return _sample_dataset(TokenStore(sources.stores[0]), settings, num_samples, split, cache_dir)
    weights = blend_weights(sources.blend)
    counts = samples_per_dataset(weights, num_samples, cache_dir=cache_dir)
    components = [_sample_dataset(TokenStore(path), settings, count, split, cache_dir)
                  for path, count in zip(sources.stores, counts)]
    return BlendedDataset(components, weights, num_samples, cache_dir=cache_dir)


def _sample_dataset(store: TokenStore, settings: SampleSettings, num_samples: int, split: str,
                    cache_dir: Path | None) -> SampleSource:
    documents = split_documents(len(store), settings.split, source=str(store.directory))[split]
    if settings.arch == "bert":
        return BERTDataset(store, settings.seq_length, num_samples, settings.seed, documents=documents,
                           cache_dir=cache_dir, max_epochs=settings.num_epochs)
    return GPTDataset(store, settings.seq_length, num_samples, settings.seed, max_epochs=settings.num_epochs,
                      documents=documents, cache_dir=cache_dir)
