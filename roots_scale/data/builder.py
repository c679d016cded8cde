"""From `data.path` (a token store or a blend file) to the training dataset, split and cached.

The one place that knows how config, stores, splits, blends and sample datasets fit together,
so `pretrain.py` trains on a single store or a ROOTS-style blend with no code change.
"""

from __future__ import annotations

from pathlib import Path

from roots_scale.config import Config
from roots_core.token_store import TokenStore


def store_paths(data_path: str | Path) -> list[Path]:
    """Every token store `data.path` names: itself, or each dataset of a blend."""
    from roots_scale.data.blending import is_blend_file, load_blend

    if is_blend_file(data_path):
        return [Path(entry.path) for entry in load_blend(data_path).datasets]
    return [Path(data_path)]


def build_dataset(cfg: Config, num_samples: int, split: str = "train", cache_dir: Path | None = None):
    """`num_samples` samples of `split` for the configured architecture, blended if `data.path` is a blend."""
    from roots_scale.data.blending import BlendedDataset, blend_weights, is_blend_file, load_blend, samples_per_dataset

    if not is_blend_file(cfg.data.path):
        return _sample_dataset(cfg, TokenStore(cfg.data.path), num_samples, split, cache_dir)
    spec = load_blend(cfg.data.path)
    weights = blend_weights(spec)
    counts = samples_per_dataset(weights, num_samples, cache_dir=cache_dir)
    components = [_sample_dataset(cfg, TokenStore(entry.path), count, split, cache_dir)
                  for entry, count in zip(spec.datasets, counts)]
    return BlendedDataset(components, weights, num_samples, cache_dir=cache_dir)


def _sample_dataset(cfg: Config, store: TokenStore, num_samples: int, split: str, cache_dir: Path | None):
    from roots_scale.data.splits import split_documents

    documents = split_documents(len(store), cfg.data.split)[split]
    seed = cfg.train.seed
    if cfg.model.arch == "bert":
        from roots_scale.data.bert_dataset import BERTDataset

        return BERTDataset(store, cfg.model.seq_length, num_samples, seed, documents=documents,
                           cache_dir=cache_dir, max_epochs=cfg.data.num_epochs)
    from roots_scale.data.gpt_dataset import GPTDataset

    return GPTDataset(store, cfg.model.seq_length, num_samples, seed, max_epochs=cfg.data.num_epochs,
                      documents=documents, cache_dir=cache_dir)
