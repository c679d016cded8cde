"""The extract stage: shards per input, resumable, sliceable, parallel, with stats that add up."""

from __future__ import annotations

import json
from pathlib import Path

import datasets
import pyarrow.parquet as pq
import pytest

from data_tools.cli import main
from data_tools.errors import DataToolsError
from data_tools.extract import ExtractOptions, extract_files
from data_tools.shards import SCHEMA, write_shard
from data_tools.sources.base import Document


def shard_bytes(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.glob("*.parquet"))}


def test_one_shard_per_input_named_after_it(docs_dir):
    assert sorted(p.name for p in docs_dir.glob("*.parquet")) == [
        "demo.warc.parquet", "demowiki-pages-articles.xml.parquet"]
    table = pq.read_table(docs_dir / "demo.warc.parquet")
    assert table.schema.equals(SCHEMA)
    assert set(table.column("source").to_pylist()) == {"commoncrawl"}
    assert table.column("lang").null_count == table.num_rows
    assert all(url.startswith("https://") for url in table.column("url").to_pylist())


def test_stats_add_up_and_name_every_skip(demo_corpus, tmp_path):
    report = extract_files([demo_corpus["wikipedia"]], "wikipedia", tmp_path)
    totals = report.totals
    assert report.ran == 1 and totals.documents_out > 0
    assert totals.removed == {"redirect": 1, "not_main_namespace": 1}
    assert totals.documents_in == totals.documents_out + sum(totals.removed.values())
    stats = json.loads((tmp_path / "stats.json").read_text())
    assert stats["stage"] == "extract" and stats["documents_out"] == totals.documents_out
    assert stats["by_source"] == {"wikipedia": {"in": totals.documents_out, "out": totals.documents_out}}


def test_rerun_keeps_finished_tasks_and_never_trusts_a_partial_one(demo_corpus, tmp_path):
    inputs = [demo_corpus["wikipedia"], demo_corpus["commoncrawl"]]
    first = extract_files(inputs[:1], "wikipedia", tmp_path)
    output = tmp_path / "demowiki-pages-articles.xml.parquet"
    mtime = output.stat().st_mtime_ns
    again = extract_files(inputs[:1], "wikipedia", tmp_path)
    assert (again.ran, again.reused) == (0, 1) and output.stat().st_mtime_ns == mtime
    # A kill after the shard but before its stats sidecar: the task is redone, to the same bytes.
    original = output.read_bytes()
    (tmp_path / ".stats" / "demowiki-pages-articles.xml.json").unlink()
    output.write_bytes(original[: len(original) // 2])
    redone = extract_files(inputs[:1], "wikipedia", tmp_path)
    assert redone.ran == 1 and output.read_bytes() == original
    assert redone.totals.documents_out == first.totals.documents_out
    assert not list(tmp_path.glob(".*.tmp"))  # no temp files left behind


def test_same_bytes_whatever_the_workers_or_slices(fixture_path, tmp_path):
    inputs = [fixture_path("dolma_sample-0000.warc.gz"), fixture_path("cc-main-2024-22_whirlwind.warc.gz")]
    extract_files(inputs, "warc", tmp_path / "serial")
    extract_files(inputs, "warc", tmp_path / "parallel", num_workers=2)
    for index in range(2):
        extract_files(inputs, "warc", tmp_path / "sliced", shard_index=index, num_shards=2)
    serial = shard_bytes(tmp_path / "serial")
    assert len(serial) == 2
    assert shard_bytes(tmp_path / "parallel") == serial == shard_bytes(tmp_path / "sliced")


def test_target_shard_size_splits_into_parts(fixture_path, tmp_path):
    options = ExtractOptions("wikipedia", shard_bytes=20_000)
    report = extract_files([fixture_path("enwiki-table-markup.xml.bz2")], "wikipedia", tmp_path, options=options)
    parts = sorted(p.name for p in tmp_path.glob("*.parquet"))
    assert len(parts) > 1 and parts[0] == "enwiki-table-markup.xml-00000.parquet"
    assert sum(pq.read_metadata(tmp_path / p).num_rows for p in parts) == report.totals.documents_out == 5


def test_parquet_and_saved_hf_datasets(tmp_path):
    rows = [Document(f"d{i}", f"text number {i}", "books", None) for i in range(5)]
    write_shard(tmp_path / "in" / "books.parquet", rows)
    report = extract_files([tmp_path / "in" / "books.parquet"], "parquet", tmp_path / "from_parquet")
    assert report.totals.documents_out == 5
    table = pq.read_table(tmp_path / "from_parquet" / "books.parquet")
    assert table.column("text").to_pylist() == [r.text for r in rows]
    assert set(table.column("source").to_pylist()) == {"books"}  # a record's own source label is kept

    saved = tmp_path / "saved_dataset"
    datasets.DatasetDict({
        "train": datasets.Dataset.from_dict({"content": ["alpha", "", "beta"]}),
        "test": datasets.Dataset.from_dict({"content": ["gamma"]}),
    }).save_to_disk(str(saved))
    options = ExtractOptions("hf", text_field="content")
    report = extract_files([saved], "hf", tmp_path / "from_hf", options=options)
    texts = pq.read_table(tmp_path / "from_hf" / "saved_dataset.parquet").column("text").to_pylist()
    assert texts == ["gamma", "alpha", "beta"]  # splits in name order
    assert report.totals.removed == {"empty_text": 1}
    with pytest.raises(DataToolsError, match="no column 'text'.*--text-field"):
        extract_files([saved], "hf", tmp_path / "bad_field", overwrite=True)


def test_missing_input_and_colliding_outputs_are_errors(demo_corpus, tmp_path):
    with pytest.raises(DataToolsError, match="not found: .*nope.warc.gz"):
        extract_files([tmp_path / "nope.warc.gz"], "warc", tmp_path / "out")
    twin = tmp_path / "elsewhere" / demo_corpus["commoncrawl"].name
    twin.parent.mkdir()
    twin.write_bytes(demo_corpus["commoncrawl"].read_bytes())
    with pytest.raises(DataToolsError, match="would write the same output shard"):
        extract_files([demo_corpus["commoncrawl"], twin], "warc", tmp_path / "out")
    with pytest.raises(DataToolsError, match="unknown input format 'pdf'; valid formats: warc, wet, wikipedia"):
        extract_files([demo_corpus["commoncrawl"]], "pdf", tmp_path / "out")


def test_cli_extract_then_stats(demo_corpus, tmp_path, capsys):
    assert main(["extract", "--format", "warc", "--output", str(tmp_path), str(demo_corpus["commoncrawl"])]) == 0
    assert main(["stats", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "http_status:404" in out and "not_html" in out and "commoncrawl" in out
