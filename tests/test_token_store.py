"""The token store format: writer and reader round trip, zero-copy access, and clear errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import datasets
import numpy as np
import pyarrow as pa
import pytest

from roots_core.token_store import (
    TokenizedDocument,
    TokenStore,
    TokenStoreError,
    TokenStoreWriter,
    dataset_fingerprint,
    verify_store,
)
from store_helpers import write_random_store

SPECIAL = {"pad": 0, "unk": 1, "eod": 2, "mask": 3, "cls": 4, "sep": 5}
RNG = np.random.default_rng(0)
# Three shards; lengths include empty documents; batch size 4 puts batch boundaries mid-shard.
SHARDS = {
    "a": [RNG.integers(0, 1000, size=n) for n in (5, 0, 17, 3, 1, 8, 2)],
    "b": [RNG.integers(0, 1000, size=n) for n in (4, 4, 4, 4)],
    "c": [RNG.integers(0, 1000, size=n) for n in (30,)],
}
ALL_DOCS = [doc for name in sorted(SHARDS) for doc in SHARDS[name]]


def write_store(directory: Path, vocab_size: int = 1000, shards: dict | None = None) -> dict:
    """Write SHARDS (or `shards`) as a store; return the manifest."""
    writer = TokenStoreWriter(directory, vocab_size, SPECIAL, "/tok/demo.model", "f" * 64, batch_documents=4)
    entries = []
    for name, docs in (shards or SHARDS).items():
        documents = [
            TokenizedDocument(ids, f"{name}-{i}", "wikipedia" if i % 2 else "commoncrawl", "en" if i % 3 else None)
            for i, ids in enumerate(docs)
        ]
        entries.append(writer.write_file(name, documents))
    return writer.write_manifest(entries)


@pytest.fixture
def store_path(tmp_path) -> Path:
    write_store(tmp_path / "store")
    return tmp_path / "store"


def test_documents_round_trip(store_path):
    store = TokenStore(store_path)
    assert len(store) == len(ALL_DOCS) == 12
    for i, expected in enumerate(ALL_DOCS):
        assert np.array_equal(store[i], expected)
        assert store[i].dtype == np.uint16
    assert np.array_equal(store[-1], ALL_DOCS[-1])
    assert np.array_equal(store[np.int64(2)], ALL_DOCS[2])
    assert store.num_tokens == sum(len(d) for d in ALL_DOCS)
    assert store.document_lengths.dtype == np.int64
    assert store.document_lengths.tolist() == [len(d) for d in ALL_DOCS]
    with pytest.raises(IndexError, match="document index 12 is out of range for a store of 12 documents"):
        store[12]
    with pytest.raises(IndexError):
        store[-13]


def test_access_is_zero_copy_and_open_reads_no_values(store_path):
    allocated = pa.total_allocated_bytes()
    store = TokenStore(store_path)
    assert pa.total_allocated_bytes() == allocated  # nothing read into Arrow's memory pool
    document = store[2]
    assert document.flags.owndata is False and document.flags.writeable is False
    assert np.shares_memory(document, store[2])  # both views of the same mapped bytes, not copies
    assert pa.total_allocated_bytes() == allocated


def test_manifest_contents(store_path):
    manifest = TokenStore(store_path).manifest
    assert manifest["format_version"] == 1 and manifest["dtype"] == "uint16" and manifest["vocab_size"] == 1000
    assert manifest["special_tokens"] == SPECIAL
    assert [f["name"] for f in manifest["files"]] == ["a.arrow", "b.arrow", "c.arrow"]
    a = manifest["files"][0]
    assert a["num_documents"] == 7 and a["num_tokens"] == 36
    assert a["documents_per_source"] == {"commoncrawl": 4, "wikipedia": 3}
    assert a["documents_per_language"] == {"en": 4, "und": 3}
    assert a["size_bytes"] == (store_path / "a.arrow").stat().st_size
    assert manifest["num_documents"] == 12 and manifest["num_tokens"] == sum(len(d) for d in ALL_DOCS)
    assert manifest["fingerprint"] == dataset_fingerprint(manifest["files"], "f" * 64, "uint16")
    assert TokenStore(store_path).fingerprint == manifest["fingerprint"]
    assert verify_store(store_path) == []


def test_writing_is_deterministic_and_fingerprint_tracks_content(tmp_path):
    first, second = write_store(tmp_path / "one"), write_store(tmp_path / "two")
    for name in ("a.arrow", "b.arrow", "c.arrow"):
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes()
    assert first["fingerprint"] == second["fingerprint"]
    changed = write_store(tmp_path / "three", shards={**SHARDS, "c": [np.arange(30)]})
    assert changed["fingerprint"] != first["fingerprint"]


def test_opens_with_hugging_face_datasets(store_path):
    dataset = datasets.Dataset.from_file(str(store_path / "a.arrow"))
    assert dataset.num_rows == 7
    assert dataset.column_names == ["input_ids", "id", "source", "lang"]
    assert dataset[2]["input_ids"] == SHARDS["a"][2].tolist()
    assert dataset[0]["id"] == "a-0" and dataset[0]["lang"] is None


def test_large_vocabulary_uses_uint32(tmp_path):
    write_store(tmp_path / "big", vocab_size=70_000, shards={"x": [np.array([0, 65_535, 69_999])]})
    store = TokenStore(tmp_path / "big", verify=True)
    assert store.dtype == np.uint32 and store[0].tolist() == [0, 65_535, 69_999]


def test_out_of_range_id_is_refused(tmp_path):
    with pytest.raises(TokenStoreError, match="document 'x-0' .* has token id 1000; valid ids are 0..999"):
        write_store(tmp_path / "bad", shards={"x": [np.array([1, 1000])]})
    assert not list((tmp_path / "bad").iterdir())  # no file left behind


def test_missing_manifest(tmp_path):
    with pytest.raises(TokenStoreError, match="manifest.json not found: .* is not a token store"):
        TokenStore(tmp_path)


def test_missing_file(store_path):
    (store_path / "b.arrow").unlink()
    with pytest.raises(TokenStoreError, match="b.arrow is listed in the manifest but does not exist"):
        TokenStore(store_path)
    assert any("b.arrow is listed in the manifest but does not exist" in p for p in verify_store(store_path))


def test_truncated_file(store_path):
    path = store_path / "a.arrow"
    size = path.stat().st_size
    path.write_bytes(path.read_bytes()[: size - 100])
    with pytest.raises(TokenStoreError, match=f"a.arrow is {size - 100} bytes; the manifest expects {size}"):
        TokenStore(store_path)


def test_truncated_file_with_matching_manifest_size(store_path):
    # Even if the manifest were rewritten to match, the stream itself is incomplete.
    path = store_path / "a.arrow"
    path.write_bytes(path.read_bytes()[:-200])
    manifest = json.loads((store_path / "manifest.json").read_text())
    manifest["files"][0]["size_bytes"] = path.stat().st_size
    (store_path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(TokenStoreError, match=r"a.arrow is not a readable Arrow IPC stream \(truncated or corrupt\?\)"):
        TokenStore(store_path)


def test_checksum_mismatch_only_with_verify(store_path):
    path = store_path / "c.arrow"
    data = bytearray(path.read_bytes())
    data[-20] ^= 0x01  # inside the last token values: same size, same counts
    path.write_bytes(bytes(data))
    TokenStore(store_path)  # the cheap checks pass
    with pytest.raises(TokenStoreError, match="c.arrow has sha256 [0-9a-f]{64}; the manifest expects"):
        TokenStore(store_path, verify=True)
    (problem,) = verify_store(store_path)
    assert "c.arrow has sha256" in problem


def test_manifest_errors_name_the_key(store_path):
    manifest = json.loads((store_path / "manifest.json").read_text())
    del manifest["files"][1]["sha256"]
    (store_path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(TokenStoreError, match=r"files\[1\] lacks key\(s\) \['sha256'\]"):
        TokenStore(store_path)
    manifest["files"][1]["sha256"] = "0" * 64
    manifest["dtype"] = "int8"
    (store_path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(TokenStoreError, match="dtype 'int8'; valid: uint16, uint32"):
        TokenStore(store_path)


def test_verify_catches_count_mismatch_and_unlisted_files(store_path, tmp_path):
    manifest = json.loads((store_path / "manifest.json").read_text())
    manifest["files"][1]["num_tokens"] += 1
    (store_path / "manifest.json").write_text(json.dumps(manifest))
    shutil.copy(store_path / "a.arrow", store_path / "stray.arrow")
    problems = verify_store(store_path)
    assert any("b.arrow holds 4 documents / 16 tokens; the manifest says 4 / 17" in p for p in problems)
    assert any("stray.arrow is not listed in the manifest" in p for p in problems)
    with pytest.raises(TokenStoreError, match="b.arrow holds 4 documents / 16 tokens"):
        TokenStore(store_path)


def test_verify_flags_a_store_without_documents(tmp_path):
    empty = write_random_store(tmp_path / "empty", num_documents=0, files=1)
    (problem,) = verify_store(empty)
    assert problem.startswith(f"{empty} holds no documents")
