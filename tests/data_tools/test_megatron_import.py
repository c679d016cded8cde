"""Importing Megatron-LM / GPT-NeoX indexed datasets: documents, eod stripping, fingerprints, every corruption named."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from data_tools.cli import main
from data_tools.errors import DataToolsError
from data_tools.megatron_import import import_megatron
from roots_core.tokenizer import Tokenizer
from roots_core.token_store import TokenStore, verify_store

# A document is a list of sequences; the third has no sequence at all, the fourth an empty one.
DOCUMENTS = [[[5, 6, 7, 9]], [[10, 11], [12], [13, 14, 9]], [], [[]], [[1, 9, 2]]]


def write_megatron(prefix: Path, documents: list[list[list[int]]], dtype: str = "<u2", code: int = 8,
                   magic: bytes = b"MMIDIDX\x00\x00", version: int = 1, **override: np.ndarray) -> None:
    """Write PREFIX.bin/.idx in the Megatron layout; `override` replaces an index array (to corrupt it)."""
    sequences = [sequence for document in documents for sequence in document]
    lengths = np.array([len(s) for s in sequences], dtype="<i4")
    itemsize = np.dtype(dtype).itemsize
    pointers = np.concatenate([[0], np.cumsum(lengths[:-1], dtype="<i8") * itemsize]).astype("<i8")[: len(lengths)]
    boundaries = np.cumsum([0] + [len(d) for d in documents]).astype("<i8")
    arrays = {"lengths": lengths, "pointers": pointers, "boundaries": boundaries, **override}
    Path(f"{prefix}.bin").write_bytes(b"".join(np.array(s, dtype=dtype).tobytes() for s in sequences))
    header = magic + struct.pack("<Q", version) + struct.pack("<B", code)
    header += struct.pack("<Q", len(arrays["lengths"])) + struct.pack("<Q", len(arrays["boundaries"]))
    body = (arrays["lengths"].astype("<i4").tobytes() + arrays["pointers"].astype("<i8").tobytes()
            + arrays["boundaries"].astype("<i8").tobytes())
    Path(f"{prefix}.idx").write_bytes(header + body)


def test_documents_are_their_sequences_concatenated(tmp_path):
    prefix = tmp_path / "corpus_text_document"
    write_megatron(prefix, DOCUMENTS)
    manifest = import_megatron(prefix, tmp_path / "store", vocab_size=100, eod_id=9)
    store = TokenStore(tmp_path / "store", verify=True)
    expected = [[t for sequence in document for t in sequence] for document in DOCUMENTS]
    assert [store[i].tolist() for i in range(len(store))] == expected
    assert store.dtype == np.uint16 and store.special_tokens == {"pad": 0, "unk": 1, "eod": 9, "mask": 3, "cls": 4,
                                                                 "sep": 5}
    entry = manifest["files"][0]
    assert entry["name"] == "corpus_text_document.arrow"
    assert entry["documents_per_source"] == {"corpus_text_document": 5}
    assert manifest["tokenizer"]["path"] == str(Path(f"{prefix}.idx").resolve())
    assert verify_store(tmp_path / "store") == []
    again = import_megatron(prefix, tmp_path / "again", vocab_size=100, eod_id=9)
    assert again["tokenizer"]["fingerprint"] == manifest["tokenizer"]["fingerprint"]
    other = import_megatron(prefix, tmp_path / "other", vocab_size=100, eod_id=13)
    assert other["tokenizer"]["fingerprint"] != manifest["tokenizer"]["fingerprint"]


def test_strip_eod_removes_only_a_trailing_eod(tmp_path):
    prefix = tmp_path / "d"
    write_megatron(prefix, DOCUMENTS)
    import_megatron(prefix, tmp_path / "store", vocab_size=100, eod_id=9, strip_eod=True)
    store = TokenStore(tmp_path / "store")
    assert [store[i].tolist() for i in range(len(store))] == [[5, 6, 7], [10, 11, 12, 13, 14], [], [], [1, 9, 2]]


def test_wide_ids_are_stored_as_uint32(tmp_path):
    prefix = tmp_path / "wide"
    write_megatron(prefix, [[[70_000, 3]], [[65_535], [99_999]]], dtype="<i4", code=4)
    import_megatron(prefix, tmp_path / "store", vocab_size=100_000)
    store = TokenStore(tmp_path / "store")
    assert store.dtype == np.uint32 and store[1].tolist() == [65_535, 99_999]


def test_with_the_tokenizer_the_text_comes_back(docs_dir, tokenizer_model, tmp_path):
    tokenizer = Tokenizer(tokenizer_model)
    texts = pq.read_table(min(docs_dir.glob("*.parquet")), columns=["text"]).column("text").to_pylist()[:5]
    # Megatron's preprocess_data appends eod to each document; split each into two sequences.
    documents = [[ids[: len(ids) // 2], ids[len(ids) // 2 :] + [2]] for ids in map(tokenizer.encode, texts)]
    prefix = tmp_path / "demo"
    write_megatron(prefix, documents)
    manifest = import_megatron(prefix, tmp_path / "store", tokenizer_path=tokenizer_model, strip_eod=True)
    store = TokenStore(tmp_path / "store")
    assert [tokenizer.decode(store[i]) for i in range(len(store))] == texts
    assert manifest["tokenizer"] == {"path": str(tokenizer_model.resolve()), "fingerprint": tokenizer.fingerprint}
    with pytest.raises(DataToolsError, match="--eod-id 7 differs from tokenizer .*'s eod id 2"):
        import_megatron(prefix, tmp_path / "x", tokenizer_path=tokenizer_model, eod_id=7)


GOOD = [[[1, 2]], [[3], [4, 5]]]  # pointers 0, 4, 6; boundaries 0, 1, 3
CORRUPTIONS = [  # (what is wrong, write_megatron options, the message it must give)
    ("magic", {"magic": b"MMIDIDX\x00\x01"}, r"magic is b'MMIDIDX\\x00\\x01'; a Megatron index starts with"),
    ("version", {"version": 2}, "version is 2; only version 1 is supported"),
    ("dtype code", {"code": 9}, "dtype code is 9; valid codes are 1 uint8, 2 int8, 3 int16, 4 int32, 5 int64, 8 uint16"),
    ("float dtype", {"code": 7, "dtype": "<f4"}, r"dtype code is 7 \(float32\): floats are not token ids"),
    ("counts", {"lengths": np.array([2, 1, 2, 0])}, "sequence count 4 and document count 3 need 106 bytes; the file "),
    ("negative length", {"lengths": np.array([2, -1, 2])}, r"sequence_lengths\[1\] is -1; lengths must be ≥ 0"),
    ("pointer past the end", {"pointers": np.array([0, 4, 8])}, r"sequence_pointers\[2\] is 8 .* within .*\(10 bytes\)"),
    ("misaligned pointer", {"pointers": np.array([0, 3, 6])}, r"sequence_pointers\[1\] is 3 .*a multiple of 2"),
    ("negative pointer", {"pointers": np.array([0, -2, 6])}, r"sequence_pointers\[1\] is -2 for a sequence of 1 uint16"),
    ("first boundary", {"boundaries": np.array([1, 1, 3])}, r"document_indices\[0\] is 1; it must be 0"),
    ("last boundary", {"boundaries": np.array([0, 1, 2])}, r"document_indices\[2\] is 2; .* the sequence count 3"),
    ("decreasing", {"boundaries": np.array([0, 2, 1, 3])}, r"document_indices\[2\] is 1, below document_indices\[1\]"),
]


@pytest.mark.parametrize(("options", "message"), [pytest.param(o, m, id=i) for i, o, m in CORRUPTIONS])
def test_corrupt_index_is_named(tmp_path, options, message):
    prefix = tmp_path / "bad"
    write_megatron(prefix, GOOD, **options)
    with pytest.raises(DataToolsError, match=message) as error:
        import_megatron(prefix, tmp_path / "store", vocab_size=100)
    assert str(error.value).startswith(f"{prefix}.idx: ")
    assert not (tmp_path / "store").exists()


def test_bad_ids_files_and_options_are_named(tmp_path):
    prefix = tmp_path / "d"
    write_megatron(prefix, [[[1, 2]], [[3], [4, 100]]])
    with pytest.raises(DataToolsError, match=rf"{prefix}.bin: document 1 \(sequences 1..2\) has token id 100; "
                                             r"valid ids are 0..99 \(vocab size 100\)"):
        import_megatron(prefix, tmp_path / "store", vocab_size=100)
    assert not list((tmp_path / "store").glob("*"))  # the file is written atomically: nothing half-written
    write_megatron(prefix, [[[1, -3]]], dtype="<i2", code=3)
    with pytest.raises(DataToolsError, match="document 0 .* has token id -3"):
        import_megatron(prefix, tmp_path / "store", vocab_size=100)
    Path(f"{prefix}.idx").write_bytes(b"MMIDIDX")
    with pytest.raises(DataToolsError, match=r"d.idx is 7 bytes, shorter than the 34-byte header \(truncated\?\)"):
        import_megatron(prefix, tmp_path / "store", vocab_size=100)
    with pytest.raises(DataToolsError, match=r"Megatron data file .*missing.bin not found"):
        import_megatron(tmp_path / "missing", tmp_path / "store", vocab_size=100)
    write_megatron(prefix, GOOD)
    with pytest.raises(DataToolsError, match="--strip-eod with --vocab-size needs --eod-id"):
        import_megatron(prefix, tmp_path / "store", vocab_size=100, strip_eod=True)
    with pytest.raises(DataToolsError, match=r"--vocab-size 100 does not hold special ids \{'eod': 100\}"):
        import_megatron(prefix, tmp_path / "store", vocab_size=100, eod_id=100)
    with pytest.raises(DataToolsError, match="exactly one of --tokenizer .* or --vocab-size"):
        import_megatron(prefix, tmp_path / "store")


def test_cli(tmp_path, capsys):
    prefix = tmp_path / "d"
    write_megatron(prefix, DOCUMENTS)
    store = tmp_path / "store"
    assert main(["import-megatron", str(prefix), "--output", str(store), "--vocab-size", "100", "--eod-id", "9",
                 "--strip-eod"]) == 0
    assert f"{store}: imported 5 documents, 11 tokens (uint16) from {prefix}.bin/.idx" in capsys.readouterr().out
    assert main(["verify", str(store)]) == 0
    assert main(["import-megatron", str(tmp_path / "nope"), "--output", str(store), "--vocab-size", "100"]) == 2
    assert "roots-data import-megatron: error: Megatron data file" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["import-megatron", str(prefix), "--output", str(store)])
    assert "one of the arguments --tokenizer --vocab-size is required" in capsys.readouterr().err
