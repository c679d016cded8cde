"""The index cache: one builder among concurrent processes, atomic publication, mmap reopen."""

from __future__ import annotations

import json
import multiprocessing
import os
import time
from pathlib import Path

import numpy as np
import pytest

from roots_scale.data.index_cache import cache_key, cached_arrays

DESCRIPTION = {"kind": "test", "seed": 3, "size": 100_000}


def build_slowly(log: Path) -> dict[str, np.ndarray]:
    with open(log, "a") as handle:
        handle.write(f"{os.getpid()}\n")
    time.sleep(0.5)  # long enough for the other processes to arrive while the build runs
    rng = np.random.default_rng(DESCRIPTION["seed"])
    return {"order": rng.permutation(DESCRIPTION["size"]), "starts": np.arange(10)}


def open_index(cache_dir: str, log: str, out: str) -> None:
    arrays = cached_arrays(cache_dir, DESCRIPTION, lambda: build_slowly(Path(log)))
    np.save(out, np.asarray(arrays["order"]))


def test_concurrent_processes_build_once_and_agree(tmp_path: Path) -> None:
    context = multiprocessing.get_context("spawn")
    log = tmp_path / "builds.log"
    outputs = [tmp_path / f"out{i}.npy" for i in range(4)]
    processes = [context.Process(target=open_index, args=(str(tmp_path / "cache"), str(log), str(out)))
                 for out in outputs]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=120)
        assert process.exitcode == 0
    assert len(log.read_text().split()) == 1  # exactly one process built the index
    first = np.load(outputs[0])
    assert all(np.array_equal(first, np.load(out)) for out in outputs[1:])
    entries = sorted(p.name for p in (tmp_path / "cache").iterdir())
    assert entries == [cache_key(DESCRIPTION)]  # no lock or temporary directory left behind
    info = json.loads((tmp_path / "cache" / cache_key(DESCRIPTION) / "done.json").read_text())
    assert info["description"] == DESCRIPTION and info["arrays"] == ["order", "starts"]


def test_reopen_is_memory_mapped_and_skips_the_build(tmp_path: Path) -> None:
    calls = []
    build = lambda: calls.append(1) or {"x": np.arange(5)}  # noqa: E731
    cached_arrays(tmp_path, {"a": 1}, build)
    again = cached_arrays(tmp_path, {"a": 1}, build)
    assert calls == [1]
    assert isinstance(again["x"], np.memmap) and not again["x"].flags.writeable
    cached_arrays(tmp_path, {"a": 2}, build)  # a different description is a different index
    assert calls == [1, 1]


def test_a_dead_builders_lock_is_taken_over(tmp_path: Path) -> None:
    key = cache_key({"a": 1})
    tmp_path.mkdir(exist_ok=True)
    (tmp_path / f"{key}.lock").write_text(json.dumps({"host": os.uname().nodename, "pid": 2**22 + 12345}))
    arrays = cached_arrays(tmp_path, {"a": 1}, lambda: {"x": np.arange(3)}, timeout=5)
    assert list(arrays["x"]) == [0, 1, 2]


def test_a_live_foreign_lock_times_out_with_a_clear_message(tmp_path: Path) -> None:
    key = cache_key({"a": 1})
    (tmp_path / f"{key}.lock").write_text(json.dumps({"host": "another-node", "pid": 1}))
    with pytest.raises(Exception, match="delete the lock file"):
        cached_arrays(tmp_path, {"a": 1}, lambda: {"x": np.arange(3)}, timeout=0.5, poll=0.1)
