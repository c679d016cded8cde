"""The tokenize stage: document shards → a token store, one store file per shard, shard-parallel.

Each shard is encoded by one process and written by the token store's writer; the manifest is
written last by the parent. Output bytes depend only on the shards and the tokenizer, never on
the number of workers. (Named so as not to shadow the stdlib `tokenize` module.)
"""

from __future__ import annotations

import functools
import multiprocessing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from data_tools.errors import DataToolsError
from data_tools.shards import SUFFIX, iter_batches, list_shards
from data_tools.tokenizer import Tokenizer
from roots_scale.data.token_store import MANIFEST_NAME, TokenizedDocument, TokenStoreWriter

_COLUMNS = ["id", "text", "source", "lang"]


def tokenize_shards(docs_dir: Path, tokenizer_path: Path, output_dir: Path, num_workers: int = 1) -> dict[str, Any]:
    """Tokenize every shard in `docs_dir` into a store at `output_dir`; return the manifest."""
    if num_workers < 1:
        raise DataToolsError(f"--num-workers must be at least 1, got {num_workers}")
    shards = list_shards(docs_dir)
    tokenizer = Tokenizer(tokenizer_path)
    writer = TokenStoreWriter(
        output_dir, tokenizer.vocab_size, tokenizer.special_tokens, str(tokenizer.path.resolve()), tokenizer.fingerprint
    )
    # A store being rewritten must not look complete: the old manifest goes first, the new one last.
    (output_dir / MANIFEST_NAME).unlink(missing_ok=True)
    jobs = [(writer, shard) for shard in shards]
    workers = min(num_workers, len(jobs))
    if workers == 1:
        entries = [_tokenize_shard(*job) for job in jobs]
    else:
        # spawn, not fork: forking a process whose pyarrow thread pools are running can deadlock.
        with multiprocessing.get_context("spawn").Pool(workers) as pool:
            entries = pool.starmap(_tokenize_shard, jobs, chunksize=1)
    return writer.write_manifest(entries)


@functools.lru_cache(maxsize=4)
def _load_tokenizer(path: str) -> Tokenizer:
    """The tokenizer at `path`, loaded once per process."""
    return Tokenizer(path)


def _tokenize_shard(writer: TokenStoreWriter, shard: Path) -> dict[str, Any]:
    """Encode one shard and write its store file; return the file's manifest entry."""
    tokenizer = _load_tokenizer(writer.tokenizer["path"])
    if tokenizer.fingerprint != writer.tokenizer["fingerprint"]:
        raise DataToolsError(f"tokenizer {tokenizer.path} changed while tokenizing {shard}; re-run tokenize")
    return writer.write_file(shard.name.removesuffix(SUFFIX), _documents(tokenizer, shard))


def _documents(tokenizer: Tokenizer, shard: Path) -> Iterator[TokenizedDocument]:
    """The shard's documents with their token ids, in shard order."""
    for batch in iter_batches(shard, _COLUMNS):
        ids, texts, sources, langs = (batch.column(name).to_pylist() for name in _COLUMNS)
        for input_ids, doc_id, source, lang in zip(tokenizer.encode_batch(texts), ids, sources, langs):
            yield TokenizedDocument(input_ids, doc_id, source, lang)
