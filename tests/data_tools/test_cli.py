"""The `roots-data` command line: the whole pipeline, verify's exit codes, errors without tracebacks."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from data_tools.cli import main

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_pipeline_end_to_end(tmp_path, capsys):
    raw, docs, store = tmp_path / "raw", tmp_path / "docs", tmp_path / "store"
    assert main(["demo-corpus", "--output", str(raw)]) == 0
    assert main(["extract", "--format", "warc", "--output", str(docs), str(raw / "commoncrawl/demo.warc.gz")]) == 0
    wiki = str(raw / "wikipedia/demowiki-pages-articles.xml.bz2")
    assert main(["extract", "--format", "wikipedia", "--output", str(docs), wiki]) == 0
    out = capsys.readouterr().out
    assert "-> 34 out" in out and "-> 68 out" in out  # the second run's table totals the whole directory
    for reason in ("http_status:404", "not_html", "not_main_namespace", "redirect"):
        assert reason in out
    prefix = tmp_path / "tok" / "demo"
    assert main(["train-tokenizer", "--input", str(docs), "--output", str(prefix), "--vocab-size", "2000"]) == 0
    assert main(["tokenize", "--input", str(docs), "--tokenizer", f"{prefix}.model", "--output", str(store)]) == 0
    assert main(["verify", str(store)]) == 0
    out = capsys.readouterr().out
    assert "vocab_size 2000" in out
    assert f"{store}: OK: 2 files, 68 documents" in out


def test_verify_reports_a_corrupt_store(store_dir, tmp_path, capsys):
    broken = tmp_path / "broken"
    shutil.copytree(store_dir, broken)
    shard = broken / "demo.warc.arrow"
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    assert main(["verify", str(store_dir)]) == 0
    assert main(["verify", str(broken)]) == 1
    err = capsys.readouterr().err
    assert "1 problem(s)" in err and f"{shard} has sha256" in err


def test_verify_of_a_directory_without_manifest_fails(tmp_path, capsys):
    assert main(["verify", str(tmp_path)]) == 1
    assert "manifest.json not found" in capsys.readouterr().err


def test_user_errors_exit_2_with_a_message_and_no_traceback(tmp_path):
    missing = tmp_path / "missing.warc.gz"
    result = subprocess.run(
        [sys.executable, "-m", "data_tools", "extract", "--format", "warc", "--output", str(tmp_path), str(missing)],
        cwd=REPO_ROOT, capture_output=True, text=True, check=False,
    )
    assert result.returncode == 2
    assert f"roots-data extract: error: input file(s) not found: {missing}" in result.stderr
    assert "Traceback" not in result.stderr


def test_usage_errors_exit_2_from_argparse(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["extract", "--format", "pdf", "--output", "x", "in"])
    assert exit_.value.code == 2
    assert "invalid choice: 'pdf'" in capsys.readouterr().err


def test_train_tokenizer_prints_the_balanced_sample(docs_dir, tmp_path, capsys):
    prefix = tmp_path / "bal"
    assert main(["train-tokenizer", "--input", str(docs_dir), "--output", str(prefix), "--vocab-size", "500",
                 "--max-sentences", "300", "--balance-by", "source", "--proportions", "commoncrawl=1,wikipedia=2"]) == 0
    out = capsys.readouterr().out
    assert "tokenizer sample: 300 sentences balanced by source" in out
    assert re.search(r"commoncrawl +100 +[\d,]+ +33\.3%", out) and re.search(r"wikipedia +200 +[\d,]+ +66\.7%", out)
    assert f"{prefix}.model: vocab_size 500" in out
    assert main(["train-tokenizer", "--input", str(docs_dir), "--output", str(prefix), "--vocab-size", "500",
                 "--balance-by", "lang", "--proportions", "en=1"]) == 2
    assert "gives no weight to lang group(s) und" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        main(["train-tokenizer", "--input", "d", "--output", "p", "--vocab-size", "500", "--proportions", "en"])
    assert exit_.value.code == 2
    assert "'en' in 'en' is not a new KEY=WEIGHT pair" in capsys.readouterr().err


def test_tokenize_slices_write_the_manifest_when_complete(docs_dir, tokenizer_model, store_dir, tmp_path, capsys):
    store = tmp_path / "store"
    common = ["tokenize", "--input", str(docs_dir), "--tokenizer", str(tokenizer_model), "--output", str(store)]
    assert main([*common, "--shard-index", "1", "--num-shards", "2"]) == 0
    out = capsys.readouterr().out
    assert "tokenize: ran 1 task(s), kept 0 finished one(s)" in out
    assert "tokenize: 34 documents in" in out and "no manifest yet: 1 shard(s) still to tokenize (demo.warc)" in out
    assert main([*common, "--shard-index", "0", "--num-shards", "2", "--num-workers", "2"]) == 0
    out = capsys.readouterr().out
    assert "tokenize: 68 documents in" in out and f"{store}: 2 files, 68 documents" in out
    assert (store / "manifest.json").read_bytes() == (store_dir / "manifest.json").read_bytes()
