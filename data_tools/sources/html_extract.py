"""HTML → main text with resiliparse, and the sandbox process that runs extraction with a time limit.

Extractors can spin for minutes on pathological pages, and C++ code cannot be interrupted by a
Python signal; so a reader runs in a child process (`Sandbox`) that sends back what it produces,
and is killed when it goes silent for longer than the time limit (or dies): the reader then
counts the page and starts a fresh sandbox after it. Only results cross the pipe, one message each:
the child reads its input itself.
"""

from __future__ import annotations

import multiprocessing
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


class Sandbox:
    """`target(send, *args)` in a spawned child process; use as a context manager so the child is always reaped."""

    def __init__(self, target: Callable[..., None], args: tuple) -> None:
        context = multiprocessing.get_context("spawn")
        self._conn, child = context.Pipe(duplex=False)
        self._process = context.Process(target=_run, args=(child, target, args), daemon=True)
        self._process.start()
        child.close()

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._process.is_alive():
            self._process.kill()
        self._process.join(timeout=10)
        self._conn.close()

    def messages(self, timeout: float) -> Iterator[object]:
        """What the target sends, in order, until it returns; stops early (killing the child) when `timeout`
        seconds pass without a message or the child dies."""
        if not self._conn.poll(STARTUP_TIMEOUT_S) or self._receive() != _READY:
            raise DataToolsError(f"the extraction sandbox process did not start within {STARTUP_TIMEOUT_S:.0f} s "
                                 f"(exit code {self._process.exitcode}); try `--extract-timeout 0` to extract "
                                 f"in-process")
        while True:
            if not self._conn.poll(timeout):
                self._process.kill()
                return
            message = self._receive()
            if message is _DIED:
                return
            yield message

    def _receive(self) -> object:
        try:
            return self._conn.recv()
        except (EOFError, OSError):  # the child died (a crash in the extractor)
            return _DIED


_DIED = object()


def _run(conn: Connection, target: Callable[..., None], args: tuple) -> None:
    """The child: say it is ready, run the target with a way to send, then close."""
    conn.send(_READY)
    target(conn.send, *args)
    conn.close()
