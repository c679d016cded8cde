"""WARC and WET extraction on the demo corpus and on real Common Crawl / wget files."""

from __future__ import annotations

import gzip
import io
import os
import time
from collections import Counter

from warcio.archiveiterator import ArchiveIterator
from warcio.statusandheaders import StatusAndHeaders
from warcio.warcwriter import WARCWriter

from data_tools.demo_corpus import MODULES
from data_tools.sources.html_extract import html_to_text
from data_tools.sources.warc import read_warc, read_wet


def test_demo_warc_yields_one_document_per_page_and_counts_skips(demo_corpus):
    skipped = Counter()
    documents = list(read_warc(demo_corpus["commoncrawl"], skipped))
    assert len(documents) == len(MODULES[1::2])
    assert skipped["http_status:404"] == 1
    assert skipped["not_html"] == 1
    assert skipped["not_response:warcinfo"] == 1
    assert skipped["not_response:request"] == len(documents) + 2
    first = documents[0]
    assert first.source == "commoncrawl" and first.url.endswith(f"{MODULES[1]}.html")
    assert first.text.startswith(f"{MODULES[1]}\n\n")  # main content: the <title> and <nav> are gone
    for chrome in ("pageData", "font-family", "Library index", "Built with a template", "<p>", "&mdash;"):
        assert all(chrome not in d.text for d in documents), chrome


def test_ids_are_stable_and_unique(demo_corpus):
    first = [d.id for d in read_warc(demo_corpus["commoncrawl"], Counter())]
    again = [d.id for d in read_warc(demo_corpus["commoncrawl"], Counter())]
    assert first == again
    assert len(set(first)) == len(first)
    assert all(i.startswith("commoncrawl:") for i in first)


def test_common_crawl_page(fixture_path):
    skipped = Counter()
    (document,) = read_warc(fixture_path("cc-main-2024-22_whirlwind.warc.gz"), skipped)
    assert document.url == "https://an.wikipedia.org/wiki/Escopete"
    assert document.text.startswith("Escopete\n")
    assert "Menú principal" not in document.text  # navigation is not main content
    assert "Escopete ye un municipio d'a provincia de Guadalachara" in document.text
    assert "<" not in document.text and "mw.config" not in document.text
    assert skipped == Counter({"not_response:warcinfo": 1, "not_response:request": 1, "not_response:metadata": 1})


def _prose_coverage(ours: str, theirs: str) -> float:
    """The share of the WET file's prose (lines over 80 characters) found in our text, by characters."""
    def norm(text: str) -> str:
        return " ".join(text.replace("\xa0", " ").split())  # WET turns no-break spaces into spaces

    prose = [norm(line) for line in theirs.split("\n") if len(line) > 80]
    assert len(prose) >= 5
    return sum(len(line) for line in prose if line in norm(ours)) / sum(len(line) for line in prose)


def test_extracted_text_covers_common_crawls_own_wet_text(fixture_path):
    (theirs,) = read_wet(fixture_path("cc-main-2024-22_whirlwind.warc.wet.gz"), Counter())
    (main,) = read_warc(fixture_path("cc-main-2024-22_whirlwind.warc.gz"), Counter())
    (full,) = read_warc(fixture_path("cc-main-2024-22_whirlwind.warc.gz"), Counter(), main_content=False)
    # Main content keeps the article's prose; it drops the licence footer and one linked list item
    # (resiliparse's boilerplate heuristic), about a quarter of the WET prose on this page.
    assert _prose_coverage(main.text, theirs.text) > 0.7
    assert _prose_coverage(full.text, theirs.text) == 1.0
    assert len(main.text) < 0.5 * len(full.text)


def test_wget_warc_with_many_pages(fixture_path):
    skipped = Counter()
    documents = list(read_warc(fixture_path("dolma_sample-0000.warc.gz"), skipped))
    assert len(documents) >= 20
    assert all(d.text.strip() and d.url.startswith("http") for d in documents)
    assert skipped["not_response:request"] == 22
    assert skipped["not_response:resource"] >= 1


def test_truncated_archive_keeps_earlier_documents_and_counts_the_damage(fixture_path, tmp_path):
    data = fixture_path("dolma_sample-0000.warc.gz").read_bytes()
    truncated = tmp_path / "truncated.warc.gz"
    truncated.write_bytes(data[: len(data) // 2])
    skipped = Counter()
    documents = list(read_warc(truncated, skipped))
    assert 0 < len(documents) < 22
    assert skipped["truncated_record"] == 1
    assert skipped["truncated_archive"] == 1


def test_unreadable_archive_is_counted_not_fatal(tmp_path):
    path = tmp_path / "garbage.warc.gz"
    path.write_bytes(b"\x1f\x8b\x08\x00 not really gzip")
    skipped = Counter()
    assert list(read_warc(path, skipped)) == []
    assert skipped == Counter({"malformed_archive": 1})


def test_oversized_html_is_skipped_and_counted(demo_corpus):
    skipped = Counter()
    assert list(read_warc(demo_corpus["commoncrawl"], skipped, max_html_bytes=100)) == []
    assert skipped["too_large"] == len(MODULES[1::2])


def test_wet_conversion_records(fixture_path):
    skipped = Counter()
    (document,) = read_wet(fixture_path("cc-main-2024-22_whirlwind.warc.wet.gz"), skipped)
    assert document.url == "https://an.wikipedia.org/wiki/Escopete"
    assert "Escopete ye un municipio" in document.text
    assert skipped == Counter({"not_conversion:warcinfo": 1})


def test_wet_with_wrong_content_lengths_splits_on_version_lines(fixture_path):
    skipped = Counter()
    documents = list(read_wet(fixture_path("cc_net_sample.wet.txt"), skipped))
    urls = ["http://sample_english.com", "http://sample_chinese.zh", "http://sample_russian.ru"]
    assert [d.url for d in documents] == urls
    assert documents[0].text.startswith("Famous Mark Twain Quotes\n")
    assert documents[0].text.endswith("Truth isn't.")
    assert documents[1].text.startswith("馬克·吐溫名言\n")
    assert any("\u0400" <= c <= "\u04ff" for c in documents[2].text)
    assert len({d.id for d in documents}) == 3  # two records share a WARC-Record-ID; the url tells them apart
    assert skipped == Counter({"not_conversion:warcinfo": 1})


def test_wet_bad_utf8_record_is_skipped(tmp_path):
    record = b"WARC/1.0\r\nWARC-Type: conversion\r\nWARC-Target-URI: http://x\r\nContent-Length: 3\r\n\r\n"
    path = tmp_path / "bad.wet.gz"
    path.write_bytes(gzip.compress(record + b"\xff\xfe\r\n\r\n" + record + b"fine\r\n\r\n"))
    skipped = Counter()
    documents = list(read_wet(path, skipped))
    assert [d.text for d in documents] == ["fine"]
    assert skipped == Counter({"bad_encoding": 1})


def stalling_to_text(html: bytes, charset: str | None, main_content: bool) -> str:
    """The real extractor, except that it hangs on the page of MODULES[3] and crashes its process on MODULES[7]'s
    (what a pathological page does to a C++ extractor)."""
    if f"<title>{MODULES[3]} &mdash;".encode() in html:
        time.sleep(600)
    if f"<title>{MODULES[7]} &mdash;".encode() in html:
        os._exit(1)
    return html_to_text(html, charset, main_content)


def test_a_page_that_hangs_or_crashes_the_extractor_is_counted_and_the_rest_goes_on(demo_corpus):
    """In the sandbox, a hung page is cut off after the time limit and a crash is survived: each is counted as
    extract_timeout and every other document comes out as without them, in order."""
    reference_skips = Counter()
    reference = list(read_warc(demo_corpus["commoncrawl"], reference_skips, timeout=0))
    skipped = Counter()
    documents = list(read_warc(demo_corpus["commoncrawl"], skipped, timeout=2.0, to_text=stalling_to_text))
    lost = {MODULES[3], MODULES[7]}
    assert [d.text.split("\n")[0] for d in reference if d.text.split("\n")[0] in lost] == [MODULES[3], MODULES[7]]
    assert documents == [d for d in reference if d.text.split("\n")[0] not in lost]
    assert skipped == reference_skips + Counter({"extract_timeout": 2})


def _warc_with_encoded_pages(path) -> None:
    """A WARC whose pages arrive gzip content-encoded, chunked, both, or plain, as wget stores them."""
    page = b"<html><body><h1>Encoded</h1><p>" + b"A sentence about encodings and crawlers. " * 40 + b"</p></body></html>"
    chunked = b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in (page[:100], page[100:])) + b"0\r\n\r\n"
    bodies = {
        "plain": ([], page),
        "gzip": ([("Content-Encoding", "gzip")], gzip.compress(page)),
        "chunked": ([("Transfer-Encoding", "chunked")], chunked),
        "chunked-gzip": ([("Transfer-Encoding", "chunked"), ("Content-Encoding", "gzip")],
                         b"%x\r\n%s\r\n0\r\n\r\n" % (len(gzip.compress(page)), gzip.compress(page))),
    }
    with open(path, "wb") as out:
        writer = WARCWriter(out, gzip=True)
        for name, (headers, body) in bodies.items():
            http = StatusAndHeaders("200 OK", [("Content-Type", "text/html; charset=utf-8"), *headers],
                                    protocol="HTTP/1.1")
            writer.write_record(writer.create_warc_record(f"https://example.org/{name}", "response",
                                                          payload=io.BytesIO(body), http_headers=http))


def _pages_by_warcio(path) -> list[tuple[str, bytes]]:
    """(url, decoded payload) of every 200 HTML response, read by warcio (the reference)."""
    pages = []
    with open(path, "rb") as stream:
        for record in ArchiveIterator(stream):
            http = record.http_headers
            if record.rec_type == "response" and http and http.get_statuscode() == "200" and \
                    (http.get_header("Content-Type") or "").lower().startswith("text/html"):
                pages.append((record.rec_headers.get_header("WARC-Target-URI"), record.content_stream().read()))
    return pages


def test_pages_reach_the_extractor_exactly_as_warcio_decodes_them(fixture_path, demo_corpus, tmp_path):
    encoded = tmp_path / "encoded.warc.gz"
    _warc_with_encoded_pages(encoded)
    paths = [fixture_path("dolma_sample-0000.warc.gz"), fixture_path("cc-main-2024-22_whirlwind.warc.gz"),
             demo_corpus["commoncrawl"], encoded]
    for path in paths:
        seen: list[bytes] = []

        def capture(html: bytes, charset: str | None, main_content: bool) -> str:
            seen.append(html)
            return "text"

        urls = [d.url for d in read_warc(path, Counter(), timeout=0, to_text=capture)]
        assert list(zip(urls, seen)) == _pages_by_warcio(path), path.name
    assert len(set(seen)) == 1 and b"<h1>Encoded</h1>" in seen[0]  # every encoding undone
