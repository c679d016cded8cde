"""Atomic file writes: write to a temp name in the target's directory, flush it to disk, then rename it.

A killed job (or a full disk) therefore never leaves a half-written file under the final name,
which is what lets every stage and every checkpoint treat "the file exists" as "the file is
complete". This is the one implementation; every writer in the project goes through it.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a fresh temp path beside `target`; on success fsync it and rename it onto `target`, on error
    delete it. Whatever writes the temp path (pyarrow, torch.save, plain I/O) gets the same guarantee."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.{uuid.uuid4().hex}.tmp")
    try:
        yield tmp
        _fsync(tmp)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def _fsync(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def write_bytes_atomic(target: str | os.PathLike[str], data: bytes) -> None:
    """Write `data` to `target` atomically."""
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)


def write_text_atomic(target: str | os.PathLike[str], text: str) -> None:
    """Write `text` (UTF-8) to `target` atomically."""
    write_bytes_atomic(target, text.encode("utf-8"))
