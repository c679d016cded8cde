"""`roots-data extract --format text`: .txt files and directories into document shards, run as a user would."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]

GUTENBERG_BOOK = """\ufeffThe Project Gutenberg EBook of A Short Tale, by Nobody

This eBook is for the use of anyone anywhere at no cost and with
almost no restrictions whatsoever.

Title: A Short Tale

*** START OF THE PROJECT GUTENBERG EBOOK A SHORT TALE ***




CHAPTER I

It was a quiet morning in the valley.

End of the Project Gutenberg EBook of A Short Tale, by Nobody

*** END OF THE PROJECT GUTENBERG EBOOK A SHORT TALE ***

***** This file should be named 12345-8.txt or 12345-8.zip *****
Section 1. General Terms of Use and Redistributing Project Gutenberg-tm
"""

OLD_GUTENBERG_BOOK = """The Project Gutenberg Etext of Old Verses
**Welcome To The World of Free Plain Vanilla Electronic Texts**
**The Legal Small Print**
*END*THE SMALL PRINT! FOR PUBLIC DOMAIN ETEXTS*Ver.04.29.93*END*

Old verses, sung of old.

*** END OF THIS PROJECT GUTENBERG EBOOK OLD VERSES ***
This and all associated files of various formats will be found in the licence.
"""

MIDDLE_GUTENBERG_BOOK = """Project Gutenberg's Middle Tale, by Someone

*** START OF THIS PROJECT GUTENBERG EBOOK MIDDLE TALE ***

Produced by volunteers.
End of Project Gutenberg's Middle Tale, by Someone

*** END OF THIS PROJECT GUTENBERG EBOOK MIDDLE TALE ***
"""

NOT_GUTENBERG = "A page about the Project Gutenberg catalogue.\n*** START of a list, not a marker ***\n"


def extract(*args: str | Path) -> subprocess.CompletedProcess:
    """Run `roots-data extract --format text ARGS...` in a fresh process."""
    return subprocess.run([sys.executable, "-m", "data_tools", "extract", "--format", "text", *map(str, args)],
                          cwd=REPO_ROOT, capture_output=True, text=True, check=False)


def documents(shard: Path) -> list[dict]:
    """The rows of a document shard."""
    return pq.read_table(shard).to_pylist()


def test_a_directory_is_read_recursively_one_document_per_file(tmp_path):
    corpus = tmp_path / "corpus"
    (corpus / "deep" / "deeper").mkdir(parents=True)
    (corpus / "a.txt").write_bytes(b"\xef\xbb\xbfFirst document.\r\n")  # a BOM, Windows line ends
    (corpus / "deep" / "deeper" / "b.txt").write_text("Second document,\n\nwith two paragraphs.\n")
    (corpus / "deep" / "notes.md").write_text("not a .txt file")
    result = extract("--output", tmp_path / "out", corpus)
    assert result.returncode == 0, result.stderr
    rows = documents(tmp_path / "out" / "corpus.parquet")
    assert [row["text"] for row in rows] == ["First document.", "Second document,\n\nwith two paragraphs."]
    assert {row["source"] for row in rows} == {"text"} and {row["url"] for row in rows} == {None}
    assert len({row["id"] for row in rows}) == 2 and all(row["id"].startswith("text:") for row in rows)
    again = extract("--output", tmp_path / "again", "--num-workers", "2", corpus, corpus / "a.txt")
    assert again.returncode == 0, again.stderr
    assert documents(tmp_path / "again" / "corpus.parquet") == rows  # stable ids, whatever the run
    assert [row["text"] for row in documents(tmp_path / "again" / "a.parquet")] == ["First document."]


def test_separator_lines_and_blank_line_runs_split_a_file(tmp_path):
    path = tmp_path / "many.txt"
    path.write_text("one\n=====\ntwo\nstill two\n  =====  \n\nthree\n=====\n")
    assert extract("--separator", "=====", "--source", "notes", "--output", tmp_path / "sep", path).returncode == 0
    rows = documents(tmp_path / "sep" / "many.parquet")
    assert [row["text"] for row in rows] == ["one", "two\nstill two", "three"]
    assert {row["source"] for row in rows} == {"notes"}
    paragraphs = tmp_path / "paragraphs.txt"
    paragraphs.write_text("a\nb\n\nstill b\n\n\nc\n \n\t\n\nd\n")
    assert extract("--blank-lines", "2", "--output", tmp_path / "blank", paragraphs).returncode == 0
    assert [row["text"] for row in documents(tmp_path / "blank" / "paragraphs.parquet")] == [
        "a\nb\n\nstill b", "c", "d"]


def test_gutenberg_header_and_footer_are_removed_and_the_body_kept(tmp_path):
    (tmp_path / "books").mkdir()
    (tmp_path / "books" / "new.txt").write_text(GUTENBERG_BOOK)
    (tmp_path / "books" / "old.txt").write_text(OLD_GUTENBERG_BOOK)
    (tmp_path / "books" / "older.txt").write_text(MIDDLE_GUTENBERG_BOOK)
    (tmp_path / "books" / "plain.txt").write_text(NOT_GUTENBERG)
    assert extract("--output", tmp_path / "out", tmp_path / "books").returncode == 0
    texts = [row["text"] for row in documents(tmp_path / "out" / "books.parquet")]
    assert texts == ["CHAPTER I\n\nIt was a quiet morning in the valley.", "Old verses, sung of old.",
                     "Produced by volunteers.", NOT_GUTENBERG.strip()]


def test_non_utf8_and_empty_files_are_skipped_and_counted(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "good.txt").write_text("Fine text.")
    (tmp_path / "in" / "latin1.txt").write_bytes("Caf\xe9 cr\xe8me".encode("latin-1"))
    (tmp_path / "in" / "blank.txt").write_text("  \n\n")
    result = extract("--output", tmp_path / "out", tmp_path / "in")
    assert result.returncode == 0, result.stderr
    assert "not_utf8" in result.stdout
    stats = json.loads((tmp_path / "out" / "stats.json").read_text())
    assert stats["removed"] == {"empty_file": 1, "not_utf8": 1}
    assert (stats["documents_in"], stats["documents_out"]) == (3, 1)
    assert stats["by_source"] == {"text": {"in": 1, "out": 1}}


def test_unreadable_or_missing_inputs_are_named_in_one_line_with_exit_2(tmp_path):
    missing = tmp_path / "nowhere"
    result = extract("--output", tmp_path / "out", missing)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"roots-data extract: error: text file(s) or directory(s) of .txt files not found: {missing}"]
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "ok.txt").write_text("Readable.")
    (corpus / "dangling.txt").symlink_to(tmp_path / "deleted.txt")
    result = extract("--output", tmp_path / "out", corpus)
    assert result.returncode == 2
    [line] = result.stderr.splitlines()
    assert line.startswith(f"roots-data extract: error: cannot read {corpus / 'dangling.txt'}: ")
    assert not (tmp_path / "out" / "corpus.parquet").exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    result = extract("--output", tmp_path / "out", empty)
    assert result.returncode == 2 and f"{empty} holds no .txt files" in result.stderr


@pytest.mark.parametrize("args, message", [
    (["--blank-lines", "0"], "--blank-lines 0 is invalid: it must be at least 1"),
    (["--separator", "  "], "--separator is empty"),
])
def test_invalid_split_options_exit_2(tmp_path, args, message):
    (tmp_path / "a.txt").write_text("text")
    result = extract(*args, "--output", tmp_path / "out", tmp_path / "a.txt")
    assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr


def test_text_options_are_refused_for_other_formats(tmp_path):
    result = subprocess.run([sys.executable, "-m", "data_tools", "extract", "--format", "jsonl", "--separator", "==",
                             "--output", str(tmp_path), str(tmp_path / "x.jsonl")],
                            cwd=REPO_ROOT, capture_output=True, text=True, check=False)
    assert result.returncode == 2
    assert "--separator: only for --format text, not --format jsonl" in result.stderr
