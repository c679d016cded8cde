"""The word path: sentencepiece's own ids for every text, on real multilingual text and corner cases, and stores
byte for byte; models whose settings do not prove it fall back to sentencepiece."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from data_tools.shards import write_shard
from data_tools.sources.base import Document
from data_tools.tokenize_shards import tokenize_shards
from data_tools.tokenizer import train_tokenizer
from roots_core.token_store import TokenizedDocument, TokenStoreWriter, read_manifest
from roots_core.tokenizer import Tokenizer, model_proto
from roots_core.word_encoder import MARKER, WordEncoder, split_words, word_path_allowed

CORNER_CASES = [
    "",
    " ",
    "   ",
    "a",
    "  two leading spaces, trailing spaces   ",
    "tabs\tin\t\tthe middle\t \t",
    "multiple    spaces   between\n\n\nand blank lines\n  \n",
    "\r\nwindows line ends\r\n",
    "digits 0123456789 3.14159 1,000,000 2024-05-18 ４２ ٣",
    "emoji 😀🚀👩‍👩‍👧 🇫🇷 x😀y",
    "中文没有空格的句子，一直写下去。日本語の文章は空白なしで続きます。한국어 문장",
    f"the marker {MARKER} itself {MARKER}{MARKER}x a{MARKER}b {MARKER} {MARKER}",
    "<mask> a<cls>b <sep><sep> <mas k>",
    "private use \ue000\U000f0000 noncharacters \uffff\U0010ffff combining e\u0301 zero\u200bwidth nbsp\u00a0x",
    "w" * 20_000 + " " + "长" * 5_000 + " " + "9" * 3_000,
    " ".join(["supercalifragilisticexpialidocious"] * 300),
]


def cc_net_documents(path: Path) -> list[str]:
    """The bodies of the conversion records of the cc_net WET sample (English, Chinese, Japanese, ... quotes)."""
    records = path.read_text(encoding="utf-8").split("WARC/1.0\n")
    return [record.split("\n\n", 1)[1] for record in records if "WARC-Type: conversion" in record]


@pytest.fixture(scope="module")
def texts(docs_dir, fixture_path) -> list[str]:
    """Real multilingual documents (the cc_net sample, the demo corpus) and the corner cases."""
    demo = [t for p in sorted(docs_dir.glob("*.parquet")) for t in pq.read_table(p).column("text").to_pylist()]
    return cc_net_documents(fixture_path("cc_net_sample.wet.txt")) + demo + CORNER_CASES


@pytest.fixture(scope="module")
def mixed_docs(texts, tmp_path_factory) -> Path:
    """A shard of every text, so the tokenizers trained on it hold CJK, emoji and whitespace-run pieces."""
    output = tmp_path_factory.mktemp("mixed")
    write_shard(output / "mixed.parquet", (Document(f"d{i}", t, "test", None) for i, t in enumerate(texts)))
    return output


@pytest.fixture(scope="module", params=["bpe", "unigram"])
def tokenizer(request, mixed_docs, tmp_path_factory) -> Tokenizer:
    """A small tokenizer of each model type, trained as `roots-data train-tokenizer` trains."""
    return Tokenizer(train_tokenizer(mixed_docs, tmp_path_factory.mktemp(request.param) / "spm", 1200, request.param))


def test_words_are_cut_before_a_space_that_follows_another_character():
    assert split_words(" x  y\tz ") == [" x", "  y\tz", " "]
    assert split_words(f"a  b{MARKER}c \t{MARKER} d ") == ["a", "  b", f"{MARKER}c", " \t", f"{MARKER} d", " "]
    assert split_words("") == []


def test_no_piece_crosses_a_word_boundary(tokenizer, texts):
    """The claim the word path rests on, checked on the pieces sentencepiece actually produces."""
    processor = tokenizer._sp
    for text in texts:
        pieces = processor.encode(text, out_type=str)
        # Each piece starts at a cut or inside a word, never runs from a non-space into a space.
        assert not any(re.search(f"[^{MARKER}]{MARKER}", piece) for piece in pieces)
        assert "".join(split_words(text)) == text


def test_the_trained_settings_allow_the_word_path_for_bpe_only(tokenizer):
    proto = model_proto(tokenizer.path.read_bytes())
    assert tokenizer.word_path == (proto.trainer_spec.model_type == proto.trainer_spec.BPE)
    assert tokenizer.word_path == word_path_allowed(proto)


def test_ids_are_sentencepiece_s_own(tokenizer, texts):
    expected = [tokenizer.encode(text) for text in texts]
    batched = tokenizer.encode_batch(texts)
    assert [ids.tolist() for ids in batched] == expected
    assert all(ids.dtype == np.int32 for ids in batched)
    again = tokenizer.encode_batch(list(reversed(texts)), num_threads=2)  # every word now cached
    assert [ids.tolist() for ids in again] == expected[::-1]
    assert tokenizer.encode_batch([]) == []


@pytest.mark.parametrize("tokenizer", ["bpe"], indirect=True)  # the only model type the word path is used for
@pytest.mark.parametrize("bounds", [{"max_cached_tokens": 50}, {"max_cached_words": 20}])
def test_a_full_cache_starts_over_with_the_same_ids(tokenizer, texts, bounds):
    encoder = WordEncoder(tokenizer._sp, **bounds)
    for start in range(0, len(texts), 3):
        batch = texts[start:start + 3]
        assert [ids.tolist() for ids in encoder.encode_batch(batch)] == [tokenizer.encode(t) for t in batch]
    last = texts[3 * ((len(texts) - 1) // 3):]  # the last batch: all the cache may hold beyond its bound
    held = {"max_cached_tokens": encoder._used, "max_cached_words": len(encoder._index)}
    most = {"max_cached_tokens": sum(len(tokenizer.encode(t)) for t in last),
            "max_cached_words": sum(len(split_words(t)) for t in last)}
    (name, bound), = bounds.items()
    assert held[name] <= bound + most[name] < sum(len(tokenizer.encode(t)) for t in texts)


def test_lone_surrogates_are_refused_as_sentencepiece_refuses_them(tokenizer):
    with pytest.raises(TypeError):
        tokenizer.encode_batch_reference(["a \udc80 b"])
    with pytest.raises(TypeError):
        tokenizer.encode_batch(["a \udc80 b"])


@pytest.mark.parametrize("change", ["add_dummy_prefix", "remove_extra_whitespaces", "unigram", "piece with inner ▁"])
def test_other_settings_fall_back_to_sentencepiece(tokenizer_model, tmp_path, change):
    proto = model_proto(tokenizer_model.read_bytes())
    assert word_path_allowed(proto)
    if change == "unigram":
        proto.trainer_spec.model_type = proto.trainer_spec.UNIGRAM
    elif change == "piece with inner ▁":
        proto.pieces[-1].piece = f"a{MARKER}b"
    else:
        setattr(proto.normalizer_spec, change, True)
    assert not word_path_allowed(proto)
    path = tmp_path / "changed.model"
    path.write_bytes(proto.SerializeToString())
    changed = Tokenizer(path)
    assert not changed.word_path
    text = f"  some text{MARKER}with   a{MARKER}b spaces "
    assert changed.encode_batch([text])[0].tolist() == changed.encode(text)


def test_store_is_byte_for_byte_the_sentencepiece_store(mixed_docs, tokenizer, tmp_path):
    store = tmp_path / "store"
    manifest = tokenize_shards(mixed_docs, tokenizer.path, store).manifest
    table = pq.read_table(mixed_docs / "mixed.parquet")
    reference = TokenStoreWriter(tmp_path / "reference", tokenizer.vocab_size, tokenizer.special_tokens,
                                 str(tokenizer.path.resolve()), tokenizer.fingerprint)
    (tmp_path / "reference").mkdir()
    entry = reference.write_file("mixed", map(
        TokenizedDocument, tokenizer.encode_batch_reference(table.column("text").to_pylist()),
        *(table.column(name).to_pylist() for name in ("id", "source", "lang"))))
    assert (store / "mixed.arrow").read_bytes() == (tmp_path / "reference" / "mixed.arrow").read_bytes()
    assert manifest["files"] == [entry] == read_manifest(store)["files"]
