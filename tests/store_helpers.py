"""Small real token stores for tests, written with the store's own writer."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from roots_core.token_store import TokenizedDocument, TokenStoreWriter

SPECIAL_TOKENS = {"pad": 0, "unk": 1, "eod": 2, "mask": 3, "cls": 4, "sep": 5}


def write_random_store(directory: Path, num_documents: int = 200, vocab_size: int = 512,
                       max_length: int = 120, seed: int = 0, files: int = 2) -> Path:
    """A store of random documents (lengths 0..max_length, ids above the special tokens)."""
    rng = np.random.default_rng(seed)
    writer = TokenStoreWriter(directory, vocab_size, SPECIAL_TOKENS, "none", "test-tokenizer")
    directory.mkdir(parents=True, exist_ok=True)
    entries = []
    for f in range(files):
        documents = [
            TokenizedDocument(rng.integers(6, vocab_size, size=int(rng.integers(0, max_length))),
                              f"doc-{f}-{i}", "synthetic", None)
            for i in range(num_documents // files)
        ]
        entries.append(writer.write_file(f"shard{f}", documents))
    writer.write_manifest(entries)
    return directory
