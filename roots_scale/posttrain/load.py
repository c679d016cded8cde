"""One process, one model: a TP=1 GPT or BERT rebuilt from a checkpoint's full weights, and the run's tokenizer.

What `roots-train generate`, `evaluate` and `export-hf` share. A checkpoint of any TP size and ZeRO stage
holds layout-free full weights (`training.layout_free`); they load into a TP=1 model in this process, on
megatron-core groups of a one-process world.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from torch import nn

from roots_scale.config import Config, ModelConfig


class InferenceError(RuntimeError):
    """A checkpoint or tokenizer that cannot serve generate / evaluate / export; the message says what to pass."""


@contextmanager
def single_process_world() -> Iterator[None]:
    """megatron-core's groups at TP=1 in this one process (our layers need them even alone); an existing world is
    used as it is."""
    import torch.distributed as dist
    from megatron.core import parallel_state

    if parallel_state.model_parallel_is_initialized():
        yield
        return
    created = not dist.is_initialized()
    if created:
        dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    parallel_state.initialize_model_parallel(tensor_model_parallel_size=1, create_gloo_process_groups=False)
    try:
        yield
    finally:
        parallel_state.destroy_model_parallel()
        if created:
            dist.destroy_process_group()


def build_model(cfg: ModelConfig, vocab_rows: int, tensor_parallel_size: int = 1) -> nn.Module:
    """A GPT or BERT (by `cfg.arch`) with `vocab_rows` padded vocabulary rows, in eval mode."""
    from roots_scale import models

    return models.build_model(cfg, vocab_rows, tensor_parallel_size).eval()


def load_checkpoint_model(path: str | Path):
    """(TP=1 model with the checkpoint's weights, its FullState); call inside `single_process_world`."""
    from roots_scale.training.layout_free import LayoutFreeError, load_full_params, read_full_state

    try:
        state = read_full_state(path)
    except LayoutFreeError as err:
        raise InferenceError(str(err)) from err
    model = build_model(state.config.model, state.params["embedding.weight"].shape[0])
    load_full_params(model, state.params)
    return model, state


def run_tokenizer(cfg: Config, override: str | Path | None = None):
    """The tokenizer the run trained with: the one its store's manifest names, or `override` with the same
    fingerprint (or any `override` when the run's stores are gone)."""
    from data_tools.errors import DataToolsError
    from data_tools.tokenizer import Tokenizer
    from roots_scale.data.blending import BlendError
    from roots_scale.data.builder import store_paths
    from roots_core.token_store import TokenStoreError, read_manifest

    try:
        manifest = read_manifest(store_paths(cfg.data.path)[0])
    except (TokenStoreError, BlendError) as err:
        if override is None:
            raise InferenceError(f"the run's tokenizer is named by its store's manifest, which is unreadable "
                                 f"({err}); pass --tokenizer SPM_MODEL") from err
        manifest = None
    path = override or manifest["tokenizer"]["path"]
    try:
        tokenizer = Tokenizer(path)
    except DataToolsError as err:
        raise InferenceError(f"{err}; pass --tokenizer SPM_MODEL (the run's .model file)") from err
    if manifest is not None and tokenizer.fingerprint != manifest["tokenizer"]["fingerprint"]:
        expected = manifest["tokenizer"]["fingerprint"]
        raise InferenceError(f"tokenizer {path} is not the one the run trained with (fingerprint "
                             f"{tokenizer.fingerprint[:12]}, the store says {expected[:12]})")
    return tokenizer

