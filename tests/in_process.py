"""Run a function on N ranks of a real gloo world, in forked processes, without a launcher.

Like OLMo-core's `run_distributed_test`: each rank is a fork of the test process (so nothing is imported
again, which is what makes it fast), with RANK / WORLD_SIZE / MASTER_ADDR / MASTER_PORT set as torchrun
would set them. Each rank's stdout and stderr go to a file the result carries, so a test can assert on
what a user would see. Use it for trainer, callback and checkpoint logic; keep real torchrun launches for
what only a launcher proves (signals to a job, SIGKILL, torchrun's own behaviour).
"""

from __future__ import annotations

import gc
import multiprocessing
import os
import socket
import sys
import tempfile
import traceback
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class RankResult:
    rank: int
    value: Any  # what the function returned (must pickle)
    output: str  # everything the rank wrote to stdout and stderr
    error: str | None  # the traceback of an exception that escaped the function


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _groups_in_module_globals() -> list[dist.ProcessGroup]:
    """Process groups the parent left in module globals (megatron-core's `destroy_model_parallel` does not
    clear them all). A child that overwrote such a global would run the group's destructor, which joins
    threads that exist only in the parent, and hang; the caller keeps them referenced instead."""
    groups = []
    for name, module in list(sys.modules.items()):
        if not name.startswith(("megatron", "deepspeed", "torch.distributed", "roots_scale")):
            continue
        with warnings.catch_warnings():  # looking at a deprecated alias (torch.distributed.reduce_op) warns
            warnings.simplefilter("ignore")
            for value in list(getattr(module, "__dict__", {}).values()):
                candidates = value if isinstance(value, (list, tuple)) else (value,)
                groups += [group for group in candidates if isinstance(group, dist.ProcessGroup)]
    return groups


def _child(fn: Callable[..., Any], rank: int, world_size: int, port: int, log: str, args: tuple,
           results: multiprocessing.SimpleQueue) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world_size),
                      LOCAL_WORLD_SIZE=str(world_size), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
                      OMP_NUM_THREADS="1")
    with open(log, "w") as handle:
        os.dup2(handle.fileno(), 1)
        os.dup2(handle.fileno(), 2)
    sys.stdout = open(1, "w", buffering=1, closefd=False)
    sys.stderr = open(2, "w", buffering=1, closefd=False)
    gc.freeze()  # what the parent left behind stays uncollected here (see run_distributed)
    inherited = _groups_in_module_globals()  # noqa: F841 - held so that they are never destroyed here
    torch.set_num_threads(1)
    value, error = None, None
    try:
        value = fn(*args)
    except BaseException:  # noqa: BLE001 - reported to the parent, which fails the test
        error = traceback.format_exc()
    sys.stdout.flush()
    sys.stderr.flush()
    results.put((rank, value, error))
    os._exit(0)  # no atexit handlers of the parent (pytest) in a forked child


def run_distributed(fn: Callable[..., Any], world_size: int, *args: Any, timeout: float = 300) -> list[RankResult]:
    """`fn(*args)` on ranks 0..world_size-1; results ordered by rank. Raises if a rank hangs or dies."""
    if dist.is_available() and dist.is_initialized():
        raise RuntimeError("run_distributed forks ranks from this process, which already has a process group "
                           "(a fixture's?): the ranks would inherit it. Tear it down first.")
    # Objects the parent no longer uses but has not collected yet (a torn-down process group among them)
    # would otherwise be collected in a child, whose destructor joins threads that only exist in the parent.
    gc.collect()
    context = multiprocessing.get_context("fork")
    results = context.SimpleQueue()
    port = _free_port()
    with tempfile.TemporaryDirectory() as logs:
        paths = [str(Path(logs) / f"rank{rank}.log") for rank in range(world_size)]
        processes = [context.Process(target=_child, args=(fn, rank, world_size, port, paths[rank], args, results))
                     for rank in range(world_size)]
        for process in processes:
            process.start()
        for process in processes:
            process.join(timeout)
        hung = [rank for rank, process in enumerate(processes) if process.is_alive()]
        for process in processes:
            if process.is_alive():
                process.kill()
        outputs = [Path(path).read_text() for path in paths]
    if hung:
        raise TimeoutError(f"ranks {hung} did not finish in {timeout} s; their output:\n" +
                           "\n".join(outputs[rank][-3000:] for rank in hung))
    collected = {}
    while not results.empty():
        rank, value, error = results.get()
        collected[rank] = (value, error)
    missing = [rank for rank in range(world_size) if rank not in collected]
    if missing:
        raise RuntimeError(f"ranks {missing} died without a result; their output:\n" +
                           "\n".join(outputs[rank][-3000:] for rank in missing))
    return [RankResult(rank, collected[rank][0], outputs[rank], collected[rank][1]) for rank in range(world_size)]


def run_ok(fn: Callable[..., Any], world_size: int, *args: Any, timeout: float = 300) -> list[RankResult]:
    """`run_distributed`, asserting that no rank raised (the failing rank's traceback and output in the message)."""
    results = run_distributed(fn, world_size, *args, timeout=timeout)
    for result in results:
        assert result.error is None, f"rank {result.rank} raised:\n{result.error}\n{result.output[-3000:]}"
    return results


def pretrain_ranks(world_size: int, *argv: str, callbacks: Callable[[], list] | None = None, expect: int = 0,
                   timeout: float = 300, finetune: bool = False) -> list[RankResult]:
    """`roots-train` (pretrain.main), or `roots-train finetune`, on `world_size` forked gloo ranks from the repository
    root; asserts that every rank exited with `expect`. `callbacks()` builds extra trainer callbacks inside each
    rank (faults)."""
    results = run_ok(_pretrain, world_size, list(argv), callbacks, finetune, timeout=timeout)
    for result in results:
        assert result.value == expect, f"rank {result.rank} exited {result.value}:\n{result.output[-3000:]}"
    return results


def _pretrain(argv: list[str], callbacks: Callable[[], list] | None, finetune: bool) -> int:
    from roots_scale import pretrain  # noqa: PLC0415 - imported once in the parent by whoever calls this

    os.chdir(ROOT)
    job = pretrain.PRETRAINING
    if finetune:
        from roots_scale.finetune.run import FINETUNING as job  # noqa: PLC0415
    return pretrain.main(argv, extra_callbacks=callbacks() if callbacks else (), job=job)
