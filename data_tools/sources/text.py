"""Plain-text reader: a `.txt` file, or a directory searched recursively for `*.txt`, into Documents.

One document per file, or several where a separator splits it: a line holding exactly `separator`
(surrounding spaces ignored), or a run of at least `blank_lines` blank lines. Project Gutenberg's
header and licence footer are cut when their markers are present. Files are UTF-8 (a BOM is
dropped); one that does not decode is skipped and counted as `not_utf8`, an empty one as
`empty_file`. Ids hash the path relative to the input (its name first) and the document's index in
the file, so they are stable across machines; `url` is None, so output does not depend on where
the files lie.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from data_tools.errors import DataToolsError
from data_tools.sources.base import Document, hashed_id

SOURCE = "text"
SUFFIX = ".txt"

_FLAGS = re.IGNORECASE | re.MULTILINE
# The last line of a Gutenberg header: the START marker (any edition) or the end of the old "small print".
_GUTENBERG_START = re.compile(
    r"^[ \t]*(?:\*{3}[ \t]*START OF (?:THE|THIS) PROJECT GUTENBERG E-?(?:BOOK|TEXT)"
    r"|\*END\*?[ \t]*THE SMALL PRINT).*$", _FLAGS)
# The first line of a Gutenberg footer: the END marker or the "End of (the) Project Gutenberg('s) ..." line.
_GUTENBERG_END = re.compile(
    r"^[ \t]*(?:\*{3}[ \t]*END OF (?:THE|THIS) PROJECT GUTENBERG E-?(?:BOOK|TEXT)"
    r"|End of (?:the )?Project Gutenberg).*$", _FLAGS)


def text_files(root: Path) -> list[Path]:
    """The files an input names: itself if a file, else every `*.txt` under it, by relative path."""
    if not root.is_dir():
        return [root]
    return sorted((p for p in root.rglob(f"*{SUFFIX}") if not p.is_dir()), key=lambda p: p.relative_to(root).parts)


def strip_gutenberg(text: str) -> str:
    """`text` without a Project Gutenberg header (through its last START line) and footer (from its END line)."""
    end = _GUTENBERG_END.search(text)
    body_end = end.start() if end else len(text)
    starts = list(_GUTENBERG_START.finditer(text, 0, body_end))
    return text[starts[-1].end() if starts else 0:body_end]


def split_text(text: str, separator: str | None = None, blank_lines: int | None = None) -> list[str]:
    """The non-empty documents of `text`, stripped: the whole text, or its parts between separators."""
    if separator is not None:
        parts = re.split(rf"^[ \t]*{re.escape(separator.strip())}[ \t\r]*$", text, flags=re.MULTILINE)
    elif blank_lines is not None:
        parts = re.split(rf"\n(?:[ \t\r]*\n){{{blank_lines},}}", text)
    else:
        parts = [text]
    return [part.strip() for part in parts if part.strip()]


def read_text(path: Path, skipped: Counter, separator: str | None = None, blank_lines: int | None = None,
              source: str = SOURCE) -> Iterator[Document]:
    """Yield the documents of every text file `path` names; count files skipped by reason."""
    files = text_files(path)
    if not files:
        raise DataToolsError(f"{path} holds no {SUFFIX} files (--format text reads {SUFFIX} files, recursively)")
    for file in files:
        relative = (Path(path.name) / file.relative_to(path)).as_posix() if path.is_dir() else path.name
        try:
            raw = file.read_bytes()
        except OSError as exc:
            raise DataToolsError(f"cannot read {file}: {exc.strerror}; make it readable or leave it out") from exc
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError:
            skipped["not_utf8"] += 1
            continue
        documents = split_text(strip_gutenberg(text), separator, blank_lines)
        if not documents:
            skipped["empty_file"] += 1
        for index, document in enumerate(documents):
            yield Document(hashed_id(source, relative, str(index)), document, source, None)
