"""Import a Megatron-LM / GPT-NeoX indexed dataset (PREFIX.bin + PREFIX.idx) into a token store.

The index (version 1, little-endian): the 9-byte magic `MMIDIDX\\x00\\x00`, uint64 version, uint8
dtype code, uint64 sequence count S, uint64 document count D, then int32 sequence_lengths[S]
(in tokens), int64 sequence_pointers[S] (byte offsets into the .bin) and int64
document_indices[D]: boundaries into the sequences, 0 first and S last, so D - 1 documents.
Each document becomes one store document, its sequences concatenated; `strip_eod` removes a
trailing end-of-document token, since the store keeps documents without separators.

Everything is checked before it is trusted (header, counts against file sizes, offsets against
the .bin, every token id against the vocabulary) and a DataToolsError names the file, the field
and the value. The .bin is memory-mapped and documents stream to the writer, so memory stays
bounded whatever the dataset's size. The store has one file, `<basename of PREFIX>.arrow`; its
documents have ids `<basename>:<index>` and source `<basename>`.

Special ids and fingerprint come from `--tokenizer` when the dataset was made with it. With
`--vocab-size` instead, the special ids are the roots_scale defaults (pad 0, unk 1, eod 2,
mask 3, cls 4, sep 5) with eod replaced by `--eod-id`; the tokenizer fingerprint is the sha256
of the .idx file's sha256, the vocab size and those ids (the same files and options always give
the same fingerprint), and the manifest's tokenizer path is the .idx file.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from data_tools.errors import DataToolsError
from roots_core.token_store import MANIFEST_NAME, TokenizedDocument, TokenStoreWriter, file_sha256
from roots_core.tokenizer import SPECIAL_TOKENS, Tokenizer

MAGIC = b"MMIDIDX\x00\x00"
VERSION = 1
DTYPE_CODES: dict[int, np.dtype] = {
    code: np.dtype(name).newbyteorder("<")
    for code, name in {1: "uint8", 2: "int8", 3: "int16", 4: "int32", 5: "int64", 6: "float64", 7: "float32",
                       8: "uint16"}.items()
}
_HEADER = struct.Struct("<9sQBQQ")  # magic, version, dtype code, sequence count, document count
_CHUNK = 1 << 20  # index entries checked at a time, so checking needs bounded memory


class MegatronIndex(NamedTuple):
    """A checked Megatron index: the token dtype and memory-mapped arrays of the .idx file."""

    path: Path
    dtype: np.dtype
    sequence_lengths: np.ndarray
    sequence_pointers: np.ndarray
    document_indices: np.ndarray


def read_index(idx_path: Path, bin_size: int, bin_path: Path) -> MegatronIndex:
    """Map and check the index at `idx_path` against a .bin of `bin_size` bytes; DataToolsError names any fault."""
    try:
        size = idx_path.stat().st_size
        with open(idx_path, "rb") as stream:
            header = stream.read(_HEADER.size)
    except OSError as exc:
        raise DataToolsError(f"cannot read Megatron index {idx_path}: {exc.strerror} "
                             "(a Megatron dataset is PREFIX.bin + PREFIX.idx)") from exc
    if len(header) < _HEADER.size:
        raise DataToolsError(f"{idx_path} is {size} bytes, shorter than the {_HEADER.size}-byte header (truncated?)")
    magic, version, code, num_sequences, num_documents = _HEADER.unpack(header)
    if magic != MAGIC:
        raise DataToolsError(f"{idx_path}: magic is {magic!r}; a Megatron index starts with {MAGIC!r}")
    if version != VERSION:
        raise DataToolsError(f"{idx_path}: version is {version}; only version {VERSION} is supported")
    valid = ", ".join(f"{c} {d.name}" for c, d in DTYPE_CODES.items() if d.kind in "iu")
    if code not in DTYPE_CODES:
        raise DataToolsError(f"{idx_path}: dtype code is {code}; valid codes are {valid}")
    dtype = DTYPE_CODES[code]
    if dtype.kind not in "iu":
        raise DataToolsError(f"{idx_path}: dtype code is {code} ({dtype.name}): floats are not token ids; "
                             f"valid codes are {valid}")
    expected = _HEADER.size + 12 * num_sequences + 8 * num_documents
    if size != expected:
        raise DataToolsError(f"{idx_path}: sequence count {num_sequences} and document count {num_documents} "
                             f"need {expected} bytes; the file has {size}")
    if num_documents < 1:
        raise DataToolsError(f"{idx_path}: document count is 0; document_indices holds at least the boundary 0")
    lengths_at = _HEADER.size
    pointers_at = lengths_at + 4 * num_sequences
    documents_at = pointers_at + 8 * num_sequences
    index = MegatronIndex(
        idx_path, dtype,
        _map(idx_path, np.dtype("<i4"), lengths_at, num_sequences),
        _map(idx_path, np.dtype("<i8"), pointers_at, num_sequences),
        _map(idx_path, np.dtype("<i8"), documents_at, num_documents),
    )
    _check_sequences(index, bin_size, bin_path)
    _check_documents(index)
    return index


def _map(path: Path, dtype: np.dtype, offset: int, count: int) -> np.ndarray:
    """`count` items of `dtype` at byte `offset` of `path`, memory-mapped read-only (an empty array for none)."""
    if count == 0:
        return np.zeros(0, dtype=dtype)
    return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=(count,))


def _check_sequences(index: MegatronIndex, bin_size: int, bin_path: Path) -> None:
    """Every sequence has a length ≥ 0 and an aligned byte range inside the .bin."""
    itemsize = index.dtype.itemsize
    for start in range(0, len(index.sequence_lengths), _CHUNK):
        lengths = index.sequence_lengths[start : start + _CHUNK].astype(np.int64)
        pointers = index.sequence_pointers[start : start + _CHUNK]
        bad = np.flatnonzero(lengths < 0)
        if bad.size:
            i = int(bad[0])
            raise DataToolsError(f"{index.path}: sequence_lengths[{start + i}] is {lengths[i]}; lengths must be ≥ 0")
        bad = np.flatnonzero((pointers < 0) | (pointers % itemsize != 0) | (pointers > bin_size)
                             | (pointers + lengths * itemsize > bin_size))
        if bad.size:
            i = int(bad[0])
            raise DataToolsError(
                f"{index.path}: sequence_pointers[{start + i}] is {pointers[i]} for a sequence of {lengths[i]} "
                f"{index.dtype.name} tokens; a pointer must be a multiple of {itemsize} and the sequence must end "
                f"within {bin_path} ({bin_size} bytes)")


def _check_documents(index: MegatronIndex) -> None:
    """document_indices start at 0, never decrease, and end at the sequence count."""
    documents, num_sequences = index.document_indices, len(index.sequence_lengths)
    if documents[0] != 0:
        raise DataToolsError(f"{index.path}: document_indices[0] is {documents[0]}; it must be 0")
    if documents[-1] != num_sequences:
        raise DataToolsError(f"{index.path}: document_indices[{len(documents) - 1}] is {documents[-1]}; the last "
                             f"boundary must be the sequence count {num_sequences}")
    previous = 0
    for start in range(0, len(documents), _CHUNK):
        chunk = documents[start : start + _CHUNK]
        bad = np.flatnonzero(np.diff(chunk, prepend=previous) < 0)
        if bad.size:
            i = start + int(bad[0])
            raise DataToolsError(f"{index.path}: document_indices[{i}] is {documents[i]}, below "
                                 f"document_indices[{i - 1}] = {documents[i - 1]}; boundaries must not decrease")
        previous = int(chunk[-1])


def import_megatron(
    prefix: Path,
    output_dir: Path,
    tokenizer_path: Path | None = None,
    vocab_size: int | None = None,
    eod_id: int | None = None,
    strip_eod: bool = False,
) -> dict[str, Any]:
    """Write the Megatron dataset at `prefix` as a token store at `output_dir`; return its manifest."""
    idx_path, bin_path = Path(f"{prefix}.idx"), Path(f"{prefix}.bin")
    if (tokenizer_path is None) == (vocab_size is None):
        raise DataToolsError("give exactly one of --tokenizer (the model the dataset was made with) or --vocab-size")
    if not bin_path.is_file():
        raise DataToolsError(f"Megatron data file {bin_path} not found (a Megatron dataset is PREFIX.bin + PREFIX.idx)")
    index = read_index(idx_path, bin_path.stat().st_size, bin_path)
    if tokenizer_path is not None:
        tokenizer = Tokenizer(tokenizer_path)
        if eod_id is not None and eod_id != tokenizer.special_tokens["eod"]:
            raise DataToolsError(f"--eod-id {eod_id} differs from tokenizer {tokenizer_path}'s eod id "
                                 f"{tokenizer.special_tokens['eod']}; drop --eod-id when giving --tokenizer")
        vocab_size, special_tokens = tokenizer.vocab_size, tokenizer.special_tokens
        source, fingerprint = str(tokenizer.path.resolve()), tokenizer.fingerprint
    else:
        if strip_eod and eod_id is None:
            raise DataToolsError("--strip-eod with --vocab-size needs --eod-id (the dataset's end-of-document id)")
        special_tokens = {**SPECIAL_TOKENS, "eod": SPECIAL_TOKENS["eod"] if eod_id is None else eod_id}
        bad = {name: i for name, i in special_tokens.items() if not 0 <= i < vocab_size}
        if vocab_size < 1 or bad:
            raise DataToolsError(f"--vocab-size {vocab_size} does not hold special ids {bad or special_tokens}; "
                                 "every special id must be in 0..vocab_size-1 (set the eod id with --eod-id)")
        payload = {"idx_sha256": file_sha256(idx_path), "vocab_size": vocab_size, "special_tokens": special_tokens}
        source = str(idx_path.resolve())
        fingerprint = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()
    writer = TokenStoreWriter(output_dir, vocab_size, special_tokens, source, fingerprint)
    # A store being rewritten must not look complete: the old manifest goes first, the new one last.
    (output_dir / MANIFEST_NAME).unlink(missing_ok=True)
    name = Path(prefix).name
    documents = _documents(index, bin_path, name, vocab_size, special_tokens["eod"] if strip_eod else None)
    return writer.write_manifest([writer.write_file(name, documents)])


def _documents(
    index: MegatronIndex, bin_path: Path, name: str, vocab_size: int, strip: int | None
) -> Iterator[TokenizedDocument]:
    """Each document's sequences concatenated (views when it has one), ids checked, a trailing `strip` id removed."""
    itemsize = index.dtype.itemsize
    tokens = _map(bin_path, index.dtype, 0, bin_path.stat().st_size // itemsize)
    boundaries = index.document_indices
    for document in range(len(boundaries) - 1):
        first, last = int(boundaries[document]), int(boundaries[document + 1])
        pieces = [tokens[pointer // itemsize : pointer // itemsize + length] for pointer, length in
                  zip(index.sequence_pointers[first:last].tolist(), index.sequence_lengths[first:last].tolist())]
        ids = pieces[0] if len(pieces) == 1 else np.concatenate(pieces) if pieces else tokens[:0]
        if ids.size and (ids.min() < 0 or ids.max() >= vocab_size):
            value = ids[np.flatnonzero((ids < 0) | (ids >= vocab_size))[0]]
            raise DataToolsError(f"{bin_path}: document {document} (sequences {first}..{last - 1}) has token id "
                                 f"{value}; valid ids are 0..{vocab_size - 1} (vocab size {vocab_size})")
        if strip is not None and ids.size and ids[-1] == strip:
            ids = ids[:-1]
        yield TokenizedDocument(ids, f"{name}:{document}", name, None)


def run(args: argparse.Namespace) -> int:
    """Import a Megatron dataset and describe the store."""
    manifest = import_megatron(args.prefix, args.output, args.tokenizer, args.vocab_size, args.eod_id, args.strip_eod)
    print(f"{args.output}: imported {manifest['num_documents']:,} documents, {manifest['num_tokens']:,} tokens "
          f"({manifest['dtype']}) from {args.prefix}.bin/.idx, fingerprint {manifest['fingerprint']}")
    return 0


def register(commands) -> None:
    """Add the `import-megatron` subcommand to an argparse subparsers object."""
    parser = commands.add_parser(
        "import-megatron", help="import a Megatron-LM / GPT-NeoX indexed dataset (PREFIX.bin/.idx) as a token store")
    parser.add_argument("prefix", type=Path, metavar="PREFIX", help="reads PREFIX.bin and PREFIX.idx")
    parser.add_argument("--output", type=Path, required=True, metavar="STORE_DIR")
    vocabulary = parser.add_mutually_exclusive_group(required=True)
    vocabulary.add_argument("--tokenizer", type=Path, metavar="MODEL",
                            help="the sentencepiece model the dataset was made with (special ids, fingerprint)")
    vocabulary.add_argument("--vocab-size", type=int, metavar="N", help="ids are below N (no tokenizer at hand)")
    parser.add_argument("--eod-id", type=int, metavar="ID", help="the end-of-document id (default 2)")
    parser.add_argument("--strip-eod", action="store_true", help="drop each document's trailing eod token")
    parser.set_defaults(run=run)
