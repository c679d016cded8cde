"""A race-free cache of index arrays (.npy), keyed by a hash of everything that defines them.

Exactly one process builds a given index: it takes `<key>.lock` with O_EXCL, builds into a
private temporary directory and publishes it with one atomic rename to `<key>/`. Every other
process waits for that directory and memory-maps it, so reopening costs milliseconds. On a
cluster without a shared filesystem each node's cache directory is its own, and the first
process of each node builds an identical copy. A lock left by a dead builder on this host is
taken over; on another host it is trusted until `timeout` runs out.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from roots_scale.data.errors import IndexCacheError


DONE = "done.json"


def cache_key(description: dict[str, Any]) -> str:
    """A short stable hash of what defines an index (JSON, sorted keys)."""
    return hashlib.sha256(json.dumps(description, sort_keys=True).encode()).hexdigest()[:20]


def cached_arrays(cache_dir: str | os.PathLike[str], description: dict[str, Any],
                  build: Callable[[], dict[str, np.ndarray]], timeout: float = 3600.0,
                  poll: float = 0.2) -> dict[str, np.ndarray]:
    """The arrays `build()` returns, from the cache if present (memory-mapped, read-only)."""
    cache_dir = Path(cache_dir)
    key = cache_key(description)
    folder = cache_dir / key
    deadline = time.monotonic() + timeout
    while True:
        if (folder / DONE).is_file():
            return _load(folder)
        cache_dir.mkdir(parents=True, exist_ok=True)
        if _acquire(cache_dir / f"{key}.lock"):
            try:
                if not (folder / DONE).is_file():  # another builder may have finished just before
                    _build_into(folder, description, build)
                return _load(folder)
            finally:
                (cache_dir / f"{key}.lock").unlink(missing_ok=True)
        if time.monotonic() > deadline:
            raise IndexCacheError(
                f"waited {timeout:.0f} s for another process to build {folder} (lock {cache_dir / key}.lock); "
                f"if no job is building it, delete the lock file")
        time.sleep(poll)


def _acquire(lock: Path) -> bool:
    """Take the lock, or take over one left by a dead process on this host."""
    owner = json.dumps({"host": socket.gethostname(), "pid": os.getpid()}).encode()
    try:
        fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        if _stale(lock):
            lock.unlink(missing_ok=True)
            return _acquire(lock)
        return False
    with os.fdopen(fd, "wb") as handle:
        handle.write(owner)
    return True


def _stale(lock: Path) -> bool:
    try:
        owner = json.loads(lock.read_text())
    except (OSError, ValueError):
        return False  # being written right now
    if owner.get("host") != socket.gethostname():
        return False
    try:
        os.kill(int(owner["pid"]), 0)
    except ProcessLookupError:
        return True
    except (PermissionError, KeyError, ValueError):
        return False
    return False


def _build_into(folder: Path, description: dict[str, Any], build: Callable[[], dict[str, np.ndarray]]) -> None:
    tmp = folder.with_name(f".{folder.name}.{os.getpid()}.{uuid.uuid4().hex}.tmp")
    tmp.mkdir(parents=True)
    try:
        started = time.perf_counter()
        arrays = build()
        for name, array in arrays.items():
            np.save(tmp / f"{name}.npy", np.ascontiguousarray(array))
        info = {"description": description, "arrays": sorted(arrays),
                "build_seconds": round(time.perf_counter() - started, 3)}
        (tmp / DONE).write_text(json.dumps(info, indent=1, sort_keys=True))
        os.rename(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _load(folder: Path) -> dict[str, np.ndarray]:
    try:
        names = json.loads((folder / DONE).read_text())["arrays"]
        return {name: np.load(folder / f"{name}.npy", mmap_mode="r") for name in names}
    except (OSError, ValueError, KeyError) as err:
        raise IndexCacheError(f"index cache {folder} is unreadable ({err}); delete it to rebuild") from err
