"""Wikipedia reader: stream a MediaWiki export (`.xml` or `.xml.bz2`) page by page.

ElementTree.iterparse with each page cleared once read keeps memory constant on a full dump.
Tags are matched without their namespace, so every export schema version reads the same.
Only main-namespace (ns 0), non-redirect pages become Documents.

Each Document's url is the article's address, `<article path><Title_with_underscores>` percent-encoded
as MediaWiki does: the article path comes from the dump's <siteinfo>, its <base> (the main page's URL,
so any wiki works) or else its <dbname> (`enwiki` → `https://en.wikipedia.org/wiki/`); a dump
without siteinfo takes the language from its file name (`enwiki-…` → en); failing both, url is None.
"""

from __future__ import annotations

import bz2
import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO
from urllib.parse import quote
from xml.etree import ElementTree

from data_tools.sources.base import Document
from data_tools.sources.wikitext import wikitext_to_text

SOURCE = "wikipedia"
_WIKIPEDIA_DB = re.compile(r"((?:[a-z]{2,3}|simple)(?:_[a-z]+)*)wiki")
_URL_SAFE = ";@$!*(),/~:"  # what MediaWiki's wfUrlencode leaves unescaped


def read_wikipedia(path: Path, skipped: Counter) -> Iterator[Document]:
    """Yield one Document per main-namespace article; count redirects, other namespaces, bad pages."""
    article_path = _wikipedia_article_path(path.name.partition("-")[0])
    with _open_dump(path) as stream:
        try:
            for element in _elements(stream):
                if _local(element.tag) == "siteinfo":
                    article_path = _site_article_path(element) or article_path
                    continue
                document = _page_document(element, article_path, skipped)
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


def _elements(stream: BinaryIO) -> Iterator[ElementTree.Element]:
    """Yield the <siteinfo> and each complete <page> element, then drop everything read so far from the tree."""
    root: ElementTree.Element | None = None
    for event, element in ElementTree.iterparse(stream, events=("start", "end")):
        if root is None:
            root = element
        elif event == "end" and _local(element.tag) in ("page", "siteinfo"):
            yield element
            root.clear()


def _child(element: ElementTree.Element, name: str) -> ElementTree.Element | None:
    """The first direct child of `element` with local tag `name`."""
    return next((child for child in element if _local(child.tag) == name), None)


def _site_article_path(siteinfo: ElementTree.Element) -> str | None:
    """The URL prefix of the wiki's articles, from <base> (…/wiki/Main_Page) or else <dbname>."""
    base, dbname = _child(siteinfo, "base"), _child(siteinfo, "dbname")
    base_url = (base.text or "").strip() if base is not None else ""
    if "/" in base_url.partition("://")[2]:
        return base_url.rpartition("/")[0] + "/"
    return _wikipedia_article_path((dbname.text or "").strip() if dbname is not None else "")


def _wikipedia_article_path(dbname: str) -> str | None:
    """`https://<lang>.wikipedia.org/wiki/` for a Wikipedia database name such as `enwiki`, else None."""
    match = _WIKIPEDIA_DB.fullmatch(dbname)
    return f"https://{match.group(1).replace('_', '-')}.wikipedia.org/wiki/" if match else None


def _page_document(page: ElementTree.Element, article_path: str | None, skipped: Counter) -> Document | None:
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
    title = _child(page, "title")
    url = None
    if article_path is not None and title is not None and (title.text or "").strip():
        url = article_path + quote(title.text.strip().replace(" ", "_"), safe=_URL_SAFE)
    return Document(f"{SOURCE}:{page_id.text.strip()}", text, SOURCE, url)
