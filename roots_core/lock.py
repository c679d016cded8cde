"""An exclusive lock on a directory for the life of one process, so two jobs never write one run directory.

A POSIX record lock (`fcntl.lockf`) on `DIR/.lock`: the kernel releases it when its holder exits or dies,
however it dies, so a crashed job never leaves a stale lock; on NFS the lock daemon does the same for
processes on other nodes (and reclaims a dead node's locks), and Lustre needs its `flock` mount option.
The file also records who holds it (host, pid, since when), for the message a second job gets.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from pathlib import Path

from roots_core.errors import LockError

LOCK_FILE = ".lock"


class DirectoryLock:
    """`acquire()` takes the lock or raises LockError naming the holder; `release()` (or exit) frees it."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.path = Path(directory) / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 4096, 0).decode(errors="replace")
            os.close(fd)
            raise LockError(f"{self.path.parent} is in use by another job ({_describe(holder)}); two jobs on one "
                            f"run directory would overwrite each other's checkpoints and metrics. Wait for it "
                            f"to end, or give this run another run.output_dir") from None
        holder = {"host": socket.gethostname(), "pid": os.getpid(), "since": time.strftime("%Y-%m-%d %H:%M:%S")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(holder).encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the lock; the file stays, naming the last holder
            self._fd = None

    def __enter__(self) -> DirectoryLock:
        self.acquire()
        return self

    def __exit__(self, *exc_info) -> None:
        self.release()


def _describe(holder_text: str) -> str:
    """'held by host H, pid P, since T' from the lock file, or what it can say without it."""
    try:
        holder = json.loads(holder_text)
        return f"held by host {holder['host']}, pid {holder['pid']}, since {holder['since']}"
    except (ValueError, KeyError, TypeError):
        return "held by a process that has not recorded itself yet"
