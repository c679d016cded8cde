"""Run a function on N ranks of a real gloo world, in forked processes, without a launcher.

Like OLMo-core's `run_distributed_test`: each rank is a fork of the test process (so nothing is imported
again, which is what makes it fast), with RANK / WORLD_SIZE / MASTER_ADDR / MASTER_PORT set as torchrun
would set them. Each rank's stdout and stderr go to a file the result carries, so a test can assert on
what a user would see. Use it for trainer, callback and checkpoint logic; keep real torchrun launches for
what only a launcher proves (signals to a job, SIGKILL, torchrun's own behaviour).
"""

from __future__ import annotations

import multiprocessing
import os
import socket
import sys
import tempfile
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any


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


def _child(fn: Callable[..., Any], rank: int, world_size: int, port: int, log: str, args: tuple,
           results: multiprocessing.SimpleQueue) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world_size), LOCAL_WORLD_SIZE=str(world_size),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), OMP_NUM_THREADS="1")
    with open(log, "w") as handle:
        os.dup2(handle.fileno(), 1)
        os.dup2(handle.fileno(), 2)
    sys.stdout = open(1, "w", buffering=1, closefd=False)
    sys.stderr = open(2, "w", buffering=1, closefd=False)
    import torch

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
