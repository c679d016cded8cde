"""The tokenizer: lossless round trips, fixed special ids, deterministic balanced samples and training, clear errors."""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from data_tools.errors import DataToolsError
from roots_core.errors import TokenizerError
from data_tools.extract import extract_files
from data_tools.shards import write_shard
from data_tools.sources.base import Document
from data_tools.tokenizer import parse_proportions, sample_sentences, train_tokenizer
from roots_core.tokenizer import SPECIAL_TOKENS, Tokenizer

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


def test_sample_caps_and_is_deterministic(docs_dir):
    everything = sample_sentences(docs_dir, max_sentences=10**9).sentences
    assert everything and all(line.strip() and "\n" not in line for line in everything)
    sample = sample_sentences(docs_dir, max_sentences=100)
    assert len(sample.sentences) == 100
    assert sample.used == {"all": 100} and sample.available == {"all": len(everything)}
    assert sample == sample_sentences(docs_dir, max_sentences=100)
    assert set(sample.sentences) <= set(everything)
    assert sample.sentences != everything[:100]  # a sample over the whole corpus, not its head


def test_long_lines_are_cut_between_characters(tmp_path):
    shard_dir = tmp_path / "docs"
    path = tmp_path / "long.jsonl"
    path.write_text('{"text": "' + "é" * 5000 + '"}\n', encoding="utf-8")
    extract_files([path], "jsonl", shard_dir)
    pieces = sample_sentences(shard_dir, max_sentences=10, max_sentence_length=1001).sentences
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
    with pytest.raises(TokenizerError, match="cannot read tokenizer model .*missing.model"):
        Tokenizer(tmp_path / "missing.model")
    (tmp_path / "junk.model").write_bytes(b"not a model")
    with pytest.raises(TokenizerError, match="junk.model is not a sentencepiece model"):
        Tokenizer(tmp_path / "junk.model")
    assert not list(tmp_path.glob("t.*"))  # nothing half-written


@pytest.fixture(scope="module")
def mixed_dir(tmp_path_factory) -> Path:
    """Two sources of one-line documents: 200 'web' lines (en and fr alternating), 20 'wiki' lines (no language)."""
    directory = tmp_path_factory.mktemp("mixed")
    write_shard(directory / "a.parquet",
                (Document(f"w{i}", f"web line {i}", "web", None, ("en", "fr")[i % 2]) for i in range(200)))
    write_shard(directory / "b.parquet", (Document(f"k{i}", f"wiki line {i}", "wiki", None) for i in range(20)))
    return directory


def corpus_order(sentences: list[str]) -> list[str]:
    """The mixed corpus's sentences sorted as the shards hold them."""
    return sorted(sentences, key=lambda s: (s.startswith("wiki"), int(s.rsplit(" ", 1)[1])))


def test_natural_proportions_by_source(mixed_dir):
    sample = sample_sentences(mixed_dir, max_sentences=110, balance_by="source")
    assert sample.used == {"web": 100, "wiki": 10} and sample.available == {"web": 200, "wiki": 20}
    assert sample.sentences == corpus_order(sample.sentences)
    assert sum(s.startswith("wiki") for s in sample.sentences) == 10
    assert len(set(sample.sentences)) == 110


def test_temperature_flattens_and_rounds_by_largest_remainder(mixed_dir):
    # weights ∝ size^(1/2): 14.14 : 4.47 → 37.98 : 12.02 of 50 → 38 : 12
    assert sample_sentences(mixed_dir, 50, "source", temperature=2).used == {"web": 38, "wiki": 12}
    # nearly uniform: wiki's 55 would exceed its 20 lines, so web takes the shortfall and the sample keeps its size
    assert sample_sentences(mixed_dir, 110, "source", temperature=1000).used == {"web": 90, "wiki": 20}
    assert sample_sentences(mixed_dir, 10**6, "source", temperature=3).used == {"web": 200, "wiki": 20}


def test_proportions_by_language(mixed_dir):
    sample = sample_sentences(mixed_dir, 40, "lang", proportions={"en": 1, "fr": 1, "und": 2})
    assert sample.used == {"en": 10, "fr": 10, "und": 20}
    assert sample.available == {"en": 100, "fr": 100, "und": 20}
    numbers = [int(s.rsplit(" ", 1)[1]) for s in sample.sentences if s.startswith("web")]
    assert sum(n % 2 == 0 for n in numbers) == 10  # the en lines are the even ones
    excluded = sample_sentences(mixed_dir, 40, "source", proportions={"web": 1, "wiki": 0})
    assert excluded.used == {"web": 40, "wiki": 0}


def test_balanced_sample_is_deterministic_per_seed(mixed_dir):
    first = sample_sentences(mixed_dir, 30, "source", temperature=2)
    assert first == sample_sentences(mixed_dir, 30, "source", temperature=2)
    other = sample_sentences(mixed_dir, 30, "source", temperature=2, seed=1)
    assert other.used == first.used and other.sentences != first.sentences


def test_balanced_training_reports_the_sample_first(docs_dir, tmp_path):
    reports = []
    path = train_tokenizer(docs_dir, tmp_path / "bal", 500, max_sentences=600, balance_by="source",
                           proportions={"commoncrawl": 1, "wikipedia": 2}, report=reports.append)
    assert [r.used for r in reports] == [{"commoncrawl": 200, "wikipedia": 400}]
    tokenizer = Tokenizer(path)
    assert tokenizer.decode(tokenizer.encode(EDGE_CASES[8])) == EDGE_CASES[8]


def test_balance_errors_name_the_groups(mixed_dir):
    with pytest.raises(DataToolsError, match=r"gives no weight to source group\(s\) wiki; the groups in .* are: "
                                             r"web \(200 lines\), wiki \(20 lines\)"):
        sample_sentences(mixed_dir, 10, "source", proportions={"web": 1})
    with pytest.raises(DataToolsError, match=r"names lang group\(s\) de that .* does not have; .*en \(100 lines\)"):
        sample_sentences(mixed_dir, 10, "lang", proportions={"en": 1, "fr": 1, "und": 1, "de": 1})
    with pytest.raises(DataToolsError, match="gives every source group weight 0"):
        sample_sentences(mixed_dir, 10, "source", proportions={"web": 0, "wiki": 0})
    with pytest.raises(DataToolsError, match="need --balance-by source or lang"):
        sample_sentences(mixed_dir, 10, proportions={"web": 1})
    with pytest.raises(DataToolsError, match="not both"):
        sample_sentences(mixed_dir, 10, "source", proportions={"web": 1, "wiki": 1}, temperature=2)
    with pytest.raises(DataToolsError, match="--temperature must be a positive number, got 0"):
        sample_sentences(mixed_dir, 10, "source", temperature=0)
    with pytest.raises(DataToolsError, match="--balance-by 'url' is not supported; use one of none, source, lang"):
        sample_sentences(mixed_dir, 10, "url")


def test_parse_proportions():
    assert parse_proportions("wikipedia=0.3, commoncrawl=0.7") == {"wikipedia": 0.3, "commoncrawl": 0.7}
    for bad in ("wikipedia", "a=1,a=2", "a=-1", "a=x", "=1", "a=nan"):
        with pytest.raises(argparse.ArgumentTypeError, match="is not a new KEY=WEIGHT pair"):
            parse_proportions(bad)
