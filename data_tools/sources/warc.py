"""Common Crawl readers: WARC `response` records (HTML → main text) and WET `conversion` records.

WARC records are framed by FastWARC (C++: decompression and WARC headers of every record, 3× warcio);
a response's HTTP headers and transfer/content encodings are read with warcio's parser and decoders,
as warcio's own `content_stream()` does. WET is split on its `WARC/1.x` version lines instead of trusting
Content-Length, as cc_net does: WET text is plain UTF-8 and some real files (e.g. cc_net's
sample) carry lengths that do not match their bodies.
"""

from __future__ import annotations

import codecs
import gzip
import io
import itertools
import time
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from fastwarc.warc import ArchiveIterator, WarcRecord
from warcio.bufferedreaders import BufferedReader, ChunkedDataReader
from warcio.statusandheaders import StatusAndHeaders, StatusAndHeadersParser

from data_tools.sources.base import Document, hashed_id
from data_tools.sources.html_extract import HtmlToText, Progress, Sandbox, html_to_text

SOURCE = "commoncrawl"
MAX_HTML_BYTES = 5 * 1024 * 1024
_HTML_TYPES = ("text/html", "application/xhtml+xml")
_VERSION_LINES = (b"WARC/1.0", b"WARC/1.1")
_HTTP_PARSER = StatusAndHeadersParser(["HTTP/1.0", "HTTP/1.1"], verify=False)
_HTTP_HEADER_BYTES = 64 * 1024  # room for a response's HTTP headers beyond the largest page read
# What a damaged gzip stream raises mid-file; after one of these the rest of the file is unreadable.
_GZIP_ERRORS = (EOFError, zlib.error, gzip.BadGzipFile)


def read_warc(path: Path, skipped: Counter, max_html_bytes: int = MAX_HTML_BYTES, timeout: float = 5.0,
              main_content: bool = True, to_text: HtmlToText = html_to_text) -> Iterator[Document]:
    """Yield one Document per 200 HTML `response` record; count every other record in `skipped`.

    Pages over `max_html_bytes` are skipped unread. With `timeout` > 0 the file is read and its pages extracted
    in a sandbox process (see html_extract) that sends back only the documents; a page whose extraction takes
    longer than `timeout` seconds, or crashes the extractor, is counted as `extract_timeout` and the rest of the
    file goes on in a fresh sandbox. `timeout=0` reads in-process, for trusted input.
    """
    if timeout <= 0:
        for _, document in _documents(path, skipped, max_html_bytes, main_content, to_text):
            yield document
        return
    start, stalled = 0, Stalled()
    while True:
        with Sandbox(_serve_warc, (path, max_html_bytes, main_content, to_text, start, stalled)) as sandbox:
            for batch in sandbox.messages(timeout):
                for index, counts, document in batch:
                    skipped.update(counts)
                    if document is None:
                        return
                    start = index + 1
                    yield document
        # Lost: the batch the sandbox had not sent; it goes again from `start`, without the pages it stalled on.
        stalled = stalled.add(sandbox.stalled_at)


@dataclass(frozen=True)
class Stalled:
    """The pages a sandbox stalled on (record indices), to pass over; `first`: it stalled between pages, so pass
    over the next page instead."""

    pages: frozenset[int] = frozenset()
    first: bool = False

    def add(self, page: int | None) -> Stalled:
        return Stalled(self.pages, True) if page is None else Stalled(self.pages | {page}, self.first)

_BATCH_DOCUMENTS, _BATCH_SECONDS = 64, 0.2  # a sandbox sends its documents at least this often


def _serve_warc(send: Callable[[object], None], progress: Progress, path: Path, max_html_bytes: int,
                main_content: bool, to_text: HtmlToText, start: int, stalled: Stalled) -> None:
    """In the sandbox: batches of (record index, skip counts since the previous item, document), the last
    item of the last batch (None, counts, None)."""
    skipped: Counter = Counter()
    batch: list[tuple[int | None, dict[str, int], Document | None]] = []
    sent_at = time.monotonic()
    for index, document in _documents(path, skipped, max_html_bytes, main_content, to_text, start, stalled,
                                      progress):
        batch.append((index, dict(skipped), document))
        skipped.clear()
        if len(batch) >= _BATCH_DOCUMENTS or time.monotonic() - sent_at >= _BATCH_SECONDS:
            send(batch)
            batch, sent_at = [], time.monotonic()
    send([*batch, (None, dict(skipped), None)])


def _documents(path: Path, skipped: Counter, max_html_bytes: int, main_content: bool, to_text: HtmlToText,
               start: int = 0, stalled: Stalled = Stalled(),
               progress: Progress | None = None) -> Iterator[tuple[int, Document]]:
    """(record index, Document) per 200 HTML `response` record from record `start` on; every other record of
    those counted in `skipped`; the `stalled` pages counted as `extract_timeout`, not extracted; each extraction
    marked in `progress`."""
    pass_first = stalled.first
    with open(path, "rb") as stream:
        records = iter(ArchiveIterator(stream, parse_http=False))
        most = max_html_bytes + _HTTP_HEADER_BYTES  # a longer block is no page to extract: never held whole
        last_complete = True
        for index in itertools.count():
            try:
                record = next(records)
                block = record.reader.read(most)
            except StopIteration:
                if not last_complete:  # the input ended inside the last record
                    skipped["truncated_archive"] += 1
                return
            except Exception:  # noqa: BLE001
                # FastWARC reports a damaged stream (bad gzip, a broken WARC header) with OSError and others;
                # nothing after it is readable.
                skipped["malformed_archive"] += 1
                return
            last_complete = len(block) >= min(most, record.content_length)
            if index < start:
                continue
            page = _html_page(record, block, len(block) == most, skipped, max_html_bytes)
            if page is None:
                continue
            if index in stalled.pages or pass_first:
                skipped["extract_timeout"] += 1
                pass_first = False
                continue
            if progress is not None:
                progress.started(index)
            text = to_text(*page, main_content)
            if progress is not None:
                progress.finished()
            if not text:
                skipped["empty_text"] += 1
                continue
            url = _target_uri(record)
            record_id = record.headers.get("WARC-Record-ID") or ""
            yield index, Document(hashed_id(SOURCE, record_id, url or ""), text, SOURCE, url)


def _target_uri(record: WarcRecord) -> str | None:
    """The record's WARC-Target-URI, without the angle brackets some writers put around it."""
    uri = record.headers.get("WARC-Target-URI")
    return uri[1:-1] if uri and uri.startswith("<") and uri.endswith(">") else uri


def _html_page(record: WarcRecord, block: bytes, cut: bool, skipped: Counter,
               max_html_bytes: int) -> tuple[bytes, str | None] | None:
    """(HTML, charset) of one WARC record whose block starts with `block` (all of it unless `cut`), or None after
    counting why it has no page."""
    record_type = record.headers.get("WARC-Type")
    if record_type != "response":
        skipped[f"not_response:{record_type}"] += 1
        return None
    uri = _target_uri(record) or ""
    if not block or not uri.startswith(("http:", "https:")):
        skipped["no_http_headers"] += 1
        return None
    body = io.BytesIO(block)
    try:
        http = _HTTP_PARSER.parse(body)
    except Exception:  # noqa: BLE001 - warcio's parser raises several types on a broken status line
        skipped["malformed_http_headers"] += 1
        return None
    status = http.get_statuscode()
    if status != "200":
        skipped[f"http_status:{status}"] += 1
        return None
    content_type = (http.get_header("Content-Type") or "").lower()
    if not content_type.startswith(_HTML_TYPES):
        skipped["not_html"] += 1
        return None
    if record.headers.get("WARC-Truncated"):
        skipped["truncated"] += 1
        return None
    try:
        payload = _decoded(http, body).read(max_html_bytes + 1)
    except (OSError, zlib.error, ValueError):
        skipped["malformed_payload"] += 1
        return None
    if len(payload) > max_html_bytes or cut:
        skipped["too_large"] += 1
        return None
    if len(block) < record.content_length:  # the block ended before its Content-Length
        skipped["truncated_record"] += 1
        return None
    return payload, _charset(content_type)


def _decoded(http: StatusAndHeaders, body: BinaryIO) -> BinaryIO:
    """The payload after `http` with its transfer and content encodings undone, as warcio's content_stream()."""
    encoding = (http.get_header("Content-Encoding") or "").lower() or None
    if encoding not in BufferedReader.get_supported_decompressors():
        encoding = None
    if http.get_header("Transfer-Encoding") == "chunked":
        return ChunkedDataReader(body, decomp_type=encoding)
    return BufferedReader(body, decomp_type=encoding) if encoding else body


def _charset(content_type: str) -> str | None:
    """The codec named by a Content-Type's charset parameter, or None (detect it) if absent or unknown."""
    for parameter in content_type.split(";")[1:]:
        name, _, value = parameter.strip().partition("=")
        if name.strip() == "charset":
            try:
                return codecs.lookup(value.strip().strip("\"'")).name
            except LookupError:
                break
    return None


def read_wet(path: Path, skipped: Counter) -> Iterator[Document]:
    """Yield one Document per WET `conversion` record; count every other record in `skipped`."""
    with _open_binary(path) as stream:
        try:
            for headers, body in _wet_records(stream):
                document = _conversion_document(headers, body, skipped)
                if document is not None:
                    yield document
        except _GZIP_ERRORS:
            skipped["malformed_archive"] += 1


def _open_binary(path: Path) -> BinaryIO:
    """Open a file for binary reading, transparently gunzipping it if it starts with the gzip magic."""
    with open(path, "rb") as probe:
        magic = probe.read(2)
    return gzip.open(path, "rb") if magic == b"\x1f\x8b" else open(path, "rb")


def _wet_records(stream: BinaryIO) -> Iterator[tuple[dict[str, str], bytes]]:
    """Split a WET stream into (headers, body) at each `WARC/1.x` line."""
    headers: dict[str, str] | None = None
    body: list[bytes] = []
    in_headers = False
    for line in stream:
        if line.rstrip(b"\r\n") in _VERSION_LINES:
            if headers is not None:
                yield headers, b"".join(body)
            headers, body, in_headers = {}, [], True
        elif headers is None:
            continue  # bytes before the first record: nothing to attach them to
        elif in_headers:
            name, sep, value = line.decode("utf-8", errors="replace").partition(":")
            if sep:
                headers[name.strip().lower()] = value.strip()
            elif not line.strip():
                in_headers = False
        else:
            body.append(line)
    if headers is not None:
        yield headers, b"".join(body)


def _conversion_document(headers: dict[str, str], body: bytes, skipped: Counter) -> Document | None:
    """The Document for one WET record, or None after counting why it was skipped."""
    record_type = headers.get("warc-type", "")
    if record_type != "conversion":
        skipped[f"not_conversion:{record_type or 'missing'}"] += 1
        return None
    try:
        text = body.decode("utf-8").strip()
    except UnicodeDecodeError:
        skipped["bad_encoding"] += 1
        return None
    if not text:
        skipped["empty_text"] += 1
        return None
    url = headers.get("warc-target-uri")
    record_id = headers.get("warc-record-id", "")
    return Document(hashed_id(SOURCE, record_id, url or ""), text, SOURCE, url)
