"""HTML → main text with resiliparse, and the sandbox process that runs extraction with a time limit.

Extractors can spin for minutes on pathological pages, and C++ code cannot be interrupted by a
Python signal; so a reader runs in a child process (`Sandbox`) that reads its input itself and
sends back only what it produces, in batches; it marks the page it is on in shared memory, so the
parent kills it when one page takes longer than the time limit (or it dies), then counts that page
and starts a fresh sandbox after it.
"""

from __future__ import annotations

import mmap
import multiprocessing
import os
import struct
import tempfile
import time
from collections.abc import Callable, Iterator
from multiprocessing.connection import Connection

from resiliparse.extract.html2text import extract_plain_text
from resiliparse.parse.encoding import bytes_to_str, detect_encoding
from resiliparse.parse.html import HTMLTree

from data_tools.errors import DataToolsError

HtmlToText = Callable[[bytes, "str | None", bool], str]  # (html, charset, main content only) → text
STARTUP_TIMEOUT_S = 120.0  # a fresh interpreter importing the extractor on a loaded machine
_READY = "ready"


def html_to_text(html: bytes, charset: str | None, main_content: bool = True) -> str:
    """The readable text of an HTML page: main content only (no menus, footers) unless told otherwise."""
    markup = bytes_to_str(html, charset or detect_encoding(html))
    text = extract_plain_text(HTMLTree.parse(markup), main_content=main_content, alt_texts=False)
    return text.strip()


class Progress:
    """A 16-byte file both processes map: which item the sandbox is working on, since when.

    Lets the child batch its messages (cheap) while the parent still times each item exactly. A named file, not
    a multiprocessing.RawArray, whose descriptor the child fetches from a parent thread that a killed child can
    leave waiting."""

    _FORMAT = struct.Struct("<qd")  # item index, monotonic start time (0: between items)

    def __init__(self, path: str, create: bool = False) -> None:
        self.path = path
        with open(path, "w+b" if create else "r+b") as file:
            if create:
                file.write(bytes(self._FORMAT.size))
                file.flush()
            self._map = mmap.mmap(file.fileno(), self._FORMAT.size)

    def __reduce__(self) -> tuple:
        return Progress, (self.path,)

    def started(self, item: int) -> None:
        self._FORMAT.pack_into(self._map, 0, item, time.monotonic())

    def finished(self) -> None:
        self._FORMAT.pack_into(self._map, 0, 0, 0.0)

    def current(self) -> tuple[int, float] | None:
        """(item, seconds spent on it so far), or None between items."""
        item, since = self._FORMAT.unpack_from(self._map, 0)
        return None if since == 0.0 else (item, time.monotonic() - since)

    def close(self) -> None:
        self._map.close()
        os.unlink(self.path)


class Sandbox:
    """`target(send, progress, *args)` in a spawned child process; use as a context manager so the child is
    always reaped. The target marks each item it works on with `progress`; when one takes longer than the time
    limit, the child is killed and `stalled_at` names that item."""

    def __init__(self, target: Callable[..., None], args: tuple) -> None:
        context = multiprocessing.get_context("spawn")
        descriptor, path = tempfile.mkstemp(prefix="roots-sandbox-", suffix=".progress")
        os.close(descriptor)
        self._progress = Progress(path, create=True)
        self._conn, child = context.Pipe(duplex=False)
        self._process = context.Process(target=_run, args=(child, target, self._progress, args), daemon=True)
        self._process.start()
        child.close()
        self.stalled_at: int | None = None

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._process.is_alive():
            self._process.kill()
        self._process.join(timeout=10)
        self._conn.close()
        self._progress.close()

    def messages(self, timeout: float) -> Iterator[object]:
        """What the target sends, in order, until it returns; stops early, killing the child, when one item
        takes longer than `timeout` seconds (`stalled_at` is then that item), when the child is silent that long
        between items (`stalled_at` None), or when it dies (`stalled_at`: the item it died on, if any)."""
        if not self._conn.poll(STARTUP_TIMEOUT_S) or self._receive() != _READY:
            raise DataToolsError(f"the extraction sandbox process did not start within {STARTUP_TIMEOUT_S:.0f} s "
                                 f"(exit code {self._process.exitcode}); try `--extract-timeout 0` to extract "
                                 f"in-process")
        wait = timeout
        while True:
            if not self._conn.poll(wait):
                current = self._progress.current()
                if current is not None and current[1] < timeout:
                    wait = timeout - current[1]  # silent, but its current item is not over time yet
                    continue
                self._stop(current)
                return
            wait = timeout
            message = self._receive()
            if message is _DIED:
                self._stop(self._progress.current())
                return
            yield message

    def _stop(self, current: tuple[int, float] | None) -> None:
        self._process.kill()
        self.stalled_at = None if current is None else current[0]

    def _receive(self) -> object:
        try:
            return self._conn.recv()
        except (EOFError, OSError):  # the child died (a crash in the extractor)
            return _DIED


_DIED = object()


def _run(conn: Connection, target: Callable[..., None], progress: Progress, args: tuple) -> None:
    """The child: say it is ready, run the target with a way to send and its progress marker, then close."""
    conn.send(_READY)
    target(conn.send, progress, *args)
    conn.close()
