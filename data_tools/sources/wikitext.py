"""Wikitext to plain text with mwparserfromhell: prune the non-prose nodes, then strip_code().

Removed before stripping: templates (infoboxes, citations, navboxes), tables, <ref> and other
non-prose tags, comments, and File:/Image:/Media:/Category: links. Headings stay as their text
on a line of their own; paragraph breaks stay as blank lines; runs of spaces (which MediaWiki
renders as one) become one.
"""

from __future__ import annotations

import re

import mwparserfromhell
from mwparserfromhell.nodes import Argument, Comment, ExternalLink, Heading, Node, Tag, Template, Wikilink
from mwparserfromhell.wikicode import Wikicode

_DROPPED_TAGS = frozenset(
    {"ref", "references", "table", "gallery", "math", "chem", "ce", "timeline", "imagemap", "score",
     "graph", "templatedata", "mapframe", "maplink", "syntaxhighlight", "source", "noinclude"}
)
_DROPPED_LINK_NAMESPACES = ("file:", "image:", "media:", "category:")
_MAGIC_WORD = re.compile(r"__[A-Z]+__")
_BLANK_LINES = re.compile(r"\n{3,}")
_SPACE_RUNS = re.compile(r"[ \t]{2,}")


def wikitext_to_text(wikitext: str) -> str:
    """Return the prose of a wikitext page: headings and paragraphs, no markup."""
    code = mwparserfromhell.parse(wikitext)
    _prune(code)
    text = code.strip_code(normalize=True, collapse=True)
    text = _MAGIC_WORD.sub("", text)
    lines = [_SPACE_RUNS.sub(" ", line).strip() for line in text.split("\n")]
    return _BLANK_LINES.sub("\n\n", "\n".join(lines)).strip()


def _prune(code: Wikicode) -> None:
    """Remove dropped nodes from `code` in place, recursing into the nodes that are kept."""
    kept: list[Node] = []
    for node in code.nodes:
        if _is_dropped(node):
            continue
        if isinstance(node, Heading):
            _prune(node.title)
        elif isinstance(node, Tag) and node.contents is not None:
            _prune(node.contents)
        elif isinstance(node, Wikilink) and node.text is not None:
            _prune(node.text)
        elif isinstance(node, ExternalLink) and node.title is not None:
            _prune(node.title)
        kept.append(node)
    code.nodes = kept


def _is_dropped(node: Node) -> bool:
    """Whether `node` carries no prose (or prose that does not belong in running text)."""
    if isinstance(node, (Template, Comment, Argument)):
        return True
    if isinstance(node, Tag):
        return str(node.tag).strip().lower() in _DROPPED_TAGS
    if isinstance(node, Wikilink):
        return str(node.title).strip().lstrip(":").lower().startswith(_DROPPED_LINK_NAMESPACES)
    return False
