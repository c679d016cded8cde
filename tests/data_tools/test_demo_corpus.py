"""The demo corpus is deterministic and written in the real formats, with the records extraction must drop."""

from __future__ import annotations

import bz2
from pathlib import Path

from warcio.archiveiterator import ArchiveIterator

from data_tools.demo_corpus import MODULES, build_demo_corpus


def test_rebuild_is_byte_identical(demo_corpus, tmp_path):
    again = build_demo_corpus(tmp_path)
    for source, path in demo_corpus.items():
        assert again[source].read_bytes() == path.read_bytes(), source


def test_layout_and_size(demo_corpus):
    assert demo_corpus["wikipedia"].relative_to(demo_corpus["wikipedia"].parents[1]) == Path(
        "wikipedia/demowiki-pages-articles.xml.bz2"
    )
    assert demo_corpus["commoncrawl"].name == "demo.warc.gz"
    xml = bz2.decompress(demo_corpus["wikipedia"].read_bytes()).decode("utf-8")
    assert 200_000 < len(xml) < 2_000_000


def test_mediawiki_export_has_articles_redirect_and_project_page(demo_corpus):
    xml = bz2.decompress(demo_corpus["wikipedia"].read_bytes()).decode("utf-8")
    assert xml.startswith('<mediawiki xmlns="http://www.mediawiki.org/xml/export-0.10/"')
    assert "<siteinfo>" in xml
    assert xml.count("<page>") == len(MODULES[0::2]) + 2
    assert xml.count("<redirect title=") == 1
    assert xml.count("<ns>4</ns>") == 1
    for markup in ("{{Infobox software", "&lt;ref&gt;", "[[Category:", "'''", "== "):
        assert markup in xml, markup


def test_warc_has_pages_requests_and_records_to_skip(demo_corpus):
    records = []
    with open(demo_corpus["commoncrawl"], "rb") as stream:
        for record in ArchiveIterator(stream):
            http = record.http_headers if record.rec_type == "response" else None
            status, content_type = (http.get_statuscode(), http.get_header("Content-Type")) if http else (None, None)
            records.append((record.rec_type, status, content_type))
    assert records[0][0] == "warcinfo"
    responses = [r for r in records if r[0] == "response"]
    assert len(responses) == len(MODULES[1::2]) + 2
    assert sum(r[0] == "request" for r in records) == len(responses)
    assert ("response", "404", "text/html; charset=utf-8") in records
    assert ("response", "200", "image/png") in records
