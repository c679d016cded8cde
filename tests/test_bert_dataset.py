"""BERT samples over real token stores: layout, masking statistics, sentence order, whole words, determinism, cache."""

from __future__ import annotations

import multiprocessing
import random
import warnings
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import sentencepiece as spm
from store_helpers import SPECIAL_TOKENS, write_random_store

from data_tools.shards import write_shard
from data_tools.sources.base import Document
from data_tools.tokenize_shards import tokenize_shards
from data_tools.tokenizer import train_tokenizer
from roots_scale.data.bert_dataset import MIN_CHUNK_TOKENS, BERTDataset
from roots_scale.data.gpt_dataset import DatasetError
from roots_core.token_store import TokenizedDocument, TokenStore, TokenStoreWriter

# The synthetic stores name no tokenizer model: sentence-order segments are cut at random points.
pytestmark = pytest.mark.filterwarnings("ignore:the tokenizer model none")

CLS, SEP, PAD, MASK = (SPECIAL_TOKENS[name] for name in ("cls", "sep", "pad", "mask"))
FIRST_REGULAR = max(SPECIAL_TOKENS.values()) + 1
WORDS = ["the", "quick", "brown", "fox", "jumps", "over", "lazy", "dogs", "while", "extraordinary", "mathematicians",
         "contemplate", "unbelievably", "complicated", "tokenization", "strategies", "near", "riverbanks"]


@pytest.fixture(scope="module")
def random_store(tmp_path_factory: pytest.TempPathFactory) -> TokenStore:
    return TokenStore(write_random_store(tmp_path_factory.mktemp("random"), num_documents=200))


@pytest.fixture(scope="module")
def ranged_store(tmp_path_factory: pytest.TempPathFactory) -> TokenStore:
    """Document d holds consecutive ids of its own range, so any token tells its document and position."""
    directory = tmp_path_factory.mktemp("ranged")
    lengths = np.random.default_rng(1).integers(0, 90, size=80)
    starts = FIRST_REGULAR + np.concatenate([[0], np.cumsum(lengths)[:-1]])
    writer = TokenStoreWriter(directory, 8192, SPECIAL_TOKENS, "none", "test-tokenizer")
    documents = [TokenizedDocument(np.arange(s, s + n), f"doc-{d}", "synthetic", None)
                 for d, (s, n) in enumerate(zip(starts, lengths))]
    writer.write_manifest([writer.write_file("shard", documents)])
    return TokenStore(directory)


@pytest.fixture(scope="module")
def text_store(tmp_path_factory: pytest.TempPathFactory) -> TokenStore:
    """Sentences and paragraphs of English words through a real (tiny) sentencepiece tokenizer."""
    root = tmp_path_factory.mktemp("text")
    rng = random.Random(0)

    def sentence() -> str:
        return " ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 12))).capitalize() + rng.choice(".!?")

    def text() -> str:
        return "\n".join(" ".join(sentence() for _ in range(rng.randint(2, 6))) for _ in range(rng.randint(1, 4)))

    (root / "docs").mkdir()
    write_shard(root / "docs" / "part.parquet", [Document(f"d{i}", text(), "test", None) for i in range(80)])
    model = train_tokenizer(root / "docs", root / "tokenizer", 400)
    tokenize_shards(root / "docs", model, root / "store")
    return TokenStore(root / "store")


def pieces(store: TokenStore) -> list[str]:
    """Every piece of the store's tokenizer, by id."""
    processor = spm.SentencePieceProcessor(model_file=store.manifest["tokenizer"]["path"])
    return [processor.id_to_piece(i) for i in range(processor.get_piece_size())]


def original(sample: dict[str, np.ndarray]) -> np.ndarray:
    """The sample's tokens before corruption."""
    return np.where(sample["labels"] >= 0, sample["labels"], sample["input_ids"])


def chunk(dataset: BERTDataset, index: int) -> np.ndarray:
    """The document tokens sample `index` is made of, from its index entry."""
    document, start, length = dataset.sample_index[index]
    return dataset.store[int(document)][start: start + length].astype(np.int64)


def segments(sample: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """The original tokens of segments A and B of a sentence-order sample."""
    tokens, types = original(sample), sample["token_type_ids"]
    first_sep = int(np.flatnonzero(types == 1)[0]) - 1
    end = int(sample["attention_mask"].sum()) - 1
    return tokens[1:first_sep], tokens[first_sep + 1: end]


def test_sentence_order_layout(random_store: TokenStore) -> None:
    dataset = BERTDataset(random_store, 64, 300, seed=2)
    for i in range(len(dataset)):
        sample = dataset[i]
        assert {key: (value.dtype, value.shape) for key, value in sample.items()} == {
            **{key: (np.dtype(np.int64), (64,)) for key in ("input_ids", "labels", "attention_mask", "token_type_ids")},
            "loss_mask": (np.dtype(np.float32), (64,)), "sentence_order_label": (np.dtype(np.int64), ())}
        a, b = segments(sample)
        real = len(a) + len(b) + 3
        assert real == dataset.sample_index[i][2] + 3
        expected = np.concatenate([[CLS], a, [SEP], b, [SEP], np.full(64 - real, PAD)])
        assert np.array_equal(original(sample), expected)
        assert np.array_equal(sample["token_type_ids"], np.repeat([0, 1, 0], [len(a) + 2, len(b) + 1, 64 - real]))
        assert np.array_equal(sample["attention_mask"], np.arange(64) < real)
        assert np.array_equal(sample["loss_mask"], (sample["labels"] >= 0).astype(np.float32))
        assert len(a) >= 1 and len(b) >= 1
        whole = chunk(dataset, i)
        swapped = int(sample["sentence_order_label"])
        assert np.array_equal(np.concatenate([b, a] if swapped else [a, b]), whole)


def test_single_segment_layout(random_store: TokenStore) -> None:
    dataset = BERTDataset(random_store, 48, 200, seed=2, sentence_order=False)
    assert dataset.chunk_tokens == 46
    for i in range(len(dataset)):
        sample = dataset[i]
        whole = chunk(dataset, i)
        real = len(whole) + 2
        assert "sentence_order_label" not in sample
        assert np.array_equal(original(sample), np.concatenate([[CLS], whole, [SEP], np.full(48 - real, PAD)]))
        assert not sample["token_type_ids"].any()
        assert np.array_equal(sample["attention_mask"], np.arange(48) < real)


def test_masking_statistics(random_store: TokenStore) -> None:
    dataset = BERTDataset(random_store, 128, 400, seed=5)
    content = chosen = masked = replaced = kept = 0
    for i in range(len(dataset)):
        sample = dataset[i]
        real = int(sample["attention_mask"].sum())
        is_special = np.isin(original(sample), [CLS, SEP, PAD])
        picked = sample["labels"] >= 0
        assert not (picked & is_special).any()
        assert abs(int(picked.sum()) - 0.15 * (real - 3)) <= 1  # exact per sample, up to rounding
        inputs, labels = sample["input_ids"][picked], sample["labels"][picked]
        assert ((inputs == MASK) | ((inputs >= FIRST_REGULAR) & (inputs < random_store.vocab_size))).all()
        assert np.array_equal(np.sort(np.concatenate([labels, original(sample)[~picked & ~is_special]])),
                              np.sort(chunk(dataset, i)))
        content += real - 3
        chosen += int(picked.sum())
        masked += int((inputs == MASK).sum())
        kept += int((inputs == labels).sum())
        replaced += int(((inputs != MASK) & (inputs != labels)).sum())
    assert chosen / content == pytest.approx(0.15, abs=0.005)
    assert masked / chosen == pytest.approx(0.8, abs=0.02)
    assert replaced / chosen == pytest.approx(0.1, abs=0.015)
    assert kept / chosen == pytest.approx(0.1, abs=0.015)


def test_mask_probability_is_respected(random_store: TokenStore) -> None:
    dataset = BERTDataset(random_store, 128, 100, seed=5, mask_prob=0.3)
    samples = [dataset[i] for i in range(len(dataset))]
    chosen = sum(int(s["loss_mask"].sum()) for s in samples)
    content = sum(int(s["attention_mask"].sum()) - 3 for s in samples)
    assert chosen / content == pytest.approx(0.3, abs=0.01)
    with pytest.raises(DatasetError, match="mask_prob"):
        BERTDataset(random_store, 128, 100, seed=5, mask_prob=1.0)


def _samples_in_fresh_process(store_dir: Path, indices: list[int]) -> list[dict[str, np.ndarray]]:
    """Samples computed by a newly spawned interpreter, as another rank or worker would."""
    dataset = BERTDataset(TokenStore(store_dir), 64, 200, seed=7)
    return [dataset[i] for i in indices]


def test_samples_depend_only_on_seed_and_index(random_store: TokenStore) -> None:
    indices = [0, 17, 99, 199]
    first = BERTDataset(random_store, 64, 200, seed=7)
    expected = [first[i] for i in indices]
    again = BERTDataset(random_store, 64, 200, seed=7)
    backwards = [again[i] for i in reversed(indices)][::-1]
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        spawned = pool.submit(_samples_in_fresh_process, random_store.directory, indices).result()
    for reference, other, remote in zip(expected, backwards, spawned):
        assert reference.keys() == other.keys() == remote.keys()
        assert all(np.array_equal(reference[key], other[key]) for key in reference)
        assert all(np.array_equal(reference[key], remote[key]) for key in reference)
    reseeded = BERTDataset(random_store, 64, 200, seed=8)
    assert not all(np.array_equal(first[i]["labels"], reseeded[i]["labels"]) for i in indices)


def test_sentence_order_is_swapped_half_of_the_time(ranged_store: TokenStore) -> None:
    dataset = BERTDataset(ranged_store, 40, 600, seed=3)
    labels = []
    for i in range(len(dataset)):
        sample = dataset[i]
        a, b = segments(sample)
        # consecutive ids within a document: A after B in the document exactly when swapped
        assert bool(sample["sentence_order_label"]) == (a[0] > b[-1])
        assert np.array_equal(np.diff(np.concatenate([b, a] if a[0] > b[-1] else [a, b])), np.ones(len(a) + len(b) - 1))
        labels.append(int(sample["sentence_order_label"]))
    assert np.mean(labels) == pytest.approx(0.5, abs=0.06)


def test_segments_end_at_a_sentence_end_when_the_middle_half_has_one(text_store: TokenStore) -> None:
    ends = np.array([p.endswith((".", "!", "?")) or p == "<0x0A>" for p in pieces(text_store)])
    dataset = BERTDataset(text_store, 64, 200, seed=4)
    at_sentence_end = 0
    for i in range(len(dataset)):
        sample = dataset[i]
        a, b = segments(sample)
        first = b if sample["sentence_order_label"] else a
        whole = chunk(dataset, i)
        middle = np.arange(max(1, len(whole) // 4), min(len(whole) - 1, 3 * len(whole) // 4) + 1)
        if ends[whole[middle - 1]].any():
            assert ends[first[-1]]
            at_sentence_end += 1
        else:
            assert len(first) in middle
    assert at_sentence_end > 0.8 * len(dataset)


def word_starts(tokens: np.ndarray, vocabulary: list[str]) -> np.ndarray:
    """Which positions of a sample begin a word: a "▁" piece, or the piece after a special token or newline."""
    text = [vocabulary[t] for t in tokens]
    special = [t in SPECIAL_TOKENS.values() for t in tokens]
    return np.array([piece.startswith("\u2581") or special[k] or k == 0 or special[k - 1] or text[k - 1] == "<0x0A>"
                     for k, piece in enumerate(text)])


def partial_words(dataset: BERTDataset, vocabulary: list[str]) -> tuple[int, int]:
    """(words of several pieces chosen whole, words chosen in part) over the dataset."""
    whole = partial = 0
    for i in range(len(dataset)):
        sample = dataset[i]
        real = int(sample["attention_mask"].sum())
        starts = word_starts(original(sample)[:real], vocabulary)
        picked = (sample["labels"] >= 0)[:real]
        for word in np.split(picked, np.flatnonzero(starts)[1:]):
            whole += bool(word.all() and len(word) > 1)
            partial += bool(word.any() and not word.all())
    return whole, partial


def test_whole_word_masking_chooses_complete_words(text_store: TokenStore) -> None:
    vocabulary = pieces(text_store)
    masked_by_word = BERTDataset(text_store, 64, 150, seed=6, whole_word_masking=True)
    flags = masked_by_word.vocabulary
    assert np.array_equal(flags.word_start, [p.startswith("\u2581") for p in vocabulary])
    assert np.flatnonzero(flags.breaks_after).tolist() == [vocabulary.index(f"<0x{b:02X}>") for b in (9, 10, 13)]
    whole, partial = partial_words(masked_by_word, vocabulary)
    assert partial == 0 and whole > 100
    chosen = sum(int(masked_by_word[i]["loss_mask"].sum()) for i in range(len(masked_by_word)))
    content = sum(int(masked_by_word[i]["attention_mask"].sum()) - 3 for i in range(len(masked_by_word)))
    assert chosen / content == pytest.approx(0.15, abs=0.02)
    # the same check does catch token-level masking
    assert partial_words(BERTDataset(text_store, 64, 150, seed=6), vocabulary)[1] > 100


def test_whole_word_masking_needs_the_tokenizer_model(random_store: TokenStore) -> None:
    with pytest.raises(DatasetError, match="whole-word masking needs it"):
        BERTDataset(random_store, 64, 10, seed=1, whole_word_masking=True)
    with pytest.warns(UserWarning, match="cut at random points"):
        BERTDataset(random_store, 64, 10, seed=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        BERTDataset(random_store, 64, 10, seed=1, sentence_order=False)


def test_index_cuts_every_document_into_chunks(ranged_store: TokenStore) -> None:
    lengths = ranged_store.document_lengths
    per_document = lengths // 37 + (lengths % 37 >= MIN_CHUNK_TOKENS)
    dataset = BERTDataset(ranged_store, 40, int(per_document.sum()), seed=1)
    assert dataset.num_epochs == 1
    index = np.asarray(dataset.sample_index)
    for document, length in enumerate(lengths):
        rows = index[index[:, 0] == document]
        rows = rows[np.argsort(rows[:, 1])]
        assert len(rows) == per_document[document]
        assert np.array_equal(rows[:, 1], np.arange(len(rows)) * 37)
        assert (rows[:, 2] <= 37).all() and (rows[:, 2] >= MIN_CHUNK_TOKENS).all()
        assert length - rows[:, 2].sum() < MIN_CHUNK_TOKENS

    several = BERTDataset(ranged_store, 40, int(2.5 * per_document.sum()), seed=1)
    assert several.num_epochs == 3
    served = np.asarray(several.sample_index)[: len(several)]  # the index holds the whole third epoch
    _, counts = np.unique(served, axis=0, return_counts=True)
    assert set(counts) == {2, 3}
    with pytest.raises(DatasetError, match="data.num_epochs = 2"):
        BERTDataset(ranged_store, 40, int(2.5 * per_document.sum()), seed=1, max_epochs=2)


def test_documents_subset_is_respected(ranged_store: TokenStore) -> None:
    subset = np.arange(0, len(ranged_store), 2)
    dataset = BERTDataset(ranged_store, 40, 300, seed=1, documents=subset)
    allowed = np.concatenate([ranged_store[int(d)] for d in subset])
    drawn = np.concatenate([original(dataset[i]) for i in range(len(dataset))])
    assert np.isin(drawn[drawn >= FIRST_REGULAR], allowed).all()
    assert set(np.asarray(dataset.sample_index)[:, 0]) == {d for d in subset if ranged_store.document_lengths[d] >= 8}


def test_cached_index_is_loaded_memory_mapped(random_store: TokenStore, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    built = BERTDataset(random_store, 64, 150, seed=3, cache_dir=tmp_path)
    uncached = BERTDataset(random_store, 64, 150, seed=3)

    def refuse(*_: object) -> None:
        raise AssertionError("the index was rebuilt instead of read from the cache")

    monkeypatch.setattr(BERTDataset, "_build_index", refuse)
    loaded = BERTDataset(random_store, 64, 150, seed=3, cache_dir=tmp_path)
    assert isinstance(loaded.sample_index, np.memmap)
    for i in range(len(loaded)):
        assert all(np.array_equal(loaded[i][key], uncached[i][key]) for key in uncached[i])
    assert np.array_equal(built.sample_index, uncached.sample_index)
    with pytest.raises(AssertionError, match="rebuilt"):
        BERTDataset(random_store, 64, 150, seed=4, cache_dir=tmp_path)


def test_bad_parameters_are_reported(random_store: TokenStore) -> None:
    dataset = BERTDataset(random_store, 64, 10, seed=1)
    with pytest.raises(IndexError):
        dataset[10]
    with pytest.raises(DatasetError, match="at least 8"):
        BERTDataset(random_store, 10, 10, seed=1)
    with pytest.raises(DatasetError, match="has 8 tokens or more"):
        BERTDataset(random_store, 64, 10, seed=1, documents=np.flatnonzero(random_store.document_lengths < 8))


def test_a_different_tokenizer_model_is_refused(text_store: TokenStore, tmp_path: Path) -> None:
    model = text_store.manifest["tokenizer"]["path"]
    writer = TokenStoreWriter(tmp_path, text_store.vocab_size, SPECIAL_TOKENS, model, "another-tokenizer")
    writer.write_manifest([writer.write_file("shard", [TokenizedDocument(text_store[0], "d0", "test", None)])])
    with pytest.raises(DatasetError, match="not the one the store was tokenized with"):
        BERTDataset(TokenStore(tmp_path), 64, 10, seed=1)
