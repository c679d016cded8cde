"""HTML to plain text on the stdlib's html.parser: visible text only, one block per paragraph.

Drops script/style/nav/header/footer/noscript (and svg/iframe/select/template); block
elements become paragraph breaks ("\\n\\n"), <br> a line break; whitespace inside a paragraph is
collapsed to single spaces except in <pre>; HTML entities are decoded. The page title, when
present, is the first paragraph (as in Common Crawl's own WET text).
"""

from __future__ import annotations

from html.parser import HTMLParser

_DROPPED = frozenset(
    {"script", "style", "nav", "header", "footer", "noscript", "template", "svg", "iframe", "select"}
)
_BLOCKS = frozenset(
    {
        "address", "article", "aside", "blockquote", "caption", "dd", "details", "div", "dl", "dt",
        "fieldset", "figcaption", "figure", "form", "h1", "h2", "h3", "h4", "h5", "h6", "hr", "li",
        "main", "ol", "p", "pre", "section", "summary", "table", "td", "th", "tr", "ul", "body",
    }
)


class _TextCollector(HTMLParser):
    """Collects visible text as a list of (separator, block text) while the parser streams."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.title = ""
        self.blocks: list[tuple[str, str]] = []
        self._line: list[str] = []
        self._pending_sep = ""
        self._dropped_depth = 0
        self._in_title = False
        self._pre_depth = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        """Track dropped/pre/title regions and break blocks on block-level tags."""
        if tag == "title" and not self.title:
            self._in_title = True
        elif tag in _DROPPED:
            self._dropped_depth += 1
        elif tag == "br":
            self._flush("\n")
        elif tag in _BLOCKS:
            self._flush("\n\n")
            if tag == "pre":
                self._pre_depth += 1

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        """A self-closing tag (`<br/>`) opens and closes nothing: only its break counts."""
        if tag == "br":
            self._flush("\n")
        elif tag in _BLOCKS:
            self._flush("\n\n")

    def handle_endtag(self, tag: str) -> None:
        """Close the regions opened in handle_starttag (tolerating stray end tags)."""
        if tag == "title":
            self._in_title = False
        elif tag in _DROPPED:
            self._dropped_depth = max(0, self._dropped_depth - 1)
        elif tag in _BLOCKS:
            self._flush("\n\n")
            if tag == "pre":
                self._pre_depth = max(0, self._pre_depth - 1)

    def handle_data(self, data: str) -> None:
        """Keep text outside dropped regions; the <title> text goes aside."""
        if self._dropped_depth:
            return
        if self._in_title:
            self.title += data
        else:
            self._line.append(data)

    def _flush(self, separator: str) -> None:
        """End the current block; `separator` is the strongest break requested since the last text."""
        raw = "".join(self._line)
        self._line = []
        if self._pre_depth:
            text = "\n".join(line.rstrip() for line in raw.strip("\n").split("\n"))
        else:
            text = " ".join(raw.split())
        if text:
            self.blocks.append((self._pending_sep, text))
            self._pending_sep = ""
        if self.blocks and len(separator) > len(self._pending_sep):
            self._pending_sep = separator

    def text(self) -> str:
        """The collected text: title first, then the blocks with their separators."""
        self._flush("")
        title = " ".join(self.title.split())
        parts = [title] if title else []
        for separator, block in self.blocks:
            if parts:
                parts.append(separator or "\n\n")
            parts.append(block)
        return "".join(parts)


def html_to_text(html: str) -> str:
    """Return the visible text of an HTML document (empty if there is none)."""
    collector = _TextCollector()
    collector.feed(html)
    collector.close()
    return collector.text()
