"""What a training run is made of, built from the config in parts that the entry point, benchmarks and tests
share: the data (`build_data`), the model and DeepSpeed engine (`build_engine`), and the trainer with its
callbacks (`build_run`). Each part is handed only the settings it uses.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import deepspeed
import numpy as np
import torch
import torch.distributed as dist
from megatron.core import parallel_state
from torch import nn

from roots_core.atomic import write_text_atomic
from roots_core.errors import TokenStoreError
from roots_core.token_store import verify_checksums_once
from roots_scale.checkpoint.manager import CheckpointManager, Layout, RunIdentity
from roots_scale.config import BatchPlan, Config, save_config
from roots_scale.data import SampleSource
from roots_scale.data.builder import DataSources, SampleSettings, build_dataset, resolve_sources
from roots_scale.distributed import LaunchEnv, MegatronMpu, check_topology, placement, topology
from roots_scale.models import build_model
from roots_scale.models.layers import padded_vocab_size
from roots_scale.models.pipeline import build_pipeline_gpt
from roots_scale.posttrain.hf.load import init_model_from_hf
from roots_scale.training.callbacks.checkpointing import Checkpointing
from roots_scale.training.callbacks.metrics_log import MetricsLog
from roots_scale.training.callbacks.preemption import Preemption
from roots_scale.training.callbacks.throughput import Throughput
from roots_scale.training.callbacks.update_guard import GuardSettings, UpdateGuard
from roots_scale.training.callbacks.validation import Validation
from roots_scale.training.deepspeed_config import build_deepspeed_config, effective_zero_stage
from roots_scale.training.flops import FlopsMeter
from roots_scale.training.metrics import MetricsLogger
from roots_scale.training.optimizer import build_optimizer
from roots_scale.training.pipeline import engine_steps
from roots_scale.training.schedules import learning_rate
from roots_scale.training.trainer import Callback, LoopSettings, Trainer

PLACEMENT_FILE = "placement.json"  # in the run directory: which host each rank runs on, and the tensor groups' hosts


@dataclass
class RunData:
    sources: DataSources
    train: SampleSource
    valid: SampleSource | None


@dataclass
class Run:
    """A run ready to `fit()`: the trainer, and the parts a caller may want to look at or hook into."""

    trainer: Trainer
    model: nn.Module
    engine: object
    checkpoints: CheckpointManager
    data: RunData


def seed_everything(seed: int) -> None:
    """The same seed on every rank: weights are initialized whole, then sliced per rank."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def build_data(cfg: Config, plan: BatchPlan, run_dir: Path) -> RunData:
    """The training (and validation) datasets, after rank 0 has verified every store's checksums."""
    sources = resolve_sources(cfg.data.path)
    for path in sources.stores:
        verify_store(path, run_dir)
    cache_dir = Path(cfg.data.cache_dir) if cfg.data.cache_dir else run_dir / "index_cache"
    settings = SampleSettings.from_config(cfg)
    train = build_dataset(sources, settings, cfg.train.iters * plan.global_batch_size, "train", cache_dir)
    valid = None
    if cfg.train.eval_interval is not None:  # one fixed set of eval_iters micro-batches per data-parallel rank
        valid = build_dataset(sources, settings, cfg.train.eval_iters * plan.micro_batch_size * plan.data_parallel_size,
                              "valid", cache_dir)
    return RunData(sources, train, valid)


def verify_store(store_path: Path, run_dir: Path) -> None:
    """Rank 0 checks the store's checksums (once per store, cached); every rank learns the verdict."""
    verdict: list[str | None] = [None]
    if dist.get_rank() == 0:
        # A read-only store's record goes in the run directory, one file per store (names repeat across stores).
        cache = None if os.access(store_path, os.W_OK) else \
            run_dir / f"store_verified_{hashlib.sha256(str(store_path.resolve()).encode()).hexdigest()[:12]}.json"
        try:
            verify_checksums_once(store_path, cache)
        except TokenStoreError as err:
            verdict = [str(err)]
    dist.broadcast_object_list(verdict, src=0)
    if verdict[0] is not None:
        raise TokenStoreError(verdict[0])


def build_engine(cfg: Config, plan: BatchPlan, vocab_rows: int, init_from_hf: bool = False):
    """(model, DeepSpeed engine) on an initialized world: the seeded model (or weights from `model.init_from_hf`),
    AdamW with its parameter groups, and the DeepSpeed config derived from `cfg`. With `parallel.pipeline` > 1
    the model is this rank's pipeline stage and the engine DeepSpeed's pipeline engine."""
    p, seed = cfg.parallel, cfg.train.seed
    if p.pipeline > 1:
        layout = topology(p.tensor, p.pipeline, dist.get_world_size())
        check_topology(layout)
        model = build_pipeline_gpt(cfg.model, vocab_rows, p.tensor, layout, seed, p.pipeline_partition,
                                   p.sequence_parallel)
    else:
        model = build_model(cfg.model, vocab_rows, p.tensor, seed, p.sequence_parallel)
    seed_everything(seed)  # every layout leaves model building with the same RNG state
    if init_from_hf:
        init_model_from_hf(model, cfg.model.init_from_hf, cfg.model)
    return model, initialize_engine(model, cfg, plan)


def initialize_engine(model: nn.Module, cfg: Config, plan: BatchPlan):
    """DeepSpeed's engine around a built model: AdamW with its parameter groups, the config derived from `cfg`."""
    engine, _, _, _ = deepspeed.initialize(model=model, optimizer=build_optimizer(model, cfg.optimizer),
                                           config=build_deepspeed_config(cfg, plan),
                                           mpu=None if cfg.parallel.pipeline > 1 else MegatronMpu())
    return engine


def make_run_directory(cfg: Config, launch: LaunchEnv) -> Path:
    """Collective: rank 0 creates the run directory and records in placement.json which host each rank runs on
    (warning when a tensor-parallel group spans nodes); every rank returns once it exists."""
    run_dir = Path(cfg.run.output_dir)
    where = placement(cfg.parallel.tensor, cfg.parallel.pipeline)
    if launch.rank == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_text_atomic(run_dir / PLACEMENT_FILE, json.dumps(where, indent=1) + "\n")
        if where["tensor_groups_span_nodes"]:
            print(f"roots-train: warning: tensor-parallel groups span nodes ({run_dir / PLACEMENT_FILE}): give each "
                  f"node a multiple of parallel.tensor={cfg.parallel.tensor} processes", file=sys.stderr)
    dist.barrier()
    return run_dir


def open_checkpoints(cfg: Config, plan: BatchPlan, launch: LaunchEnv,
                     fingerprints: dict[str, dict[str, str]]) -> CheckpointManager:
    """The run's checkpoint manager, and its config.yaml, written only once the latest checkpoint (if any) is
    known to be resumable with this config and data."""
    run_dir = Path(cfg.run.output_dir)
    identity = RunIdentity(Layout(cfg.parallel.tensor, plan.data_parallel_size, effective_zero_stage(cfg, plan),
                                  cfg.parallel.pipeline), fingerprints)
    checkpoints = CheckpointManager(run_dir / "checkpoints", cfg.checkpoint, identity, cfg)
    resume_from = checkpoints.latest_tag()
    if resume_from is not None:
        checkpoints.check_resumable(resume_from)  # before config.yaml takes this run's values
    if launch.rank == 0:
        save_config(cfg, run_dir / "config.yaml")
    return checkpoints


def build_trainer(cfg: Config, plan: BatchPlan, launch: LaunchEnv, engine, dataset: SampleSource,
                  checkpoints: CheckpointManager, vocab_rows: int, validation: Sequence[Callback],
                  started_at: float | None, extra_callbacks: Sequence[Callback]) -> Trainer:
    """The trainer with the standard callbacks around the task's `validation` ones, then `extra_callbacks`."""
    t = cfg.train
    callbacks: list[Callback] = [
        Checkpointing(checkpoints, t.save_interval),
        UpdateGuard(GuardSettings(t.max_nonfinite_steps, t.loss_spike_zscore, t.loss_spike_window),
                    checkpoints.latest_tag),
        Throughput(t.log_interval, cfg.model.seq_length,
                   FlopsMeter.for_run(cfg.model, vocab_rows, launch.world_size, t.precision, t.peak_tflops)),
        *validation,
        Preemption(t.exit_duration_minutes, t.exit_interval, started_at),
        MetricsLog(MetricsLogger(Path(cfg.run.output_dir), enabled=launch.rank == 0, tensorboard=cfg.run.tensorboard,
                                 wandb=cfg.run.wandb, config=cfg.to_dict())),
        *extra_callbacks,
    ]
    settings = LoopSettings(t.iters, plan.micro_batch_size, plan.gradient_accumulation_steps, cfg.data.num_workers,
                            pin_memory=torch.cuda.is_available())
    return Trainer(engine, dataset, settings, lambda step: learning_rate(step, t.iters, cfg.optimizer),
                   parallel_state.get_data_parallel_group(), callbacks, engine_steps(engine))


def build_run(cfg: Config, plan: BatchPlan, launch: LaunchEnv, started_at: float | None = None,
              extra_callbacks: Sequence[Callback] = ()) -> Run:
    """Data, model, engine, checkpoints and the trainer with its callbacks, on an initialized world.

    `extra_callbacks` run after the standard ones (tests inject faults this way)."""
    data = build_data(cfg, plan, make_run_directory(cfg, launch))
    vocab = padded_vocab_size(cfg.model.vocab_size or data.sources.vocab_size, cfg.model.make_vocab_size_divisible_by)
    checkpoints = open_checkpoints(cfg, plan, launch, data.sources.fingerprints())
    fresh = checkpoints.latest_tag() is None
    model, engine = build_engine(cfg, plan, vocab, init_from_hf=bool(cfg.model.init_from_hf) and fresh)
    validation = [] if data.valid is None else [Validation(data.valid, cfg.train.eval_interval, cfg.train.eval_iters)]
    trainer = build_trainer(cfg, plan, launch, engine, data.train, checkpoints, vocab, validation, started_at,
                            extra_callbacks)
    return Run(trainer, model, engine, checkpoints, data)
