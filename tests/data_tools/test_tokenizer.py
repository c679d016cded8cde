"""The tokenizer: lossless round trips, fixed special ids, deterministic training, clear errors."""

from __future__ import annotations

import hashlib

import pyarrow.parquet as pq
import pytest

from data_tools.errors import DataToolsError
from data_tools.extract import extract_files
from data_tools.tokenizer import SPECIAL_TOKENS, Tokenizer, sentence_iterator, train_tokenizer

EDGE_CASES = [
    "",
    "\n",
    "  two leading spaces, trailing spaces   ",
    "tabs\tin\t\tthe middle\t",
    "multiple    spaces   between\n\n\nand blank lines\n",
    "\r\nwindows line ends\r\n",
    "digits 0123456789 3.14159 1,000,000 2024-05-18",
    "emoji 😀🚀👩‍👩‍👧 and CJK 日本語の文章 中文 한국어",
    "accents é ü ñ ø, Cyrillic Привет, Greek αβγ, Arabic مرحبا",
    "zero\u200bwidth and nbsp\u00a0here",
    "  indented code:\n    def f(x):\n        return x  # comment\n",
]


@pytest.fixture(scope="module")
def tokenizer(tokenizer_model) -> Tokenizer:
    return Tokenizer(tokenizer_model)


def test_round_trip_is_lossless_on_every_demo_document(tokenizer, docs_dir):
    for shard in sorted(docs_dir.glob("*.parquet")):
        for text in pq.read_table(shard, columns=["text"]).column("text").to_pylist():
            assert tokenizer.decode(tokenizer.encode(text)) == text


@pytest.mark.parametrize("text", EDGE_CASES)
def test_round_trip_is_lossless_on_edge_cases(tokenizer, text):
    ids = tokenizer.encode(text)
    assert all(0 <= i < tokenizer.vocab_size for i in ids)
    assert tokenizer.decode(ids) == text


def test_special_ids_and_model_properties(tokenizer, tokenizer_model):
    assert tokenizer.special_tokens == {"pad": 0, "unk": 1, "eod": 2, "mask": 3, "cls": 4, "sep": 5}
    assert tokenizer.vocab_size == 2000
    assert tokenizer.fingerprint == hashlib.sha256(tokenizer_model.read_bytes()).hexdigest()
    assert tokenizer.encode("<mask><cls><sep>") == [3, 4, 5]
    assert tokenizer.decode([2]) == ""  # eod is a control token: it has no text
    assert tokenizer.encode("1234") == [tokenizer.encode(d)[0] for d in "1234"]  # digits are split


def test_vocab_file_lists_every_piece(tokenizer_model):
    lines = tokenizer_model.with_suffix(".vocab").read_text(encoding="utf-8").split("\n")[:-1]
    assert len(lines) == 2000
    pieces = [line.split("\t")[0] for line in lines[:7]]
    assert pieces == ["<pad>", "<unk>", "</s>", "<mask>", "<cls>", "<sep>", "<0x00>"]


def test_training_is_deterministic(docs_dir, tokenizer_model, tmp_path):
    again = train_tokenizer(docs_dir, tmp_path / "again", 2000)
    assert again.read_bytes() == tokenizer_model.read_bytes()
    assert again.with_suffix(".vocab").read_bytes() == tokenizer_model.with_suffix(".vocab").read_bytes()


def test_unigram_model_type(docs_dir, tmp_path):
    tokenizer = Tokenizer(train_tokenizer(docs_dir, tmp_path / "uni", 500, model_type="unigram"))
    assert tokenizer.vocab_size == 500 and tokenizer.special_tokens == SPECIAL_TOKENS
    assert tokenizer.decode(tokenizer.encode(EDGE_CASES[7])) == EDGE_CASES[7]


def test_sentence_iterator_caps_and_is_deterministic(docs_dir):
    everything = list(sentence_iterator(docs_dir, max_sentences=10**9))
    assert everything and all(line.strip() and "\n" not in line for line in everything)
    sample = list(sentence_iterator(docs_dir, max_sentences=100))
    assert len(sample) == 100
    assert sample == list(sentence_iterator(docs_dir, max_sentences=100))
    assert set(sample) <= set(everything)
    assert sample != everything[:100]  # a sample over the whole corpus, not its head


def test_long_lines_are_cut_between_characters(tmp_path):
    shard_dir = tmp_path / "docs"
    path = tmp_path / "long.jsonl"
    path.write_text('{"text": "' + "é" * 5000 + '"}\n', encoding="utf-8")
    extract_files([path], "jsonl", shard_dir)
    pieces = list(sentence_iterator(shard_dir, max_sentences=10, max_sentence_length=1001))
    assert all(len(piece.encode("utf-8")) <= 1001 for piece in pieces)
    assert [len(piece) for piece in pieces] == [500] * 10  # 1000 bytes each: never half a character
    assert "".join(pieces) == "é" * 5000


def test_errors_name_the_problem(docs_dir, tmp_path):
    with pytest.raises(DataToolsError, match="vocab size 100 is too small: at least 263"):
        train_tokenizer(docs_dir, tmp_path / "t", 100)
    with pytest.raises(DataToolsError, match="model type 'wordpiece' is not supported; use one of bpe, unigram"):
        train_tokenizer(docs_dir, tmp_path / "t", 2000, model_type="wordpiece")
    with pytest.raises(DataToolsError, match="could not train .*Vocabulary size"):
        train_tokenizer(docs_dir, tmp_path / "t", 1_000_000)
    with pytest.raises(DataToolsError, match="no \\*.parquet document shards in"):
        train_tokenizer(tmp_path, tmp_path / "t", 2000)
    with pytest.raises(DataToolsError, match="cannot read tokenizer model .*missing.model"):
        Tokenizer(tmp_path / "missing.model")
    (tmp_path / "junk.model").write_bytes(b"not a model")
    with pytest.raises(DataToolsError, match="junk.model is not a sentencepiece model"):
        Tokenizer(tmp_path / "junk.model")
    assert not list(tmp_path.glob("t.*"))  # nothing half-written
