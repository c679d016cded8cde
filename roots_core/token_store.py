"""The token store format, writer and reader: tokenized documents in memory-mapped Arrow IPC files.

A store is a directory of Arrow IPC *stream*-layout files (the layout Hugging Face `datasets`
uses, so each opens with `datasets.Dataset.from_file`), one per document shard, with columns
`input_ids: large_list<uint16|uint32>`, `id`, `source`, `lang` (nullable), written in record
batches; and a `manifest.json`, written last, listing every file with its counts and sha256,
the dtype, the tokenizer's fingerprint and special ids, and a fingerprint of the whole dataset.
Documents are stored as their tokens only: no end-of-document token is appended.

The reader maps every file and keeps numpy views of each batch's offsets and values: opening
touches no token values and copies nothing, and `store[i]` is a view into the map.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import json
import operator
import os
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pyarrow as pa

from roots_core.arrow_arrays import numpy_array, string_array
from roots_core.atomic import atomic_path, write_bytes_atomic
from roots_core.errors import TokenStoreError

FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
SUFFIX = ".arrow"
BATCH_DOCUMENTS = 1000
UNKNOWN_LANGUAGE = "und"  # the documents_per_language key for documents whose lang is null
_DTYPES = ("uint16", "uint32")
_MANIFEST_KEYS = ("format_version", "dtype", "vocab_size", "tokenizer", "special_tokens", "files",
                  "num_documents", "num_tokens", "fingerprint")
_FILE_KEYS = ("name", "num_documents", "num_tokens", "sha256", "size_bytes", "documents_per_source",
              "documents_per_language")


class TokenizedDocument(NamedTuple):
    """One document to write: its token ids and the columns carried over from its shard."""

    input_ids: Sequence[int] | np.ndarray
    id: str
    source: str
    lang: str | None


def dtype_for_vocab(vocab_size: int) -> np.dtype:
    """The smallest stored id type for `vocab_size` ids: uint16 up to 65,536 ids, else uint32."""
    if not 0 < vocab_size <= 2**32:
        raise TokenStoreError(f"vocab_size {vocab_size} is invalid: it must be between 1 and 2**32")
    return np.dtype(np.uint16 if vocab_size <= 2**16 else np.uint32)


def schema_for(dtype: np.dtype) -> pa.Schema:
    """The Arrow schema of a store file whose token ids are `dtype`."""
    return pa.schema(
        [
            pa.field("input_ids", pa.large_list(pa.from_numpy_dtype(dtype)), nullable=False),
            pa.field("id", pa.string(), nullable=False),
            pa.field("source", pa.string(), nullable=False),
            pa.field("lang", pa.string()),
        ]
    )


def file_sha256(path: Path) -> str:
    """The sha256 hex digest of the file at `path`, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def dataset_fingerprint(files: list[dict[str, Any]], tokenizer_fingerprint: str, dtype: str) -> str:
    """The identity of a dataset: sha256 over its (name, sha256) pairs by name, tokenizer and dtype."""
    checksums = sorted((entry["name"], entry["sha256"]) for entry in files)
    payload = json.dumps({"files": checksums, "tokenizer": tokenizer_fingerprint, "dtype": dtype}, sort_keys=True)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


class TokenStoreWriter:
    """Writes one store: any number of files (possibly from several processes), then the manifest."""

    def __init__(
        self,
        directory: str | os.PathLike[str],
        vocab_size: int,
        special_tokens: dict[str, int],
        tokenizer_path: str,
        tokenizer_fingerprint: str,
        batch_documents: int = BATCH_DOCUMENTS,
    ) -> None:
        """Describe the store; nothing is written until write_file / write_manifest."""
        if batch_documents < 1:
            raise TokenStoreError(f"batch_documents must be at least 1, got {batch_documents}")
        self.directory = Path(directory)
        self.vocab_size = vocab_size
        self.dtype = dtype_for_vocab(vocab_size)
        self.special_tokens = dict(special_tokens)
        self.tokenizer = {"path": tokenizer_path, "fingerprint": tokenizer_fingerprint}
        self.batch_documents = batch_documents

    def file_path(self, name: str) -> Path:
        """Where the file for shard `name` goes."""
        return self.directory / f"{name}{SUFFIX}"

    def write_file(self, name: str, documents: Iterable[TokenizedDocument]) -> dict[str, Any]:
        """Write `documents` atomically to `<name>.arrow`; return its manifest entry."""
        schema = schema_for(self.dtype)
        per_source: Counter = Counter()
        per_language: Counter = Counter()
        num_documents = num_tokens = 0
        path = self.file_path(name)
        with atomic_path(path) as tmp:
            with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_stream(sink, schema) as stream:
                for chunk in _chunks(documents, self.batch_documents):
                    batch = self._record_batch(chunk, schema, path)
                    stream.write_batch(batch)
                    num_documents += len(chunk)
                    num_tokens += sum(len(document.input_ids) for document in chunk)
                    per_source.update(document.source for document in chunk)
                    per_language.update(document.lang or UNKNOWN_LANGUAGE for document in chunk)
            size, sha256 = tmp.stat().st_size, file_sha256(tmp)
        return {
            "name": path.name,
            "num_documents": num_documents,
            "num_tokens": num_tokens,
            "sha256": sha256,
            "size_bytes": size,
            "documents_per_source": dict(sorted(per_source.items())),
            "documents_per_language": dict(sorted(per_language.items())),
        }

    def _record_batch(self, documents: list[TokenizedDocument], schema: pa.Schema, path: Path) -> pa.RecordBatch:
        """One record batch of `documents`; TokenStoreError if any id is outside [0, vocab_size)."""
        lengths = np.fromiter((len(d.input_ids) for d in documents), dtype=np.int64, count=len(documents))
        offsets = np.zeros(len(documents) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        if offsets[-1] == 0:
            flat = np.zeros(0, dtype=np.int64)
        else:  # one C-level copy whether ids come as numpy arrays or lists
            flat = np.concatenate([np.asarray(d.input_ids, dtype=np.int64) for d in documents])
        bad = np.flatnonzero((flat < 0) | (flat >= self.vocab_size))
        if bad.size:
            document = documents[int(np.searchsorted(offsets, bad[0], side="right")) - 1]
            raise TokenStoreError(
                f"document {document.id!r} for {path} has token id {flat[bad[0]]}; "
                f"valid ids are 0..{self.vocab_size - 1} (vocab_size {self.vocab_size})"
            )
        input_ids = pa.LargeListArray.from_arrays(numpy_array(offsets), numpy_array(flat.astype(self.dtype)))
        columns = [
            input_ids,
            string_array([d.id for d in documents]),
            string_array([d.source for d in documents]),
            string_array([d.lang for d in documents]),
        ]
        return pa.record_batch(columns, schema=schema)

    def write_manifest(self, files: list[dict[str, Any]]) -> dict[str, Any]:
        """Write manifest.json (atomically, last) for `files`, the entries write_file returned."""
        files = sorted(files, key=operator.itemgetter("name"))
        names = [entry["name"] for entry in files]
        if len(set(names)) != len(names):
            raise TokenStoreError(f"manifest for {self.directory} would list a file twice: {names}")
        manifest = {
            "format_version": FORMAT_VERSION,
            "dtype": self.dtype.name,
            "vocab_size": self.vocab_size,
            "tokenizer": self.tokenizer,
            "special_tokens": self.special_tokens,
            "files": files,
            "num_documents": sum(entry["num_documents"] for entry in files),
            "num_tokens": sum(entry["num_tokens"] for entry in files),
            "fingerprint": dataset_fingerprint(files, self.tokenizer["fingerprint"], self.dtype.name),
        }
        text = json.dumps(manifest, indent=2, sort_keys=True) + "\n"
        write_bytes_atomic(self.directory / MANIFEST_NAME, text.encode("utf-8"))
        return manifest


def _chunks(documents: Iterable[TokenizedDocument], size: int) -> Iterable[list[TokenizedDocument]]:
    """Consecutive lists of at most `size` documents."""
    iterator = iter(documents)
    while chunk := list(itertools.islice(iterator, size)):
        yield chunk


def read_manifest(directory: str | os.PathLike[str]) -> dict[str, Any]:
    """Load and structurally check `<directory>/manifest.json`."""
    path = Path(directory) / MANIFEST_NAME
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise TokenStoreError(
            f"{path} not found: {directory} is not a token store (write one with `roots-data tokenize`)"
        ) from exc
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise TokenStoreError(f"{path} is not readable JSON: {exc}") from exc
    if not isinstance(manifest, dict):
        raise TokenStoreError(f"{path} must hold a JSON object, found {type(manifest).__name__}")
    missing = [key for key in _MANIFEST_KEYS if key not in manifest]
    if missing:
        raise TokenStoreError(f"{path} lacks key(s) {missing}; a manifest has {list(_MANIFEST_KEYS)}")
    if manifest["format_version"] != FORMAT_VERSION:
        raise TokenStoreError(
            f"{path} has format_version {manifest['format_version']!r}; this reader reads {FORMAT_VERSION}"
        )
    tokenizer = manifest["tokenizer"]
    if not isinstance(tokenizer, dict) or not {"path", "fingerprint"} <= tokenizer.keys():
        raise TokenStoreError(
            f"{path}: tokenizer must be an object with keys 'path' and 'fingerprint', got {tokenizer!r}"
        )
    if manifest["dtype"] not in _DTYPES:
        raise TokenStoreError(f"{path} has dtype {manifest['dtype']!r}; valid: {', '.join(_DTYPES)}")
    for index, entry in enumerate(manifest["files"]):
        absent = [key for key in _FILE_KEYS if not isinstance(entry, dict) or key not in entry]
        if absent:
            raise TokenStoreError(f"{path}: files[{index}] lacks key(s) {absent}; an entry has {list(_FILE_KEYS)}")
    return manifest


def read_batches(path: Path, dtype: np.dtype) -> list[pa.RecordBatch]:
    """Every record batch of one store file, zero-copy over a memory map; checks the schema."""
    try:
        source = pa.memory_map(str(path))
        try:
            reader = pa.ipc.open_stream(source)
            expected = schema_for(dtype)
            if not reader.schema.equals(expected):
                raise TokenStoreError(f"{path} has schema {reader.schema}; expected {expected}")
            return list(reader)
        finally:
            source.close()  # the batches keep the mapping alive; only the descriptor is released
    except (OSError, pa.ArrowInvalid) as exc:
        raise TokenStoreError(f"{path} is not a readable Arrow IPC stream (truncated or corrupt?): {exc}") from exc


class TokenStore:
    """Random access to the documents of a token store, by global index, with no copies."""

    def __init__(self, directory: str | os.PathLike[str], verify: bool = False) -> None:
        """Open the store at `directory` (cheap checks: files exist, sizes and counts match; `verify` adds sha256)."""
        self.directory = Path(directory)
        self.manifest = read_manifest(self.directory)
        self.dtype = np.dtype(self.manifest["dtype"])
        self._offsets: list[np.ndarray] = []
        self._values: list[np.ndarray] = []
        batch_sizes: list[int] = []
        for entry in self.manifest["files"]:
            path = self.directory / entry["name"]
            _check_file(path, entry, verify)
            batches = read_batches(path, self.dtype)
            documents = tokens = 0
            for batch in batches:
                column = batch.column(0)
                offsets = column.offsets.to_numpy(zero_copy_only=True)
                self._offsets.append(offsets)
                self._values.append(column.values.to_numpy(zero_copy_only=True))
                batch_sizes.append(len(batch))
                documents += len(batch)
                tokens += int(offsets[-1] - offsets[0])
            if (documents, tokens) != (entry["num_documents"], entry["num_tokens"]):
                raise TokenStoreError(
                    f"{path} holds {documents} documents / {tokens} tokens; the manifest says "
                    f"{entry['num_documents']} / {entry['num_tokens']}"
                )
        self._batch_starts = np.zeros(len(batch_sizes) + 1, dtype=np.int64)
        np.cumsum(batch_sizes, out=self._batch_starts[1:])

    def __len__(self) -> int:
        """Number of documents."""
        return int(self._batch_starts[-1])

    def __getitem__(self, index: int) -> np.ndarray:
        """The token ids of document `index` (negative counts from the end): a read-only view into the map."""
        position = operator.index(index)
        size = len(self)
        if position < 0:
            position += size
        if not 0 <= position < size:
            raise IndexError(f"document index {index} is out of range for a store of {size} documents")
        batch = int(np.searchsorted(self._batch_starts, position, side="right")) - 1
        row = position - int(self._batch_starts[batch])
        offsets = self._offsets[batch]
        return self._values[batch][offsets[row] : offsets[row + 1]]

    @property
    def num_tokens(self) -> int:
        """Total number of tokens."""
        return int(self.manifest["num_tokens"])

    @functools.cached_property
    def document_lengths(self) -> np.ndarray:
        """Every document's length (int64), from the offsets alone."""
        if not self._offsets:
            return np.zeros(0, dtype=np.int64)
        return np.concatenate([np.diff(offsets) for offsets in self._offsets]).astype(np.int64, copy=False)

    @property
    def fingerprint(self) -> str:
        """The dataset fingerprint from the manifest."""
        return str(self.manifest["fingerprint"])

    @property
    def special_tokens(self) -> dict[str, int]:
        """The tokenizer's special ids (pad, unk, eod, mask, cls, sep)."""
        return dict(self.manifest["special_tokens"])

    @property
    def vocab_size(self) -> int:
        """The tokenizer's vocabulary size; every id is below it."""
        return int(self.manifest["vocab_size"])


def _check_file(path: Path, entry: dict[str, Any], verify: bool) -> None:
    """The cheap checks (exists, size) and, if `verify`, the sha256 of one listed file."""
    if not path.is_file():
        raise TokenStoreError(f"{path} is listed in the manifest but does not exist")
    size = path.stat().st_size
    if size != entry["size_bytes"]:
        raise TokenStoreError(f"{path} is {size} bytes; the manifest expects {entry['size_bytes']} (truncated?)")
    if verify:
        digest = file_sha256(path)
        if digest != entry["sha256"]:
            raise TokenStoreError(f"{path} has sha256 {digest}; the manifest expects {entry['sha256']}")


def verify_store(directory: str | os.PathLike[str]) -> list[str]:
    """Check a store completely (checksums, recounted documents and tokens, dtype, ids < vocab_size).

    Returns the problems found, empty when the store is sound.
    """
    directory = Path(directory)
    try:
        manifest = read_manifest(directory)
    except TokenStoreError as exc:
        return [str(exc)]
    problems: list[str] = []
    dtype, vocab_size = np.dtype(manifest["dtype"]), int(manifest["vocab_size"])
    if dtype != dtype_for_vocab(vocab_size):
        problems.append(f"manifest dtype {dtype.name} does not match vocab_size {vocab_size}")
    documents = tokens = 0
    for entry in manifest["files"]:
        path = directory / entry["name"]
        try:
            _check_file(path, entry, verify=True)
            file_documents, file_tokens, max_id = _recount(path, dtype)
        except TokenStoreError as exc:
            problems.append(str(exc))
            continue
        if (file_documents, file_tokens) != (entry["num_documents"], entry["num_tokens"]):
            problems.append(
                f"{path} holds {file_documents} documents / {file_tokens} tokens; "
                f"the manifest says {entry['num_documents']} / {entry['num_tokens']}"
            )
        if max_id >= vocab_size:
            problems.append(f"{path} has token id {max_id}, not below vocab_size {vocab_size}")
        documents, tokens = documents + file_documents, tokens + file_tokens
    if not problems and (documents, tokens) != (manifest["num_documents"], manifest["num_tokens"]):
        problems.append(
            f"files hold {documents} documents / {tokens} tokens; the manifest totals say "
            f"{manifest['num_documents']} / {manifest['num_tokens']}"
        )
    expected = dataset_fingerprint(manifest["files"], manifest["tokenizer"]["fingerprint"], manifest["dtype"])
    if manifest["fingerprint"] != expected:
        problems.append(f"manifest fingerprint {manifest['fingerprint']} should be {expected}")
    listed = {entry["name"] for entry in manifest["files"]}
    unlisted = sorted(path for path in directory.glob(f"*{SUFFIX}") if path.name not in listed)
    problems += [f"{path} is not listed in the manifest" for path in unlisted]
    if not problems and manifest["num_documents"] == 0:
        problems.append(f"{directory} holds no documents: nothing could be trained on it "
                        "(did every document fail the cleaning or deduplication stages?)")
    return problems


def _recount(path: Path, dtype: np.dtype) -> tuple[int, int, int]:
    """(documents, tokens, largest id) of one file, reading every value."""
    documents = tokens = 0
    max_id = -1
    for batch in read_batches(path, dtype):
        column = batch.column(0)
        if column.null_count or batch.column(1).null_count:
            raise TokenStoreError(f"{path} has null input_ids or id values; neither may be null")
        values = column.flatten().to_numpy(zero_copy_only=True)
        documents += len(batch)
        tokens += len(values)
        if len(values):
            max_id = max(max_id, int(values.max()))
    return documents, tokens, max_id


VERIFIED_NAME = ".verified.json"


def verify_checksums_once(directory: str | os.PathLike[str], cache: str | os.PathLike[str] | None = None) -> int:
    """Check every file's sha256 against the manifest, skipping files already verified unchanged.

    A file counts as already verified when `cache` (default `<store>/.verified.json`) records the
    same name, size, modification time and checksum. So a training run pays the full read once per
    store, and a flipped byte or a rewritten file (its mtime changes) is still caught before it
    becomes silently wrong data. Returns the number of files hashed; raises TokenStoreError.
    """
    directory = Path(directory)
    cache_path = Path(cache) if cache is not None else directory / VERIFIED_NAME
    manifest = read_manifest(directory)
    try:
        known = json.loads(cache_path.read_text())
    except (OSError, ValueError):
        known = {}
    verified: dict[str, Any] = {}
    hashed = 0
    for entry in manifest["files"]:
        path = directory / entry["name"]
        _check_file(path, entry, verify=False)
        stat = path.stat()
        record = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": entry["sha256"]}
        if known.get(entry["name"]) != record:
            _check_file(path, entry, verify=True)
            hashed += 1
        verified[entry["name"]] = record
    if hashed:
        write_bytes_atomic(cache_path, json.dumps(verified, indent=1, sort_keys=True).encode())
    return hashed
