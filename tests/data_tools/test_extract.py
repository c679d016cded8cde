"""The extract stage: one Parquet shard per input, resumable, with per-file skip counts."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest

from data_tools.errors import DataToolsError
from data_tools.extract import extract_files
from data_tools.shards import SCHEMA


def test_one_shard_per_input_named_after_it(docs_dir):
    assert sorted(p.name for p in docs_dir.iterdir()) == ["demo.warc.parquet", "demowiki-pages-articles.xml.parquet"]
    table = pq.read_table(docs_dir / "demo.warc.parquet")
    assert table.schema.equals(SCHEMA)
    assert set(table.column("source").to_pylist()) == {"commoncrawl"}
    assert table.column("lang").null_count == table.num_rows
    assert all(url.startswith("https://") for url in table.column("url").to_pylist())


def test_rerun_keeps_existing_shard_unless_overwrite(demo_corpus, tmp_path):
    (first,) = extract_files([demo_corpus["wikipedia"]], "wikipedia", tmp_path)
    assert not first.reused and first.documents > 0 and first.skipped == {"redirect": 1, "not_main_namespace": 1}
    assert "skipped not_main_namespace=1, redirect=1" in first.summary()
    first.output.write_bytes(first.output.read_bytes())  # same content, new mtime
    mtime = first.output.stat().st_mtime_ns
    (kept,) = extract_files([demo_corpus["wikipedia"]], "wikipedia", tmp_path)
    assert kept.reused and kept.documents == first.documents and first.output.stat().st_mtime_ns == mtime
    assert "--overwrite" in kept.summary()
    (redone,) = extract_files([demo_corpus["wikipedia"]], "wikipedia", tmp_path, overwrite=True)
    assert not redone.reused and redone.documents == first.documents
    assert [p.name for p in tmp_path.iterdir()] == [first.output.name]  # no temp files left behind


def test_ids_are_stable_across_runs(demo_corpus, tmp_path):
    extract_files([demo_corpus["commoncrawl"]], "warc", tmp_path / "a")
    extract_files([demo_corpus["commoncrawl"]], "warc", tmp_path / "b")
    ids_a = pq.read_table(tmp_path / "a" / "demo.warc.parquet").column("id").to_pylist()
    ids_b = pq.read_table(tmp_path / "b" / "demo.warc.parquet").column("id").to_pylist()
    assert ids_a == ids_b and len(set(ids_a)) == len(ids_a)


def test_missing_input_and_colliding_outputs_are_errors(demo_corpus, tmp_path):
    with pytest.raises(DataToolsError, match="not found: .*nope.warc.gz"):
        extract_files([tmp_path / "nope.warc.gz"], "warc", tmp_path / "out")
    twin = tmp_path / "elsewhere" / demo_corpus["commoncrawl"].name
    twin.parent.mkdir()
    twin.write_bytes(demo_corpus["commoncrawl"].read_bytes())
    with pytest.raises(DataToolsError, match="would both write .*demo.warc.parquet"):
        extract_files([demo_corpus["commoncrawl"], twin], "warc", tmp_path / "out")
    with pytest.raises(DataToolsError, match="unknown input format 'pdf'; valid formats: warc, wet, wikipedia, jsonl"):
        extract_files([demo_corpus["commoncrawl"]], "pdf", tmp_path / "out")
