"""A corrupted token store never reaches training as silently wrong data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from in_process import pretrain_ranks
from roots_core.token_store import TokenStoreError, verify_checksums_once
from store_helpers import write_random_store


def flip_one_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def test_checksums_are_verified_once_then_cached(tmp_path: Path) -> None:
    store = write_random_store(tmp_path / "store")
    assert verify_checksums_once(store) == 2
    assert verify_checksums_once(store) == 0  # unchanged files are not read again
    cache = tmp_path / "elsewhere.json"
    assert verify_checksums_once(store, cache) == 2 and cache.is_file()


def test_a_flipped_byte_is_caught_even_after_a_clean_verification(tmp_path: Path) -> None:
    store = write_random_store(tmp_path / "store")
    verify_checksums_once(store)
    shard = store / "shard1.arrow"
    stat = shard.stat()
    flip_one_byte(shard)
    os.utime(shard, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1))
    with pytest.raises(TokenStoreError, match=r"shard1.arrow has sha256 .* the manifest expects"):
        verify_checksums_once(store)


def test_a_truncated_file_is_named(tmp_path: Path) -> None:
    store = write_random_store(tmp_path / "store")
    shard = store / "shard0.arrow"
    shard.write_bytes(shard.read_bytes()[:-10])
    with pytest.raises(TokenStoreError, match=r"shard0.arrow is \d+ bytes; the manifest expects \d+ \(truncated\?\)"):
        verify_checksums_once(store)


@pytest.mark.slow
def test_training_refuses_a_corrupted_store_on_every_rank(tmp_path: Path) -> None:
    store = write_random_store(tmp_path / "store")
    flip_one_byte(store / "shard0.arrow")
    ranks = pretrain_ranks(2, "--config", "configs/tiny_gpt.yaml", "train.iters=5", f"data.path={store}",
                           f"run.output_dir={tmp_path / 'run'}", expect=2)
    for rank in ranks:
        assert "error:" in rank.output and "shard0.arrow has sha256" in rank.output, rank.output
        assert "Traceback" not in rank.output
    assert not (tmp_path / "run" / "checkpoints").exists()
