"""The clean stage end to end: language id on real data, stats that add up, determinism, resume, slicing, options."""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from data_tools.clean import register
from data_tools.errors import DataToolsError
from data_tools.extract import extract_files
from data_tools.filters.langid import identify
from data_tools.shards import SCHEMA, write_shard
from data_tools.sources.base import Document
from data_tools.sources.warc import read_wet

HARBOUR = (
    "The old harbour town grew up around a small fishing port at the mouth of the river. For most of its "
    "history the people who lived there made their living from the sea, and the narrow streets that climb "
    "the hill behind the quay still follow the paths they used to carry their catch to the market."
)
RAILWAY = (
    "In the nineteenth century a railway reached the town, and with it came visitors from the cities inland, "
    "who built large houses along the cliffs and turned the beach into a place for holidays rather than work. "
    "Many of those houses are now hotels, and the old station has become a museum about the line."
)
GARDEN = (
    "When the spring comes, the gardens behind the church are full of flowers, and the families who have "
    "lived in the town for generations meet there on Sunday afternoons to talk about the weather, the boats "
    "and the price of fish, just as their grandparents did before them."
)
FRENCH = (
    "La vieille ville s'est développée autour d'un petit port de pêche à l'embouchure du fleuve. Pendant la "
    "plus grande partie de son histoire, les habitants vivaient de la mer, et les rues étroites qui montent "
    "sur la colline derrière le quai suivent encore les chemins qu'ils empruntaient pour porter leur pêche."
)
EMAIL_LINE = " Write to the harbour master at master@harbour.example.org for a berth."


def document(doc_id: str, text: str) -> Document:
    return Document(doc_id, text, "test", f"https://example.org/{doc_id}")


def make_shards(directory: Path) -> Path:
    """Three shards: a and b of hand-made documents, c written elsewhere: invalid UTF-8 and nulls in it."""
    write_shard(directory / "a.parquet", [document("a1", HARBOUR + EMAIL_LINE), document("a2", "buy now! " * 40),
                                          document("a3", ""), document("a4", (RAILWAY + " ") * 40)])
    write_shard(directory / "b.parquet", [document("b1", RAILWAY), document("b2", FRENCH),
                                          document("b3", "Hello there."), document("b4", " \n\t\u00a0 ")])
    texts = pa.array([GARDEN.encode(), b"broken \xed\xa0\x80 surrogate", HARBOUR.encode(), None],
                     pa.binary()).view(pa.string())
    nullable = pa.schema([field.with_nullable(True) for field in SCHEMA])
    table = pa.table({"id": ["c1", "c2", "c3", "c4"], "text": texts, "source": ["test", "test", None, "test"],
                      "url": [None] * 4, "lang": [None] * 4}, schema=nullable)
    pq.write_table(table, directory / "c.parquet")
    return directory


EXPECTED_REMOVED = {"char_repetition": 1, "empty": 3, "too_large": 1, "min_words": 1, "invalid_utf8": 1,
                    "missing_field": 1}


@pytest.fixture
def inputs(tmp_path) -> Path:
    directory = tmp_path / "docs"
    directory.mkdir()
    return make_shards(directory)


def run_clean(*argv: object) -> int:
    """Run `clean` as the CLI will: a parser with the command registered."""
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    args = parser.parse_args(["clean", *map(str, argv)])
    return args.run(args)


def rows(path: Path) -> dict[str, dict]:
    return {row["id"]: row for row in pq.read_table(path).to_pylist()}


def outputs(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.glob("*.parquet"))}


def test_language_identification_on_real_multilingual_web_text(fixture_path):
    documents = list(read_wet(fixture_path("cc_net_sample.wet.txt"), Counter()))
    # The records' URLs say their language: http://sample_english.com, http://sample_chinese.zh, ...
    expected = {"english": "en", "chinese": "zh", "russian": "ru"}
    seen = {}
    for doc in documents:
        language = doc.url.split("sample_")[1].split(".")[0]
        lang, score = identify(doc.text)
        seen[language] = lang
        assert score > 0.9, (doc.url, lang, score)
    assert seen == expected


def test_stage_cleans_counts_and_redacts(inputs, tmp_path, capsys):
    output = tmp_path / "clean"
    assert run_clean("--input", inputs, "--output", output, "--max-document-bytes", 8000) == 0
    stats = json.loads((output / "stats.json").read_text())
    assert stats["stage"] == "clean" and stats["documents_in"] == 12
    assert stats["removed"] == EXPECTED_REMOVED
    assert stats["documents_in"] == stats["documents_out"] + sum(stats["removed"].values())
    assert stats["by_language"]["fr"] == {"in": 1, "out": 1} and stats["by_language"]["en"]["out"] == 3
    assert stats["outputs"] == ["a.parquet", "b.parquet", "c.parquet"]
    kept = {}
    for name in stats["outputs"]:
        assert pq.read_schema(output / name).equals(SCHEMA)
        kept.update(rows(output / name))
    assert {doc_id: row["lang"] for doc_id, row in kept.items()} == {"a1": "en", "b1": "en", "b2": "fr", "c1": "en"}
    assert kept["a1"]["text"].endswith("master at <EMAIL> for a berth.")
    assert kept["b1"]["text"] == RAILWAY and kept["b1"]["url"] == "https://example.org/b1"
    sidecar = json.loads((output / ".stats" / "a.json").read_text())
    assert sidecar["events"] == {"pii:email": 1}
    assert "clean: 12 documents in" in capsys.readouterr().out


def test_same_bytes_whatever_the_workers(inputs, tmp_path):
    run_clean("--input", inputs, "--output", tmp_path / "serial")
    run_clean("--input", inputs, "--output", tmp_path / "parallel", "--num-workers", 2)
    serial = outputs(tmp_path / "serial")
    assert len(serial) == 3 and serial == outputs(tmp_path / "parallel")


def test_rerun_reuses_finished_tasks_and_slices_split_the_work(inputs, tmp_path, capsys):
    output = tmp_path / "clean"
    run_clean("--input", inputs, "--output", output)
    mtimes = {p.name: p.stat().st_mtime_ns for p in output.glob("*.parquet")}
    capsys.readouterr()
    run_clean("--input", inputs, "--output", output)
    assert "ran 0 task(s), kept 3 finished one(s)" in capsys.readouterr().out
    assert {p.name: p.stat().st_mtime_ns for p in output.glob("*.parquet")} == mtimes

    sliced = tmp_path / "sliced"
    run_clean("--input", inputs, "--output", sliced, "--shard-index", 1, "--num-shards", 2)
    assert sorted(outputs(sliced)) == ["b.parquet"]  # names sorted a, b, c: slice 1 of 2 is b
    run_clean("--input", inputs, "--output", sliced, "--shard-index", 0, "--num-shards", 2)
    assert outputs(sliced) == outputs(output)


def test_options_select_languages_pii_and_extra_filters(inputs, tmp_path):
    run_clean("--input", inputs, "--output", tmp_path / "en", "--languages", "en", "--no-pii")
    stats = json.loads((tmp_path / "en" / "stats.json").read_text())
    kept = {**rows(tmp_path / "en" / "a.parquet"), **rows(tmp_path / "en" / "b.parquet")}
    assert sorted(kept) == ["a1", "b1"] and stats["by_language"]["fr"] == {"in": 1}
    assert stats["removed"]["language"] >= 1 and "word_repetition" in stats["removed"]  # a4 is no longer too large
    assert "master@harbour.example.org" in kept["a1"]["text"]

    run_clean("--input", inputs, "--output", tmp_path / "strict", "--gopher", "--c4-lines")
    stats = json.loads((tmp_path / "strict" / "stats.json").read_text())
    assert stats["removed"]["c4_lines"] >= 3  # the short paragraphs have fewer than 5 sentences
    assert stats["documents_in"] == stats["documents_out"] + sum(stats["removed"].values())


def test_bad_options_fail_before_any_work(inputs, tmp_path):
    with pytest.raises(DataToolsError, match="unknown language code.*xx; valid codes: .*en, "):
        run_clean("--input", inputs, "--output", tmp_path / "out", "--languages", "en,xx")
    bad = tmp_path / "bad.yaml"
    bad.write_text("default: {min_words: 3}\n")
    with pytest.raises(DataToolsError, match=f"thresholds file {bad}: `default` lacks"):
        run_clean("--input", inputs, "--output", tmp_path / "out", "--thresholds", bad)
    assert not (tmp_path / "out").exists()


def test_clean_on_real_wikipedia_pages(fixture_path, tmp_path):
    extract_files([fixture_path("enwiki-table-markup.xml.bz2")], "wikipedia", tmp_path / "docs")
    run_clean("--input", tmp_path / "docs", "--output", tmp_path / "clean")
    stats = json.loads((tmp_path / "clean" / "stats.json").read_text())
    assert stats["documents_in"] == 5 and stats["documents_out"] >= 4
    assert stats["documents_in"] == stats["documents_out"] + sum(stats["removed"].values())
    assert set(stats["by_language"]) == {"en"}
