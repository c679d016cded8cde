"""The training entry point: `roots-train --config configs/tiny_gpt.yaml train.iters=50 ...`.

Runs under torchrun, the `deepspeed` launcher, srun, mpirun or plain python. Restarting the same
command resumes from the run directory's latest checkpoint. Every user error (config, data, checkpoint)
ends the same way on every rank: one line on stderr, exit code 2, and `exit_status.json` saying why.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):  # run as `python roots_scale/pretrain.py`: import the package, not its folder
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Library chatter that says nothing about this run: megatron-core's optional fused kernels, and a
# DeepSpeed call into a torch API torch has renamed.
warnings.filterwarnings("ignore", message="Transformer Engine and Apex are not installed")
warnings.filterwarnings("ignore", message=".*all_gather_into_tensor.* is deprecated")

import torch.distributed as dist  # noqa: E402

from roots_core.atomic import write_text_atomic  # noqa: E402
from roots_core.errors import LockError, RootsError  # noqa: E402
from roots_core.lock import DirectoryLock  # noqa: E402
from roots_scale.config import BatchPlan, Config, load_config, validate  # noqa: E402
from roots_scale.distributed import (  # noqa: E402
    DistributedError,
    LaunchEnv,
    destroy_distributed,
    discover_launch_env,
    init_distributed,
    is_collective_failure,
)
from roots_scale.run import Run, build_run  # noqa: E402
from roots_scale.training.trainer import Callback, FitResult, TrainingError  # noqa: E402

EXIT_OK = 0  # finished, or stopped at train.exit_interval
EXIT_BAD_CONFIG = 2  # also bad data, or a checkpoint that does not fit the run
EXIT_REQUEUE = 3  # preempted (SIGTERM / SIGUSR1) or out of exit-duration budget: saved; run again to continue
EXIT_TRAINING_FAILED = 4  # e.g. the loss stayed non-finite; the last checkpoint is intact
EXIT_STATUS_FILE = "exit_status.json"  # why the last run stopped: a job script reads it (torchrun hides exit codes)


@dataclass(frozen=True)
class Job:
    """A training command: how its config is checked, and how its run is built on the initialized world."""

    prog: str
    description: str
    validate: Callable[[Config, int], BatchPlan]
    build: Callable[..., Run]


PRETRAINING = Job("roots-train", "Pretrain a GPT or BERT with DeepSpeed ZeRO × megatron-core tensor parallelism. "
                  "Other commands: roots-train {finetune,convert-checkpoint,export-hf,generate,evaluate,plan} --help",
                  validate, build_run)


def parse_args(argv: list[str] | None, job: Job = PRETRAINING) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(
        prog=job.prog, description=job.description,
        epilog="Overrides: section.key=value, e.g. train.iters=50 parallel.tensor=2 optimizer.lr=3e-4")
    parser.add_argument("--config", help="YAML config (see configs/); defaults apply when omitted")
    parser.add_argument("--local_rank", "--local-rank", type=int, help=argparse.SUPPRESS)  # deepspeed launcher
    return parser.parse_known_args(argv)


def main(argv: list[str] | None = None, extra_callbacks: Sequence[Callback] = (), job: Job = PRETRAINING) -> int:
    """Train (pretraining, or the `job` given); `extra_callbacks` join the run's own (tests inject faults this way)."""
    started_at = time.perf_counter()  # train.exit_duration_minutes counts from here
    args, overrides = parse_args(sys.argv[1:] if argv is None else argv, job)
    cfg: Config | None = None
    rank = 0
    try:
        cfg = load_config(args.config, overrides)
        launch = discover_launch_env()
        rank = launch.rank
        plan = job.validate(cfg, launch.world_size)
    except RootsError as err:
        return _fail(cfg, rank, err, EXIT_BAD_CONFIG, "error")
    init_distributed(launch, cfg.parallel.tensor, cfg.parallel.pipeline, cfg.parallel.collective_timeout_s)
    try:
        result = train(cfg, plan, launch, started_at, extra_callbacks, job.build)
        code = EXIT_REQUEUE if result.requeue else EXIT_OK
        if launch.rank == 0:
            write_exit_status(Path(cfg.run.output_dir), result.reason, result.step, result.requeue, code)
        dist.barrier()  # no rank exits (and gets its peers killed by a launcher) before the status is on disk
    except TrainingError as err:
        return _fail(cfg, launch.rank, err, EXIT_TRAINING_FAILED, "training_failed")
    except RootsError as err:
        return _fail(cfg, launch.rank, err, EXIT_BAD_CONFIG, "error")
    except RuntimeError as err:
        if not is_collective_failure(err):
            raise
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        lost = DistributedError(
            f"a collective lost a peer ({first_line}): a process or node of the job died, or hung for "
            f"parallel.collective_timeout_s={cfg.parallel.collective_timeout_s:g}; start the job again to resume "
            f"from the last checkpoint")
        return _fail(cfg, launch.rank, lost, EXIT_TRAINING_FAILED, "peer_failed")
    finally:
        destroy_distributed()
    return code


def train(cfg: Config, plan: BatchPlan, launch: LaunchEnv, started_at: float | None = None,
          extra_callbacks: Sequence[Callback] = (), build: Callable[..., Run] = build_run) -> FitResult:
    """Build the run on an initialized world and fit it, holding the run directory; rank 0 prints where
    everything is."""
    run_dir = Path(cfg.run.output_dir)
    with hold_run_directory(run_dir, launch.rank):
        if launch.rank == 0:
            (run_dir / EXIT_STATUS_FILE).unlink(missing_ok=True)  # it describes an earlier attempt
        run = build(cfg, plan, launch, started_at, extra_callbacks)
        result = run.trainer.fit()
    if launch.rank == 0:
        _print_summary(Path(cfg.run.output_dir), result, sum(p.numel() for p in run.model.parameters()), launch, plan)
    return result


@contextlib.contextmanager
def hold_run_directory(run_dir: Path, rank: int) -> Iterator[None]:
    """Collective: rank 0 locks the run directory for the run's life; if another job holds it, every rank
    raises LockError (rank 0's names the holder) before anything in the directory is touched."""
    lock = DirectoryLock(run_dir)
    refusal = [None]
    if rank == 0:
        try:
            lock.acquire()
        except LockError as err:
            refusal = [str(err)]
    dist.broadcast_object_list(refusal, src=0)
    if refusal[0] is not None:
        raise LockError(refusal[0] if rank == 0 else f"{run_dir} is in use by another job (rank 0 names it)")
    try:
        yield
    finally:
        lock.release()


def _fail(cfg: Config | None, rank: int, err: RootsError, code: int, reason: str) -> int:
    """Every rank: one line on stderr (rank 0 unlabelled, others with their rank). Rank 0 records the status."""
    print(f"roots-train: error: {err}" if rank == 0 else f"roots-train (rank {rank}): error: {err}", file=sys.stderr)
    if rank == 0 and cfg is not None and not isinstance(err, LockError):  # a locked directory is another job's
        try:
            write_exit_status(Path(cfg.run.output_dir), reason, None, False, code, str(err))
        except OSError as write_err:
            print(f"roots-train: could not write {EXIT_STATUS_FILE}: {write_err}", file=sys.stderr)
    return code


def write_exit_status(run_dir: Path, reason: str, step: int | None, requeue: bool, code: int,
                      message: str | None = None) -> None:
    """Record why the run stopped, atomically, for job scripts that cannot see the exit code."""
    status = {"reason": reason, "step": step, "requeue": requeue, "exit_code": code, "message": message}
    write_text_atomic(run_dir / EXIT_STATUS_FILE, json.dumps(status, indent=1) + "\n")


def _print_summary(run_dir: Path, result: FitResult, local_params: int, launch: LaunchEnv, plan: BatchPlan) -> None:
    resumed = f"resumed from step {result.resumed_from}" if result.resumed_from else "fresh start"
    print(f"\nroots-train: {result.reason} at step {result.step} ({resumed}; {launch.world_size} processes, "
          f"DP={plan.data_parallel_size}, global batch {plan.global_batch_size}; "
          f"{local_params:,} parameters on rank 0)")
    print(f"  run directory : {run_dir}")
    print(f"  checkpoints   : {run_dir / 'checkpoints'}")
    print(f"  metrics       : {run_dir / 'metrics.jsonl'}")
    print(f"  tensorboard   : tensorboard --logdir {run_dir / 'tensorboard'}")
    if result.reason == "early_stopped":
        print(f"  stopped early: the validation metric stopped improving; the best checkpoint is named in "
              f"{run_dir / 'checkpoints' / 'best.json'}")
    if result.reason == "exit_interval":
        print("  stopped at train.exit_interval: run the same command again to continue from here")
    if result.reason == "exit_duration":
        print(f"  stopped after the exit-duration budget (exit code {EXIT_REQUEUE}); rerun the same command to continue")
    if result.reason == "preempted":
        print(f"  stopped on a preemption signal after saving (exit code {EXIT_REQUEUE}); rerun the same command "
              f"to continue")


if __name__ == "__main__":
    sys.exit(main())
