"""GPT samples over a real token store: complete epochs, document separators, determinism."""

from __future__ import annotations


import numpy as np
import pytest

from roots_scale.data.gpt_dataset import DatasetError, GPTDataset
from roots_core.token_store import TokenStore
from store_helpers import write_random_store


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> TokenStore:
    return TokenStore(write_random_store(tmp_path_factory.mktemp("store"), num_documents=120))


def epoch_stream(store: TokenStore, dataset: GPTDataset) -> np.ndarray:
    """The first epoch's documents in the dataset's order, each followed by end-of-document."""
    eod = store.special_tokens["eod"]
    order = dataset.document_index[: len(store)]
    return np.concatenate([np.append(store[int(d)], eod) for d in order])


def in_serving_order(dataset: GPTDataset) -> list[np.ndarray]:
    return [dataset[int(i)] for i in np.argsort(dataset.shuffle_index)]


def test_one_epoch_covers_every_token_exactly_once(store: TokenStore) -> None:
    seq = 32
    stream_length = store.num_tokens + len(store)
    num_samples = (stream_length - 1) // seq
    dataset = GPTDataset(store, seq, num_samples, seed=3)
    assert dataset.num_epochs == 1
    samples = in_serving_order(dataset)
    inputs = np.concatenate([s[:-1] for s in samples])
    assert np.array_equal(inputs, epoch_stream(store, dataset)[: num_samples * seq])
    # every sample's last token (the final label) is the next sample's first input
    assert all(a[-1] == b[0] for a, b in zip(samples, samples[1:]))


def test_samples_are_a_pure_function_of_the_parameters(store: TokenStore) -> None:
    first = GPTDataset(store, 16, 50, seed=9)
    again = GPTDataset(store, 16, 50, seed=9)
    other = GPTDataset(store, 16, 50, seed=10)
    assert all(np.array_equal(first[i], again[i]) for i in range(50))
    assert not all(np.array_equal(first[i], other[i]) for i in range(50))
    assert first[0].shape == (17,) and first[0].dtype == np.int64


def test_more_samples_than_one_epoch_spans_epochs(store: TokenStore) -> None:
    tokens_per_epoch = store.num_tokens + len(store)
    dataset = GPTDataset(store, 64, 3 * tokens_per_epoch // 64, seed=1)
    assert dataset.num_epochs == 3
    assert sorted(dataset.document_index[len(store): 2 * len(store)]) == list(range(len(store)))
    assert dataset[len(dataset) - 1].shape == (65,)


def test_epoch_limit_is_reported(store: TokenStore) -> None:
    with pytest.raises(DatasetError, match="data.num_epochs = 1"):
        GPTDataset(store, 64, 10 * store.num_tokens // 64, seed=1, max_epochs=1)


def test_out_of_range_sample(store: TokenStore) -> None:
    dataset = GPTDataset(store, 16, 10, seed=1)
    with pytest.raises(IndexError):
        dataset[10]


def _samples_in_another_process(store_dir: str, cache_dir: str) -> list[list[int]]:
    dataset = GPTDataset(TokenStore(store_dir), 16, 50, seed=9, cache_dir=cache_dir)
    return [dataset[i].tolist() for i in range(50)]


def test_identical_samples_in_another_process_and_from_the_cache(store: TokenStore, tmp_path) -> None:
    import concurrent.futures
    import multiprocessing

    here = GPTDataset(store, 16, 50, seed=9)
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        there = pool.submit(_samples_in_another_process, str(store.directory), str(tmp_path)).result()
    cached = GPTDataset(store, 16, 50, seed=9, cache_dir=tmp_path)  # built by the other process, now mapped
    assert isinstance(cached.sample_index, np.memmap)
    assert there == [here[i].tolist() for i in range(50)] == [cached[i].tolist() for i in range(50)]


def test_a_document_subset_draws_only_from_its_documents(store: TokenStore) -> None:
    subset = np.arange(10, 30)
    dataset = GPTDataset(store, 8, 40, seed=2, documents=subset)
    assert set(np.unique(dataset.document_index)) <= set(subset.tolist())
