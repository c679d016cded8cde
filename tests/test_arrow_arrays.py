"""Arrow arrays from buffers: equal to pyarrow.array's, and writing a shard never imports pandas."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from roots_core.arrow_arrays import numpy_array, string_array

REPO_ROOT = Path(__file__).resolve().parents[1]


def test_string_array_equals_pyarrows_own():
    rng = np.random.default_rng(0)
    alphabet = list("ab \n\t") + ["é", "日本", "🙂", "\u200b", "\x00"]
    values = [None if rng.random() < 0.2 else "".join(rng.choice(alphabet, rng.integers(0, 12)))
              for _ in range(2000)]
    for sample in (values, [], [None], [""], ["only text"], values[:7]):
        built = string_array(sample)
        built.validate(full=True)
        assert built.equals(pa.array(sample, pa.string())), sample[:5]
        assert built.null_count == sum(value is None for value in sample)


@pytest.mark.parametrize("dtype", [np.uint16, np.uint32, np.int32, np.int64, np.float32])
def test_numpy_array_equals_pyarrows_own(dtype):
    values = np.arange(-3, 50, 7).astype(dtype)[::2]  # a strided view: copied to contiguous memory first
    built = numpy_array(values)
    built.validate(full=True)
    assert built.equals(pa.array(values)) and built.type == pa.from_numpy_dtype(np.dtype(dtype))


def test_writing_a_document_shard_and_a_token_store_file_does_not_import_pandas(tmp_path):
    """pyarrow.array imports pandas (about 0.5 s per process); every stage's worker writes through these paths."""
    script = f"""
import sys
from pathlib import Path
from data_tools.shards import write_shard, iter_batches
from data_tools.sources.base import Document
from roots_core.token_store import TokenizedDocument, TokenStoreWriter
out = Path({str(tmp_path)!r})
write_shard(out / "a.parquet", [Document("1", "text", "web", None, "en"), Document("2", "más", "wiki", "u", None)])
assert [b.num_rows for b in iter_batches(out / "a.parquet", ["text"])] == [2]
writer = TokenStoreWriter(out / "store", 100, {{"eod": 0}}, "tokenizer.model", "0" * 16)
writer.write_file("a", [TokenizedDocument([5, 6], "1", "web", "en"), TokenizedDocument([], "2", "wiki", None)])
print("pandas" in sys.modules)
"""
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"
