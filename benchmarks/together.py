"""Run a function in several spawned processes that start their timed part at the same moment."""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Sequence
from typing import Any


def run_together(target: Callable[..., None], arguments: Sequence[tuple]) -> list[Any]:
    """Call `target(*args, barrier, results)` in one process per `args`; return what each put in `results`.

    `target` prepares untimed, calls `barrier.wait()` (every process passes it together), times its
    work, and puts one result into `results`. It must be a module-level function (processes spawn).
    """
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(len(arguments)), context.Queue()
    processes = [context.Process(target=target, args=(*args, barrier, results)) for args in arguments]
    for process in processes:
        process.start()
    outcomes = [results.get() for _ in processes]
    for process in processes:
        process.join()
    return outcomes
