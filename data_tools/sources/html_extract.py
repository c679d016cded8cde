"""HTML → main text with resiliparse, in a sandbox process with a hard per-document time limit.

Extractors can spin for minutes on pathological pages, and C++ code cannot be interrupted by a
Python signal; so extraction runs in a child process that is killed and restarted when one
document exceeds its time limit (counted as `extract_timeout`, the rest of the file goes on).
`timeout=0` extracts in-process: faster, for trusted input and for measuring the extractor alone.
"""

from __future__ import annotations

import multiprocessing
from multiprocessing.connection import Connection

from resiliparse.extract.html2text import extract_plain_text
from resiliparse.parse.encoding import bytes_to_str, detect_encoding
from resiliparse.parse.html import HTMLTree


def html_to_text(html: bytes, charset: str | None, main_content: bool = True) -> str:
    """The readable text of an HTML page: main content only (no menus, footers) unless told otherwise."""
    markup = bytes_to_str(html, charset or detect_encoding(html))
    text = extract_plain_text(HTMLTree.parse(markup), main_content=main_content, alt_texts=False)
    return text.strip()


class Timeout(Exception):
    """One document took longer than the extractor's time limit."""


class HtmlExtractor:
    """A reusable extractor; use as a context manager so the sandbox process is always reaped."""

    def __init__(self, timeout: float = 5.0, main_content: bool = True) -> None:
        self.timeout = timeout
        self.main_content = main_content
        self._process: multiprocessing.Process | None = None
        self._conn: Connection | None = None

    def __enter__(self) -> HtmlExtractor:
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop()

    def extract(self, html: bytes, charset: str | None) -> str:
        """The page's text; raises Timeout when the limit is hit (the sandbox is then replaced)."""
        if self.timeout <= 0:
            return html_to_text(html, charset, self.main_content)
        if self._conn is None:
            self._start()
        assert self._conn is not None
        try:
            self._conn.send((html, charset))
            if not self._conn.poll(self.timeout):
                self._stop(kill=True)
                raise Timeout(f"HTML extraction took longer than {self.timeout} s")
            return self._conn.recv()
        except (EOFError, OSError):  # the sandbox died (a crash in the extractor): treat like a timeout
            self._stop(kill=True)
            raise Timeout("the HTML extractor process died") from None

    def _start(self) -> None:
        context = multiprocessing.get_context("spawn")
        parent, child = context.Pipe()
        self._process = context.Process(
            target=_serve, args=(child, self.main_content), daemon=True)
        self._process.start()
        child.close()
        self._conn = parent

    def _stop(self, kill: bool = False) -> None:
        if self._process is None:
            return
        assert self._conn is not None
        if not kill:
            try:
                self._conn.send(None)
            except OSError:
                kill = True
        if kill:
            self._process.kill()
        self._process.join(timeout=10)
        self._conn.close()
        self._process, self._conn = None, None


def _serve(conn: Connection, main_content: bool) -> None:
    """The sandbox loop: (html, charset) in, text out, until None or the parent goes away."""
    while True:
        try:
            item = conn.recv()
        except EOFError:
            return
        if item is None:
            return
        conn.send(html_to_text(item[0], item[1], main_content))
