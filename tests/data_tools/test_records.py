"""JSONL extraction: the text field per line; bad lines are skipped and counted."""

from __future__ import annotations

import json
from collections import Counter

from data_tools.sources.records import read_jsonl

LINES = [
    json.dumps({"text": "first document", "url": "https://a.example/1"}),
    "{not json",
    json.dumps(["a", "list"]),
    json.dumps({"body": "no text field"}),
    "",
    json.dumps({"text": "   "}),
    json.dumps({"text": 42}),
    json.dumps({"text": "second 文書 😀", "url": 7}),
]


def test_bad_lines_are_skipped_and_counted(tmp_path):
    path = tmp_path / "docs.jsonl"
    path.write_bytes(("\n".join(LINES) + "\n").encode("utf-8") + b"\xff\xfe not utf-8\n")
    skipped = Counter()
    documents = list(read_jsonl(path, skipped))
    assert [d.text for d in documents] == ["first document", "second 文書 😀"]
    assert [d.url for d in documents] == ["https://a.example/1", None]
    assert skipped == Counter({"bad_json": 2, "not_an_object": 1, "missing_text": 2, "empty_text": 1})


def test_text_field_and_stable_ids(tmp_path):
    path = tmp_path / "docs.jsonl"
    path.write_text(json.dumps({"content": "hello"}) + "\n" + json.dumps({"content": "world"}) + "\n")
    first = list(read_jsonl(path, Counter(), text_field="content"))
    again = list(read_jsonl(path, Counter(), text_field="content"))
    assert [d.text for d in first] == ["hello", "world"]
    assert [d.id for d in first] == [d.id for d in again]
    assert len({d.id for d in first}) == 2 and all(d.id.startswith("jsonl:") for d in first)
    assert all(d.source == "jsonl" for d in first)
