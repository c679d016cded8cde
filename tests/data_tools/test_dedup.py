"""The dedup stage end to end: exact and near duplicates across shards, determinism, phases, resume, refusals."""

from __future__ import annotations

import argparse
import json
import random
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from data_tools.dedup import register
from data_tools.errors import DataToolsError
from data_tools.extract import extract_files
from data_tools.shards import write_shard
from data_tools.sources.base import Document


def text(seed: int, count: int = 150) -> str:
    rng = random.Random(seed)
    return " ".join(f"w{rng.randrange(5000)}" for _ in range(count))


def edit(original: str, positions: list[int]) -> str:
    """`original` with the words at `positions` replaced."""
    tokens = original.split()
    for position in positions:
        tokens[position] = f"edit{position}"
    return " ".join(tokens)


DOCS = {seed: text(seed) for seed in range(7)}
SHARDS = {  # id -> text; "first" is by (shard name, row)
    "a": {"a0": DOCS[0], "a1": DOCS[1], "a2": "  " + DOCS[0].upper().replace(" ", "\n "),  # exact, same shard
          "a3": DOCS[2], "a4": edit(DOCS[6], [70])},
    "b": {"b0": DOCS[3], "b1": DOCS[1], "b2": edit(DOCS[2], [75]),  # exact across shards; near
          "b3": DOCS[4], "b4": DOCS[6]},  # the unedited text, but a4 came first
    "c": {"c0": edit(DOCS[3], [30, 110]), "c1": DOCS[5], "c2": DOCS[0]},
}
SURVIVORS = {"a": ["a0", "a1", "a3", "a4"], "b": ["b0", "b3"], "c": ["c1"]}


def make_shards(directory: Path, shards: dict[str, dict[str, str]] = SHARDS) -> Path:
    for name, documents in shards.items():
        write_shard(directory / f"{name}.parquet",
                    [Document(doc_id, body, "test", f"https://{doc_id}", "en") for doc_id, body in documents.items()])
    return directory


def dedup(input_dir: Path, output_dir: Path, *options: str) -> int:
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    args = parser.parse_args(["dedup", "--input", str(input_dir), "--output", str(output_dir), *options])
    return args.run(args)


def ids(path: Path) -> list[str]:
    return pq.read_table(path).column("id").to_pylist()


def outputs(directory: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(directory.glob("*.parquet"))}


@pytest.fixture(scope="module")
def docs(tmp_path_factory) -> Path:
    return make_shards(tmp_path_factory.mktemp("docs"))


@pytest.fixture(scope="module")
def deduped(docs, tmp_path_factory) -> Path:
    """The default run (all phases, one worker)."""
    output = tmp_path_factory.mktemp("dedup")
    assert dedup(docs, output) == 0
    return output


def test_exact_and_near_duplicates_are_removed_first_copy_kept(deduped, docs):
    assert sorted(outputs(deduped)) == ["a.parquet", "b.parquet", "c.parquet"]
    assert {name: ids(deduped / f"{name}.parquet") for name in SHARDS} == SURVIVORS
    assert pq.read_schema(deduped / "a.parquet").equals(pq.read_schema(docs / "a.parquet"))
    assert pq.read_table(deduped / "a.parquet").column("text").to_pylist()[2] == DOCS[2]


def test_stats_add_up(deduped, capsys):
    stats = json.loads((deduped / "stats.json").read_text())
    assert stats["stage"] == "dedup" and stats["tasks"] == 3
    assert stats["documents_in"] == 13 and stats["documents_out"] == 7
    assert stats["removed"] == {"exact_duplicate": 3, "near_duplicate": 3}
    assert stats["documents_in"] == stats["documents_out"] + sum(stats["removed"].values())
    assert stats["by_language"] == {"en": {"in": 13, "out": 7}}
    assert stats["outputs"] == ["a.parquet", "b.parquet", "c.parquet"]
    marker = json.loads((deduped / ".dedup" / "cluster.json").read_text())
    assert marker["removed"] == stats["removed"] and marker["shards"] == ["a", "b", "c"]


def test_output_is_byte_identical_for_two_workers_and_for_separate_sliced_phases(deduped, docs, tmp_path, capsys):
    two_workers = tmp_path / "two"
    assert dedup(docs, two_workers, "--num-workers", "2") == 0
    assert outputs(two_workers) == outputs(deduped)
    sliced = tmp_path / "sliced"
    for phase, slices in (("signatures", 2), ("cluster", 1), ("filter", 2)):
        for index in range(slices):
            assert dedup(docs, sliced, "--phase", phase, "--shard-index", str(index), "--num-shards", str(slices)) == 0
    assert outputs(sliced) == outputs(deduped)
    assert json.loads((sliced / "stats.json").read_text()) == json.loads((deduped / "stats.json").read_text())
    assert "dedup: 13 documents in" in capsys.readouterr().out


def test_rerun_redoes_only_a_deleted_signatures_file(deduped, docs, tmp_path, capsys):
    output = tmp_path / "out"
    shutil.copytree(deduped, output)
    signatures = output / ".dedup" / "signatures"
    before = {path.name: path.stat().st_mtime_ns for path in signatures.glob("*.npz")}
    (signatures / "b.npz").unlink()
    capsys.readouterr()
    assert dedup(docs, output) == 0
    out = capsys.readouterr().out
    assert "signatures: computed 1 shard(s), kept 2 up to date" in out
    assert "cluster: kept the finished clustering" in out and "filter: wrote 0 shard(s), kept 3 finished" in out
    after = {path.name: path.stat().st_mtime_ns for path in signatures.glob("*.npz")}
    assert after["a.npz"] == before["a.npz"] and after["c.npz"] == before["c.npz"] and "b.npz" in after
    assert outputs(output) == outputs(deduped)


def test_a_truncated_signatures_file_is_not_trusted(deduped, docs, tmp_path, capsys):
    output = tmp_path / "out"
    shutil.copytree(deduped, output)
    path = output / ".dedup" / "signatures" / "c.npz"
    path.write_bytes(path.read_bytes()[:100])
    assert dedup(docs, output) == 0
    assert "signatures: computed 1 shard(s), kept 2 up to date" in capsys.readouterr().out
    assert np.load(path)["exact"].shape == (3, 2)
    assert outputs(output) == outputs(deduped)


def test_a_changed_input_shard_redoes_its_signatures_and_the_clustering(tmp_path, capsys):
    inputs, output = make_shards(tmp_path / "docs"), tmp_path / "out"
    assert dedup(inputs, output) == 0
    make_shards(inputs, {"c": {"c0": DOCS[1], "c1": DOCS[5], "c9": text(99)}})
    capsys.readouterr()
    assert dedup(inputs, output) == 0
    out = capsys.readouterr().out
    assert "signatures: computed 1 shard(s), kept 2 up to date" in out and "filter: wrote 3 shard(s)" in out
    assert ids(output / "c.parquet") == ["c1", "c9"]
    stats = json.loads((output / "stats.json").read_text())
    assert stats["removed"] == {"exact_duplicate": 3, "near_duplicate": 2} and stats["documents_out"] == 8


def test_an_empty_shard_gives_an_empty_output(tmp_path):
    inputs, output = make_shards(tmp_path / "docs", {"a": SHARDS["a"], "empty": {}}), tmp_path / "out"
    assert dedup(inputs, output) == 0
    assert ids(output / "a.parquet") == SURVIVORS["a"] and ids(output / "empty.parquet") == []


def test_exact_only_keeps_near_duplicates(docs, tmp_path):
    output = tmp_path / "out"
    assert dedup(docs, output, "--no-near") == 0
    assert ids(output / "b.parquet") == ["b0", "b2", "b3", "b4"]
    stats = json.loads((output / "stats.json").read_text())
    assert stats["removed"] == {"exact_duplicate": 3} and stats["documents_out"] == 10


def test_cluster_refuses_when_signatures_are_missing(docs, tmp_path):
    output = tmp_path / "out"
    assert dedup(docs, output, "--phase", "signatures", "--shard-index", "0", "--num-shards", "2") == 0  # a and c
    with pytest.raises(DataToolsError, match=r"missing for shard\(s\) b\b.*--phase signatures"):
        dedup(docs, output, "--phase", "cluster")


def test_filter_refuses_before_clustering_and_all_refuses_a_slice(docs, tmp_path):
    output = tmp_path / "out"
    with pytest.raises(DataToolsError, match=r"cluster\.json is missing; run `roots-data dedup --phase cluster`"):
        dedup(docs, output, "--phase", "filter")
    with pytest.raises(DataToolsError, match="--phase all with --num-shards 2 cannot cluster"):
        dedup(docs, output, "--num-shards", "2")
    with pytest.raises(DataToolsError, match="MinHash bands 0 is invalid"):
        dedup(docs, output, "--bands", "0")


def test_a_copied_real_shard_is_removed_entirely_as_exact_duplicates(fixture_path, tmp_path):
    inputs, output = tmp_path / "docs", tmp_path / "out"
    extract_files([fixture_path("cc_net_sample.wet.txt")], "wet", inputs)
    (original,) = inputs.glob("*.parquet")
    shutil.copy(original, inputs / f"zz_copy_of_{original.name}")
    documents = pq.read_metadata(original).num_rows
    assert documents >= 3
    assert dedup(inputs, output) == 0
    assert ids(output / original.name) == ids(original)
    assert ids(output / f"zz_copy_of_{original.name}") == []
    stats = json.loads((output / "stats.json").read_text())
    assert stats["removed"] == {"exact_duplicate": documents}
