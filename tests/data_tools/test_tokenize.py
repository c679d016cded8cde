"""The tokenize stage: shards → token store, identical bytes whatever the number of workers."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from data_tools.errors import DataToolsError
from data_tools.tokenize_shards import tokenize_shards
from data_tools.tokenizer import Tokenizer
from roots_scale.data.token_store import TokenStore


def test_workers_do_not_change_a_byte(docs_dir, tokenizer_model, store_dir, tmp_path):
    parallel = tmp_path / "parallel"
    tokenize_shards(docs_dir, tokenizer_model, parallel, num_workers=2)
    names = sorted(p.name for p in store_dir.iterdir())
    assert names == ["demo.warc.arrow", "demowiki-pages-articles.xml.arrow", "manifest.json"]
    assert sorted(p.name for p in parallel.iterdir()) == names
    for name in names:
        assert (parallel / name).read_bytes() == (store_dir / name).read_bytes(), name


def test_store_holds_every_document_in_shard_order(docs_dir, tokenizer_model, store_dir):
    tokenizer = Tokenizer(tokenizer_model)
    store = TokenStore(store_dir, verify=True)
    shards = [pq.read_table(p) for p in sorted(docs_dir.glob("*.parquet"))]
    texts = [t for table in shards for t in table.column("text").to_pylist()]
    assert len(store) == len(texts) == store.manifest["num_documents"]
    for i in (0, 1, len(texts) // 2, len(texts) - 1):
        assert tokenizer.decode(store[i]) == texts[i]
    assert int(store.document_lengths.sum()) == store.num_tokens == sum(len(tokenizer.encode(t)) for t in texts)
    assert store.dtype == np.uint16 and store.vocab_size == 2000
    assert store.special_tokens == tokenizer.special_tokens
    manifest = json.loads((store_dir / "manifest.json").read_text())
    assert manifest["tokenizer"] == {"path": str(tokenizer_model.resolve()), "fingerprint": tokenizer.fingerprint}
    assert [f["documents_per_source"] for f in manifest["files"]] == [{"commoncrawl": 34}, {"wikipedia": 34}]
    assert [f["documents_per_language"] for f in manifest["files"]] == [{"und": 34}, {"und": 34}]


def test_errors_are_named(docs_dir, tokenizer_model, tmp_path):
    with pytest.raises(DataToolsError, match="--num-workers must be at least 1, got 0"):
        tokenize_shards(docs_dir, tokenizer_model, tmp_path / "s", num_workers=0)
    with pytest.raises(DataToolsError, match="cannot read tokenizer model"):
        tokenize_shards(docs_dir, tmp_path / "none.model", tmp_path / "s")
    assert not (tmp_path / "s").exists()
