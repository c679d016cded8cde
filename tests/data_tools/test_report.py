"""`roots-data report` on real stage outputs: the demo corpus plus planted copies, extracted to tokenized."""

from __future__ import annotations

import base64
import json
import re
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from data_tools.cli import main
from data_tools.filters.lexicons import stopwords
from data_tools.report import PLOTS
from data_tools.tokenizer import train_tokenizer

EXTRA_EXACT = 5  # wiki texts copied twice more, so some exact groups have three documents


def run(*argv: str) -> int:
    return main([str(arg) for arg in argv])


@pytest.fixture(scope="module")
def pipeline(docs_dir, tmp_path_factory) -> dict[str, Path]:
    """docs/ (the demo corpus, and a 'mirror' source copying its wiki pages exactly and nearly) to store/."""
    root = tmp_path_factory.mktemp("report")
    docs = root / "docs"
    shutil.copytree(docs_dir, docs)
    texts = pq.read_table(docs / "demowiki-pages-articles.xml.parquet").column("text").to_pylist()
    records = texts + texts[:EXTRA_EXACT]  # exact copies
    for text in texts:  # one word in the middle changed: a near duplicate
        words = text.split(" ")
        words[len(words) // 2] = "mirrored"
        records.append(" ".join(words))
    mirror = root / "raw" / "mirror.jsonl"
    mirror.parent.mkdir()
    mirror.write_text("".join(json.dumps({"text": text, "source": "mirror"}) + "\n" for text in records))
    assert run("extract", "--format", "jsonl", "--output", docs, mirror) == 0
    assert run("clean", "--input", docs, "--output", root / "clean") == 0
    assert run("dedup", "--input", root / "clean", "--output", root / "dedup") == 0
    model = train_tokenizer(root / "dedup", root / "tokenizer" / "spm", 2000)
    assert run("tokenize", "--input", root / "dedup", "--tokenizer", model, "--output", root / "store") == 0
    return {"extract": docs, "clean": root / "clean", "dedup": root / "dedup", "tokenize": root / "store",
            "report": root / "report.html"}


@pytest.fixture(scope="module")
def report(pipeline) -> tuple[str, dict]:
    """The report's HTML (stage directories given out of order) and the numbers embedded in it."""
    order = ("tokenize", "dedup", "extract", "clean")
    assert run("report", *(pipeline[stage] for stage in order), "--output", pipeline["report"]) == 0
    page = pipeline["report"].read_text(encoding="utf-8")
    block = re.search(r'<script type="application/json" id="report-data">(.*?)</script>', page, re.DOTALL)
    return page, json.loads(block.group(1))


def test_every_stage_is_detected_in_pipeline_order_with_its_stats(pipeline, report):
    _, data = report
    assert [row["stage"] for row in data["stages"]] == ["extract", "clean", "dedup", "tokenize"]
    for row in data["stages"]:
        stats = json.loads((pipeline[row["stage"]] / "stats.json").read_text())
        assert row["directory"] == str(pipeline[row["stage"]])
        for key in ("documents_in", "documents_out", "bytes_in", "bytes_out", "removed"):
            assert row[key] == stats[key], (row["stage"], key)
        assert row["documents_by_language"] == {k: v.get("out", 0) for k, v in stats["by_language"].items()}
        assert row["documents_by_source"] == {k: v.get("out", 0) for k, v in stats["by_source"].items()}
    assert set(data["stages"][0]["documents_by_source"]) == {"commoncrawl", "wikipedia", "mirror"}


def test_shard_numbers_add_up_to_the_stats(report):
    _, data = report
    for row in data["stages"][:3]:  # the document stages: text bytes and lengths read from their shards
        assert sum(row["text_bytes_by_source"].values()) == row["bytes_out"]
        assert sum(row["text_bytes_by_language"].values()) == row["bytes_out"]
        assert sum(row["words_per_document"]) == row["documents_out"]
    assert len(data["length_bins"]) == len(data["stages"][0]["words_per_document"]) + 1


def test_duplicate_groups_match_dedup(pipeline, report):
    _, data = report
    dedup = data["stages"][2]
    marker = json.loads((pipeline["dedup"] / ".dedup" / "cluster.json").read_text())
    assert dedup["cluster_sizes"] == marker["cluster_sizes"]
    for reason, sizes in dedup["cluster_sizes"].items():  # every group keeps one document and removes the rest
        assert sum((int(size) - 1) * groups for size, groups in sizes.items()) == dedup["removed"][reason]
    assert dedup["cluster_sizes"]["exact_duplicate"].get("3", 0) >= 1  # a kept page copied twice more
    assert dedup["removed"]["near_duplicate"] >= 1


def test_store_tokens_per_source_match_the_manifest(pipeline, report):
    _, data = report
    store = data["stages"][3]
    manifest = json.loads((pipeline["tokenize"] / "manifest.json").read_text())
    assert store["num_tokens"] == manifest["num_tokens"] == sum(store["tokens_by_source"].values())
    for entry in manifest["files"]:  # each shard holds one source (the mirror's copies were all removed)
        for source in entry["documents_per_source"]:
            assert store["tokens_by_source"][source] == entry["num_tokens"]
    assert set(store["tokens_by_source"]) == {"commoncrawl", "wikipedia"}
    assert sum(store["tokens_per_document"]) == manifest["num_documents"]


def test_top_words_come_from_the_last_document_stage_without_stop_words(pipeline, report):
    _, data = report
    top = data["top_words"]
    assert top["directory"] == str(pipeline["dedup"])
    english = top["languages"]["en"]
    assert english["documents"] == data["stages"][2]["documents_by_language"]["en"]
    counts = [count for _, count in english["words"]]
    assert len(counts) == 15 and counts == sorted(counts, reverse=True)
    assert not {word for word, _ in english["words"]} & stopwords("en")


def test_every_plot_is_embedded_and_nothing_is_fetched(report):
    page, data = report
    assert data["plots"] == list(PLOTS)
    for plot in PLOTS:
        image = re.search(rf'<img id=plot-{plot} alt="[^"]*" src="data:image/svg\+xml;base64,([^"]+)"', page)
        assert image is not None, plot
        assert b"<svg" in base64.b64decode(image.group(1))
    assert not re.search(r'(src|href)="(https?:)?//', page)
    assert f"{data['stages'][3]['num_tokens']:,}" in page  # the headline numbers are in the page


def test_a_directory_that_is_not_a_stage_output_is_named_in_one_line(pipeline, tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("not a stage")
    assert run("report", pipeline["clean"], tmp_path, "--output", tmp_path / "r.html") == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and str(tmp_path) in error[0] and "not a stage output" in error[0]
    assert not (tmp_path / "r.html").exists()
    assert run("report", tmp_path / "missing", "--output", tmp_path / "r.html") == 2
    assert f"{tmp_path / 'missing'} is not a directory" in capsys.readouterr().err
    unfinished = tmp_path / "store"  # as while tokenize still runs: no manifest yet
    shutil.copytree(pipeline["tokenize"], unfinished, ignore=shutil.ignore_patterns("manifest.json"))
    assert run("report", unfinished, "--output", tmp_path / "r.html") == 2
    assert f"{unfinished} is an unfinished token store" in capsys.readouterr().err
