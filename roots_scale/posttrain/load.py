"""One process, one model: a TP=1 GPT, BERT or recurrent model (RNN, LSTM, GRU) rebuilt from a checkpoint's full
weights, and the run's tokenizer.

What `roots-train generate`, `evaluate` and `export-hf` share. A checkpoint of any TP size and ZeRO stage
holds consolidated full weights (`checkpoint.consolidated`); they load into a TP=1 model in this process,
on megatron-core groups of a one-process world.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch.distributed as dist
from megatron.core import parallel_state
from torch import nn

from roots_core.errors import TokenizerError, TokenStoreError
from roots_core.token_store import read_manifest
from roots_core.tokenizer import Tokenizer
from roots_scale.checkpoint.consolidated import FullState, read_full_state
from roots_scale.config import Config
from roots_scale.data.builder import store_paths
from roots_scale.data.errors import BlendError
from roots_scale.finetune.models import build_task_model
from roots_scale.models import build_model
from roots_scale.models.tensor_parallel import load_full_params
from roots_scale.posttrain.errors import InferenceError


@contextmanager
def single_process_world() -> Iterator[None]:
    """megatron-core's groups at TP=1 in this one process (our layers need them even alone); an existing world is
    used as it is."""
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


def load_checkpoint_model(path: str | Path) -> tuple[nn.Module, FullState]:
    """(TP=1 model in eval mode with the checkpoint's weights, its FullState); call inside `single_process_world`."""
    state = read_full_state(path)
    cfg, rows = state.config, state.params["embedding.weight"].shape[0]
    model = (build_task_model(cfg.model, cfg.finetune, rows) if cfg.finetune.task else build_model(cfg.model, rows)).eval()
    load_full_params(model, state.params)
    return model, state


def run_tokenizer(cfg: Config, override: str | Path | None = None) -> Tokenizer:
    """The tokenizer the run trained with: the one its store's manifest names, or `override` with the same
    fingerprint (or any `override` when the run's stores are gone)."""
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
    except TokenizerError as err:
        raise InferenceError(f"{err}; pass --tokenizer SPM_MODEL (the run's .model file)") from err
    if manifest is not None and tokenizer.fingerprint != manifest["tokenizer"]["fingerprint"]:
        expected = manifest["tokenizer"]["fingerprint"]
        raise InferenceError(f"tokenizer {path} is not the one the run trained with (fingerprint "
                             f"{tokenizer.fingerprint[:12]}, the store says {expected[:12]})")
    return tokenizer
