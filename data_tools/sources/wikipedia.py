"""Wikipedia reader: stream a MediaWiki export (`.xml` or `.xml.bz2`) page by page.

ElementTree.iterparse with each page cleared once read keeps memory constant on a full dump.
Tags are matched without their namespace, so every export schema version reads the same.
Only main-namespace (ns 0), non-redirect pages become Documents.
"""

from __future__ import annotations

import bz2
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO
from xml.etree import ElementTree

from data_tools.sources.base import Document
from data_tools.sources.wikitext import wikitext_to_text

SOURCE = "wikipedia"


def read_wikipedia(path: Path, skipped: Counter) -> Iterator[Document]:
    """Yield one Document per main-namespace article; count redirects, other namespaces, bad pages."""
    with _open_dump(path) as stream:
        try:
            for page in _pages(stream):
                document = _page_document(page, skipped)
                if document is not None:
                    yield document
        except (ElementTree.ParseError, EOFError, OSError):
            skipped["malformed_xml"] += 1


def _open_dump(path: Path) -> BinaryIO:
    """Open a dump for binary reading, decompressing `.bz2` on the fly."""
    return bz2.open(path, "rb") if path.suffix == ".bz2" else open(path, "rb")


def _local(tag: str) -> str:
    """A tag name without its `{namespace}` prefix."""
    return tag.rpartition("}")[2]


def _pages(stream: BinaryIO) -> Iterator[ElementTree.Element]:
    """Yield each complete <page> element, then drop it (and everything read so far) from the tree."""
    root: ElementTree.Element | None = None
    for event, element in ElementTree.iterparse(stream, events=("start", "end")):
        if root is None:
            root = element
        elif event == "end" and _local(element.tag) == "page":
            yield element
            root.clear()


def _child(element: ElementTree.Element, name: str) -> ElementTree.Element | None:
    """The first direct child of `element` with local tag `name`."""
    return next((child for child in element if _local(child.tag) == name), None)


def _page_document(page: ElementTree.Element, skipped: Counter) -> Document | None:
    """The Document for one <page>, or None after counting why it was skipped."""
    ns, page_id, revision = _child(page, "ns"), _child(page, "id"), _child(page, "revision")
    if ns is None or (ns.text or "").strip() != "0":
        skipped["not_main_namespace"] += 1
        return None
    if _child(page, "redirect") is not None:
        skipped["redirect"] += 1
        return None
    text_element = _child(revision, "text") if revision is not None else None
    if page_id is None or not (page_id.text or "").strip() or text_element is None:
        skipped["malformed_page"] += 1
        return None
    text = wikitext_to_text(text_element.text or "")
    if not text:
        skipped["empty_text"] += 1
        return None
    return Document(f"{SOURCE}:{page_id.text.strip()}", text, SOURCE, None)
