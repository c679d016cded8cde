"""Pretraining entry point: `roots-train --config configs/tiny_gpt.yaml train.iters=50 ...`.

Runs under torchrun, the `deepspeed` launcher, srun, mpirun or plain python. Restarting the same
command resumes from the run directory's latest checkpoint.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import sys
import time
import warnings
from pathlib import Path

if __package__ in (None, ""):  # run as `python roots_scale/pretrain.py`: import the package, not its folder
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import numpy as np
import torch

# Library chatter that says nothing about this run: megatron-core's optional fused kernels, and a
# DeepSpeed call into a torch API torch has renamed.
warnings.filterwarnings("ignore", message="Transformer Engine and Apex are not installed")
warnings.filterwarnings("ignore", message=".*all_gather_into_tensor.* is deprecated")

from roots_scale.config import BatchPlan, Config, ConfigError, load_config, save_config, validate
from roots_scale.data.gpt_dataset import DatasetError
from roots_core.token_store import TokenStoreError, read_manifest, verify_checksums_once
from roots_scale.distributed import (
    DistributedError,
    LaunchEnv,
    MegatronMpu,
    destroy_distributed,
    discover_launch_env,
    init_distributed,
)

EXIT_OK = 0  # finished, or stopped at train.exit_interval
EXIT_BAD_CONFIG = 2  # also bad data, or a checkpoint that does not fit the run
EXIT_REQUEUE = 3  # preempted (SIGTERM / SIGUSR1) or out of exit-duration budget: saved; run again to continue
EXIT_TRAINING_FAILED = 4  # e.g. the loss stayed non-finite; the last checkpoint is intact
EXIT_STATUS_FILE = "exit_status.json"  # why the last run stopped: a job script reads it (torchrun hides exit codes)

SUBCOMMANDS = {  # roots-train NAME ...: module with main(argv) -> exit code
    "convert-checkpoint": "roots_scale.training.layout_free",
    "export-hf": "roots_scale.hf.export",
    "generate": "roots_scale.generate",
    "evaluate": "roots_scale.evaluate",
}


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(
        prog="roots-train",
        description="Pretrain a GPT or BERT with DeepSpeed ZeRO × megatron-core tensor parallelism.",
        epilog="Overrides: section.key=value, e.g. train.iters=50 parallel.tensor=2 optimizer.lr=3e-4")
    parser.add_argument("--config", help="YAML config (see configs/); defaults apply when omitted")
    parser.add_argument("--local_rank", "--local-rank", type=int, help=argparse.SUPPRESS)  # deepspeed launcher
    return parser.parse_known_args(argv)


def main(argv: list[str] | None = None) -> int:
    started_at = time.perf_counter()  # train.exit_duration_minutes counts from here
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in SUBCOMMANDS:
        import importlib

        return importlib.import_module(SUBCOMMANDS[argv[0]]).main(argv[1:])
    args, overrides = parse_args(argv)
    try:
        cfg = load_config(args.config, overrides)
        launch = discover_launch_env()
        plan = validate(cfg, launch.world_size)
    except (ConfigError, DistributedError) as err:
        print(f"roots-train: error: {err}", file=sys.stderr)
        return EXIT_BAD_CONFIG
    from roots_scale.hf import HFConversionError
    from roots_scale.training.checkpoint import CheckpointError
    from roots_scale.training.trainer import TrainingError

    import torch.distributed as dist

    init_distributed(launch, cfg.parallel.tensor)
    try:
        result = train(cfg, plan, launch, started_at)
        code = EXIT_REQUEUE if result.requeue else EXIT_OK
        if launch.rank == 0:
            write_exit_status(Path(cfg.run.output_dir), result.reason, result.step, result.requeue, code)
        dist.barrier()  # no rank exits (and gets its peers killed by a launcher) before the status is on disk
    except (TokenStoreError, DatasetError, CheckpointError, HFConversionError) as err:
        return _fail(cfg, launch, err, EXIT_BAD_CONFIG, "error")
    except TrainingError as err:
        return _fail(cfg, launch, err, EXIT_TRAINING_FAILED, "training_failed")
    finally:
        destroy_distributed()
    return code


def _fail(cfg: Config, launch: LaunchEnv, err: Exception, code: int, reason: str) -> int:
    if launch.rank == 0:
        print(f"roots-train: error: {err}", file=sys.stderr)
        write_exit_status(Path(cfg.run.output_dir), reason, None, False, code, str(err))
    return code


def write_exit_status(run_dir: Path, reason: str, step: int | None, requeue: bool, code: int,
                      message: str | None = None) -> None:
    """Record why the run stopped, atomically, for job scripts that cannot see the exit code."""
    import json

    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / EXIT_STATUS_FILE
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps({"reason": reason, "step": step, "requeue": requeue, "exit_code": code,
                               "message": message}, indent=1) + "\n")
    tmp.replace(path)


def seed_everything(seed: int) -> None:
    """The same seed on every rank: weights are initialized whole, then sliced per rank."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def train(cfg: Config, plan: BatchPlan, launch: LaunchEnv, started_at: float | None = None):
    """Build data, model and engine on an initialized world, then run the trainer."""
    import deepspeed
    import torch.distributed as dist
    from megatron.core import parallel_state

    from roots_scale.data.builder import build_dataset, store_paths
    from roots_scale.models import build_model
    from roots_scale.models.layers import padded_vocab_size
    from roots_scale.training.checkpoint import CheckpointManager, Layout, RunIdentity
    from roots_scale.training.deepspeed_config import build_deepspeed_config, effective_zero_stage
    from roots_scale.training.flops import FlopsMeter
    from roots_scale.training.metrics import MetricsLogger
    from roots_scale.training.optimizer import build_optimizer
    from roots_scale.training.trainer import Trainer

    run_dir = Path(cfg.run.output_dir)
    is_writer = launch.rank == 0
    if is_writer:
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, run_dir / "config.yaml")
    dist.barrier()

    stores = store_paths(cfg.data.path)
    manifests = [read_manifest(path) for path in stores]
    vocab_sizes = {manifest["vocab_size"] for manifest in manifests}
    if len(vocab_sizes) != 1:
        raise DatasetError(f"the stores of {cfg.data.path} have different vocabularies {sorted(vocab_sizes)}; "
                           f"a blend needs stores made with one tokenizer")
    for path in stores:
        verify_data(path, run_dir)
    cache_dir = Path(cfg.data.cache_dir) if cfg.data.cache_dir else run_dir / "index_cache"
    dataset = build_dataset(cfg, cfg.train.iters * plan.global_batch_size, "train", cache_dir)
    valid_dataset = None
    if cfg.train.eval_interval is not None:  # one fixed set of eval_iters micro-batches per data-parallel rank
        valid_dataset = build_dataset(cfg, cfg.train.eval_iters * plan.micro_batch_size * plan.data_parallel_size,
                                      "valid", cache_dir)

    seed_everything(cfg.train.seed)
    vocab = padded_vocab_size(cfg.model.vocab_size or vocab_sizes.pop(), cfg.model.make_vocab_size_divisible_by)
    model = build_model(cfg.model, vocab, cfg.parallel.tensor)
    checkpoints = CheckpointManager(run_dir / "checkpoints", cfg, RunIdentity(
        Layout(cfg.parallel.tensor, plan.data_parallel_size, effective_zero_stage(cfg, plan)),
        {f"{i}:{path.name}": {"data": m["fingerprint"], "tokenizer": m["tokenizer"]["fingerprint"]}
         for i, (path, m) in enumerate(zip(stores, manifests))}))
    if cfg.model.init_from_hf and checkpoints.latest_tag() is None:
        from roots_scale.hf.load import init_model_from_hf

        init_model_from_hf(model, cfg.model.init_from_hf, cfg.model)
    engine, _, _, _ = deepspeed.initialize(
        model=model, optimizer=build_optimizer(model, cfg.optimizer),
        config=build_deepspeed_config(cfg, plan), mpu=MegatronMpu())

    metrics = MetricsLogger(run_dir, enabled=is_writer, tensorboard=cfg.run.tensorboard)
    flops = FlopsMeter.for_run(cfg.model, vocab, launch.world_size, cfg.train.precision, cfg.train.peak_tflops)
    trainer = Trainer(cfg, engine, dataset, checkpoints, metrics,
                      parallel_state.get_data_parallel_group(), plan.micro_batch_size,
                      plan.gradient_accumulation_steps, flops, valid_dataset=valid_dataset,
                      pin_memory=torch.cuda.is_available(), started_at=started_at)
    try:
        result = trainer.fit()
    finally:
        metrics.close()
    if is_writer:
        _print_summary(run_dir, result, sum(p.numel() for p in model.parameters()), launch, plan)
    return result


def verify_data(store_path: Path, run_dir: Path) -> None:
    """Rank 0 checks the store's checksums (once per store, cached); every rank learns the verdict."""
    import torch.distributed as dist

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


def _print_summary(run_dir: Path, result, local_params: int, launch: LaunchEnv, plan: BatchPlan) -> None:
    resumed = f"resumed from step {result.resumed_from}" if result.resumed_from else "fresh start"
    print(f"\nroots-train: {result.reason} at step {result.step} ({resumed}; {launch.world_size} processes, "
          f"DP={plan.data_parallel_size}, global batch {plan.global_batch_size}; "
          f"{local_params:,} parameters on rank 0)")
    print(f"  run directory : {run_dir}")
    print(f"  checkpoints   : {run_dir / 'checkpoints'}")
    print(f"  metrics       : {run_dir / 'metrics.jsonl'}")
    print(f"  tensorboard   : tensorboard --logdir {run_dir / 'tensorboard'}")
    if result.reason == "exit_interval":
        print("  stopped at train.exit_interval: run the same command again to continue from here")
    if result.reason == "exit_duration":
        print(f"  stopped after the exit-duration budget (exit code {EXIT_REQUEUE}); rerun the same command to continue")
    if result.reason == "preempted":
        print(f"  stopped on a preemption signal after saving (exit code {EXIT_REQUEUE}); rerun the same command "
              f"to continue")


if __name__ == "__main__":
    sys.exit(main())
