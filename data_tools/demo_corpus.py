"""A small built-in corpus in the real input formats, so the whole pipeline runs with no network.

The text is real English: the docstrings of a fixed list of standard-library modules and their
public functions, classes and methods. Half the modules become pages of a MediaWiki export
(`wikipedia/demowiki-pages-articles.xml.bz2`, wikitext with templates, refs, links, categories,
plus a redirect and a project-namespace page that extraction must drop); the other half become
HTML responses in a WARC (`commoncrawl/demo.warc.gz`, with request records, a 404 and a PNG that
extraction must skip). Every id, date and byte is fixed, so re-runs are byte-identical for the
same Python version.
"""

from __future__ import annotations

import base64
import bz2
import html
import importlib
import inspect
import io
import re
import uuid
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

from warcio.statusandheaders import StatusAndHeaders
from warcio.warcwriter import WARCWriter

from roots_core.atomic import write_bytes_atomic

MODULES: tuple[str, ...] = (
    "abc", "argparse", "base64", "bisect", "calendar", "cmd", "codecs", "collections", "colorsys",
    "configparser", "contextlib", "copy", "csv", "dataclasses", "datetime", "difflib", "dis",
    "email.message", "enum", "filecmp", "fileinput", "fnmatch", "fractions", "ftplib", "functools",
    "getopt", "gettext", "glob", "graphlib", "gzip", "heapq", "hmac", "html", "http.client",
    "imaplib", "inspect", "ipaddress", "itertools", "json", "logging", "mailbox", "math",
    "mimetypes", "numbers", "operator", "optparse", "pickle", "pprint", "queue", "random", "re",
    "sched", "secrets", "shlex", "smtplib", "socketserver", "statistics", "string", "struct",
    "tarfile", "textwrap", "threading", "timeit", "typing", "urllib.parse", "uuid", "wave",
    "zipfile",
)
WIKIPEDIA_PATH = Path("wikipedia") / "demowiki-pages-articles.xml.bz2"
WARC_PATH = Path("commoncrawl") / "demo.warc.gz"

_DATE = "2024-05-18T00:00:00Z"
_SITE = "https://docs.demo.invalid/library/"
_ID_NAMESPACE = uuid.UUID("6f1c2a8e-3b7d-4c55-9a0e-2d4b8f1e7c31")
# A real 1x1 transparent PNG.
_PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="
)
# Paragraphs containing wikitext markup characters go inside <nowiki> so they stay literal text.
_WIKI_MARKUP = re.compile(r"[\[\]{}<>|'&~]|__|^[\s=*#:;-]", re.MULTILINE)


@dataclass(frozen=True)
class Section:
    """A heading (with its level: 2 for an object, 3 for a method) and its paragraphs."""

    level: int
    heading: str
    paragraphs: tuple[str, ...]


@dataclass(frozen=True)
class ModuleDoc:
    """The documentation of one module: its own docstring's paragraphs and one section per object."""

    name: str
    summary: tuple[str, ...]
    sections: tuple[Section, ...]


def build_demo_corpus(output_dir: Path) -> dict[str, Path]:
    """Write the demo corpus under `output_dir`; return {"wikipedia": path, "commoncrawl": path}."""
    docs = [module_doc(name) for name in MODULES]
    paths = {"wikipedia": output_dir / WIKIPEDIA_PATH, "commoncrawl": output_dir / WARC_PATH}
    write_bytes_atomic(paths["wikipedia"], bz2.compress(mediawiki_xml(docs[0::2]).encode("utf-8"), 9))
    write_bytes_atomic(paths["commoncrawl"], warc_bytes(docs[1::2]))
    return paths


def module_doc(name: str) -> ModuleDoc:
    """Collect the non-empty docstrings of module `name` and of its public objects defined there."""
    module = importlib.import_module(name)
    sections: list[Section] = []
    for attribute in sorted(vars(module)):
        obj = getattr(module, attribute)
        if attribute.startswith("_") or getattr(obj, "__module__", None) != name:
            continue
        if not (inspect.isclass(obj) or inspect.isroutine(obj)):
            continue
        doc = _own_doc(obj)
        if doc:
            sections.append(Section(2, f"{name}.{attribute}", _paragraphs(doc)))
        if inspect.isclass(obj):
            sections.extend(_method_sections(name, attribute, obj))
    return ModuleDoc(name, _paragraphs(_own_doc(module) or f"The {name} module."), tuple(sections))


def _method_sections(module: str, class_name: str, cls: type) -> list[Section]:
    """One level-3 section per public method of `cls` (defined on it) that has its own docstring."""
    sections = []
    for attribute in sorted(vars(cls)):
        method = getattr(cls, attribute, None)
        if attribute.startswith("_") or not inspect.isroutine(method):
            continue
        doc = _own_doc(method)
        if doc:
            sections.append(Section(3, f"{module}.{class_name}.{attribute}", _paragraphs(doc)))
    return sections


def _own_doc(obj: object) -> str | None:
    """`inspect.getdoc(obj)` when `obj` has a docstring of its own (not one inherited from a base)."""
    return inspect.getdoc(obj) if isinstance(getattr(obj, "__doc__", None), str) else None


def _paragraphs(doc: str) -> tuple[str, ...]:
    """A docstring's blank-line-separated paragraphs."""
    return tuple(p.strip("\n") for p in re.split(r"\n\s*\n", doc) if p.strip())


def _title(name: str) -> str:
    """The article title for module `name`."""
    return f"{name} (Python module)"


def _wiki_paragraph(paragraph: str) -> str:
    """A docstring paragraph as wikitext that renders to the same text."""
    return f"<nowiki>{paragraph}</nowiki>" if _WIKI_MARKUP.search(paragraph) else paragraph


def wikitext(doc: ModuleDoc, neighbour: str) -> str:
    """The article for one module, with the markup a real article has (template, ref, links, category)."""
    lines = [
        "{{Infobox software",
        f"| name = {doc.name}",
        "| genre = [[Python standard library]] module",
        "| license = [[Python Software Foundation License|PSF]]",
        "}}",
        f"'''{doc.name}''' is a module of the [[Python (programming language)|Python]] standard library."
        f"<ref>{{{{cite web |title={doc.name} |url={_SITE}{doc.name}.html}}}}</ref>"
        f" See also [[{_title(neighbour)}|{neighbour}]].",
        "",
    ]
    lines += [_wiki_paragraph(p) + "\n" for p in doc.summary]
    for section in doc.sections:
        marks = "=" * section.level
        lines.append(f"{marks} {section.heading} {marks}")
        lines += [_wiki_paragraph(p) + "\n" for p in section.paragraphs]
    lines += ["== References ==", "<references />", "", "[[Category:Python standard library modules]]"]
    return "\n".join(lines)


def _page_xml(title: str, ns: int, page_id: int, text: str, redirect: str | None = None) -> str:
    """One <page> element of a MediaWiki export."""
    redirect_xml = f"\n    <redirect title={quoteattr(redirect)} />" if redirect else ""
    return f"""  <page>
    <title>{escape(title)}</title>
    <ns>{ns}</ns>
    <id>{page_id}</id>{redirect_xml}
    <revision>
      <id>{page_id + 100000}</id>
      <timestamp>{_DATE}</timestamp>
      <contributor>
        <username>DemoBot</username>
        <id>1</id>
      </contributor>
      <model>wikitext</model>
      <format>text/x-wiki</format>
      <text bytes="{len(text.encode("utf-8"))}" xml:space="preserve">{escape(text)}</text>
    </revision>
  </page>
"""


def mediawiki_xml(docs: list[ModuleDoc]) -> str:
    """A MediaWiki export-0.10 dump: one article per module, plus a redirect and a project page."""
    pages = [
        _page_xml(_title(doc.name), 0, 1000 + i, wikitext(doc, docs[(i + 1) % len(docs)].name))
        for i, doc in enumerate(docs)
    ]
    target = _title(docs[0].name)
    pages.append(_page_xml(docs[0].name.upper(), 0, 900, f"#REDIRECT [[{target}]]", redirect=target))
    pages.append(_page_xml("Demowiki:About", 4, 901, "'''Demowiki''' is a demo wiki. [[Category:Demowiki]]"))
    return f"""<mediawiki xmlns="http://www.mediawiki.org/xml/export-0.10/" \
xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" \
xsi:schemaLocation="http://www.mediawiki.org/xml/export-0.10/ http://www.mediawiki.org/xml/export-0.10.xsd" \
version="0.10" xml:lang="en">
  <siteinfo>
    <sitename>Demowiki</sitename>
    <dbname>demowiki</dbname>
    <base>https://demowiki.invalid/wiki/Main_Page</base>
    <generator>MediaWiki 1.42.0</generator>
    <case>first-letter</case>
    <namespaces>
      <namespace key="0" case="first-letter" />
      <namespace key="4" case="first-letter">Demowiki</namespace>
    </namespaces>
  </siteinfo>
{"".join(pages)}</mediawiki>
"""


def _html_paragraph(paragraph: str) -> str:
    """A docstring paragraph as HTML: code-like (indented or doctest) paragraphs as <pre>."""
    if paragraph.startswith((" ", ">>>")):
        return f"<pre>{html.escape(paragraph)}</pre>"
    return f"<p>{html.escape(paragraph)}</p>"


def html_page(doc: ModuleDoc) -> str:
    """The documentation page for one module, with the chrome a real page has (nav, script, style)."""
    body = [f"<h1>{html.escape(doc.name)}</h1>"] + [_html_paragraph(p) for p in doc.summary]
    for section in doc.sections:
        tag = f"h{section.level}"
        body.append(f"<{tag}>{html.escape(section.heading)}</{tag}>")
        body += [_html_paragraph(p) for p in section.paragraphs]
    main = "\n".join(body)
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{html.escape(doc.name)} &mdash; Demo documentation</title>
<style>body {{ font-family: sans-serif; }} pre {{ background: #eee; }}</style>
<script>var pageData = {{"module": "{doc.name}"}}; function show() {{ return "<p>hidden</p>"; }}</script>
</head>
<body>
<nav><a href="/">Home</a> | <a href="/library/">Library index</a></nav>
<main>
{main}
</main>
<footer><p>&copy; Demo documentation. Built with a template.</p></footer>
</body>
</html>
"""


def _record_id(key: str) -> str:
    """A fixed WARC-Record-ID derived from `key`."""
    return f"<urn:uuid:{uuid.uuid5(_ID_NAMESPACE, key)}>"


def _write_exchange(writer: WARCWriter, url: str, status: str, content_type: str, body: bytes) -> None:
    """Write a request record and the response record it got."""
    path = "/" + url.split("/", 3)[3]
    request_headers = StatusAndHeaders(
        f"GET {path} HTTP/1.1",
        [("Host", url.split("/")[2]), ("User-Agent", "roots-demo-crawler/1.0"), ("Accept", "*/*")],
        is_http_request=True,
    )
    request_id, response_id = _record_id("request " + url), _record_id("response " + url)
    request_warc = {"WARC-Record-ID": request_id, "WARC-Date": _DATE, "WARC-Concurrent-To": response_id}
    writer.write_record(writer.create_warc_record(url, "request", http_headers=request_headers,
                                                  warc_headers_dict=request_warc))
    response_headers = StatusAndHeaders(
        status, [("Content-Type", content_type), ("Content-Length", str(len(body)))], protocol="HTTP/1.1"
    )
    response_warc = {"WARC-Record-ID": response_id, "WARC-Date": _DATE}
    writer.write_record(writer.create_warc_record(url, "response", payload=io.BytesIO(body), length=len(body),
                                                  http_headers=response_headers, warc_headers_dict=response_warc))


def warc_bytes(docs: list[ModuleDoc]) -> bytes:
    """A gzipped WARC/1.0 crawl: warcinfo, one HTML page per module, a 404 and a PNG."""
    out = io.BytesIO()
    writer = WARCWriter(out, gzip=True, warc_version="1.0")
    info = b"software: roots_scale demo corpus\r\nformat: WARC File Format 1.0\r\nisPartOf: DEMO-CRAWL\r\n"
    info_warc = {"WARC-Record-ID": _record_id("warcinfo"), "WARC-Date": _DATE, "WARC-Filename": WARC_PATH.name}
    writer.write_record(writer.create_warc_record("", "warcinfo", payload=io.BytesIO(info), length=len(info),
                                                  warc_content_type="application/warc-fields",
                                                  warc_headers_dict=info_warc))
    for doc in docs:
        page = html_page(doc).encode("utf-8")
        _write_exchange(writer, f"{_SITE}{doc.name}.html", "200 OK", "text/html; charset=utf-8", page)
    not_found = b"<html><head><title>404 Not Found</title></head><body><h1>Not Found</h1></body></html>"
    _write_exchange(writer, f"{_SITE}missing.html", "404 Not Found", "text/html; charset=utf-8", not_found)
    _write_exchange(writer, f"{_SITE}logo.png", "200 OK", "image/png", _PNG)
    return out.getvalue()
