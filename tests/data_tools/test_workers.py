"""Workers: this process works alongside N - 1 spawned helpers, which several stage runs can share."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from data_tools.errors import DataToolsError
from data_tools.stage import Task, Workers


def where_it_ran(task: Task, output_dir: Path) -> int:
    """A task's work for these tests: take a little time, then say which process ran it."""
    time.sleep(0.05)
    return os.getpid()


def fails_in_a_helper(task: Task, output_dir: Path) -> int:
    """Slow in the main process (so that a helper takes tasks too), failing in any helper."""
    if os.getpid() != int(task.input.name):
        raise DataToolsError(f"task {task.name} failed in a helper process")
    time.sleep(0.5)
    return os.getpid()


def tasks(count: int, label: str = "") -> list[Task]:
    return [Task(f"task-{index}", Path(label)) for index in range(count)]


def test_every_task_runs_once_here_and_in_at_most_n_minus_1_helpers_shared_between_maps(tmp_path):
    with Workers(3) as workers:
        first = dict(workers.map(where_it_ran, tasks(12), tmp_path))
        second = dict(workers.map(where_it_ran, tasks(12), tmp_path))
    for results in (first, second):
        assert sorted(task.name for task in results) == sorted(task.name for task in tasks(12))
        assert os.getpid() in results.values()
    helpers = (set(first.values()) | set(second.values())) - {os.getpid()}
    assert 1 <= len(helpers) <= 2  # the second map reused the first one's processes


def test_one_worker_or_one_task_runs_here_without_starting_processes(tmp_path):
    with Workers(1) as workers:
        assert set(dict(workers.map(where_it_ran, tasks(3), tmp_path)).values()) == {os.getpid()}
    with Workers(4) as workers:
        assert set(dict(workers.map(where_it_ran, tasks(1), tmp_path)).values()) == {os.getpid()}
        assert workers._pool is None


def test_a_helpers_error_reaches_the_caller(tmp_path):
    with Workers(2) as workers, pytest.raises(DataToolsError, match=r"task task-\d failed in a helper process"):
        list(workers.map(fails_in_a_helper, tasks(4, str(os.getpid())), tmp_path))


def test_fewer_than_one_worker_is_refused():
    with pytest.raises(DataToolsError, match="--num-workers 0 is invalid"):
        Workers(0)
