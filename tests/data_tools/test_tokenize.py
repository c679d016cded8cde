"""The tokenize stage: shards → token store, identical bytes whatever the workers or slices, resumable, one tokenizer."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from data_tools.errors import DataToolsError
from roots_core.errors import TokenizerError
from data_tools.tokenize_shards import tokenize_shards
from data_tools.tokenizer import train_tokenizer
from roots_core.tokenizer import Tokenizer
from roots_core.token_store import TokenStore, verify_store

STORE_FILES = ["demo.warc.arrow", "demowiki-pages-articles.xml.arrow", "manifest.json"]


def visible(directory: Path) -> dict[str, bytes]:
    """The store's files (not the hidden bookkeeping), by name."""
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir()) if p.suffix in (".arrow", ".json")
            and not p.name.startswith(".") and p.name != "stats.json"}


@pytest.fixture(scope="module")
def other_tokenizer(docs_dir, tmp_path_factory) -> Path:
    """A second, different tokenizer (another vocabulary size)."""
    return train_tokenizer(docs_dir, tmp_path_factory.mktemp("other") / "other", 1000)


def test_workers_and_slices_do_not_change_a_byte(docs_dir, tokenizer_model, store_dir, tmp_path):
    expected = visible(store_dir)
    assert sorted(expected) == STORE_FILES
    parallel = tmp_path / "parallel"
    tokenize_shards(docs_dir, tokenizer_model, parallel, num_workers=2)
    assert visible(parallel) == expected
    sliced = tmp_path / "sliced"
    first = tokenize_shards(docs_dir, tokenizer_model, sliced, shard_index=1, num_shards=2)
    assert first.manifest is None and first.missing == ["demo.warc"] and first.stage.ran == 1
    assert not (sliced / "manifest.json").exists()
    second = tokenize_shards(docs_dir, tokenizer_model, sliced, shard_index=0, num_shards=2)
    assert second.missing == [] and second.manifest == json.loads(expected["manifest.json"])
    assert visible(sliced) == expected


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
    assert verify_store(store_dir) == []


def test_stats_count_text_in_and_file_bytes_out(docs_dir, tokenizer_model, store_dir, tmp_path):
    report = tokenize_shards(docs_dir, tokenizer_model, tmp_path / "s")
    totals = report.stage.totals
    texts = [t for p in sorted(docs_dir.glob("*.parquet")) for t in pq.read_table(p).column("text").to_pylist()]
    assert (totals.documents_in, totals.documents_out) == (68, 68)
    assert totals.bytes_in == sum(len(t.encode("utf-8")) for t in texts)
    assert totals.bytes_out == sum((store_dir / name).stat().st_size for name in STORE_FILES[:2])
    assert totals.by_source == {"commoncrawl": {"in": 34, "out": 34}, "wikipedia": {"in": 34, "out": 34}}
    assert totals.by_language == {"und": {"in": 68, "out": 68}}
    assert json.loads((tmp_path / "s" / "stats.json").read_text())["stage"] == "tokenize"


def test_a_rerun_after_a_kill_redoes_only_the_unfinished_shard(docs_dir, tokenizer_model, store_dir, tmp_path):
    store = tmp_path / "store"
    tokenize_shards(docs_dir, tokenizer_model, store)
    # Killed while writing the wiki shard: its file is there but truncated, with no entry or stats sidecar.
    wiki = store / "demowiki-pages-articles.xml.arrow"
    wiki.write_bytes(wiki.read_bytes()[:1000])
    for sidecar in (".entries", ".stats"):
        (store / sidecar / "demowiki-pages-articles.xml.json").unlink()
    (store / "manifest.json").unlink()
    again = tokenize_shards(docs_dir, tokenizer_model, store)
    assert (again.stage.ran, again.stage.reused) == (1, 1)
    assert visible(store) == visible(store_dir)
    finished = tokenize_shards(docs_dir, tokenizer_model, store)
    assert (finished.stage.ran, finished.stage.reused) == (0, 2) and finished.manifest is not None
    assert tokenize_shards(docs_dir, tokenizer_model, store, overwrite=True).stage.ran == 2


def test_another_tokenizer_is_refused_unless_overwrite(docs_dir, tokenizer_model, other_tokenizer, tmp_path):
    store = tmp_path / "store"
    tokenize_shards(docs_dir, tokenizer_model, store)
    with pytest.raises(DataToolsError, match=f"made with tokenizer {tokenizer_model.resolve()} .*not "
                                             f"{other_tokenizer.resolve()} .*--overwrite to retokenize"):
        tokenize_shards(docs_dir, other_tokenizer, store)
    assert json.loads((store / "manifest.json").read_text())["vocab_size"] == 2000  # untouched
    # Overwrite on one slice of an array: the other slice's old files are no longer complete.
    partial = tokenize_shards(docs_dir, other_tokenizer, store, shard_index=0, num_shards=2, overwrite=True)
    assert partial.manifest is None and partial.missing == ["demowiki-pages-articles.xml"]
    assert not (store / "manifest.json").exists()
    rest = tokenize_shards(docs_dir, other_tokenizer, store, shard_index=1, num_shards=2)
    assert rest.stage.ran == 1 and rest.manifest is not None
    assert rest.manifest["tokenizer"]["fingerprint"] == Tokenizer(other_tokenizer).fingerprint
    assert rest.manifest["vocab_size"] == 1000 and verify_store(store) == []


def test_errors_are_named(docs_dir, tokenizer_model, tmp_path):
    with pytest.raises(DataToolsError, match="--num-workers 0 is invalid: it must be at least 1"):
        tokenize_shards(docs_dir, tokenizer_model, tmp_path / "w", num_workers=0)
    with pytest.raises(DataToolsError, match="--shard-index 2 --num-shards 2 is invalid"):
        tokenize_shards(docs_dir, tokenizer_model, tmp_path / "s", shard_index=2, num_shards=2)
    with pytest.raises(TokenizerError, match="cannot read tokenizer model"):
        tokenize_shards(docs_dir, tmp_path / "none.model", tmp_path / "s")
    with pytest.raises(DataToolsError, match="no \\*.parquet document shards in"):
        tokenize_shards(tmp_path, tokenizer_model, tmp_path / "s")
    assert not (tmp_path / "s").exists()
    corrupt = tmp_path / "corrupt"
    shutil.copytree(docs_dir, corrupt)
    (corrupt / "demo.warc.parquet").write_bytes(b"not parquet")
    with pytest.raises(DataToolsError, match="demo.warc.parquet is not a readable Parquet file"):
        tokenize_shards(corrupt, tokenizer_model, tmp_path / "c")
    assert not list((tmp_path / "c").glob("*.arrow"))
