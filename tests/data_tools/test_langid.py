"""Language identification: the vectorized automaton walk gives py3langid's answers exactly."""

from __future__ import annotations

import random

import numpy as np
import pyarrow.parquet as pq
import pytest
from py3langid.langid import MODEL_FILE, LanguageIdentifier

from data_tools.extract import extract_files
from data_tools.filters import langid
from data_tools.filters.langid import AUTOMATON_MEMORY, identification_sample, language_identifier
from data_tools.filters.lexicons import stopwords
from data_tools.shards import list_shards


@pytest.fixture(scope="module")
def reference() -> LanguageIdentifier:
    return LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)


def test_the_automaton_forgets_all_but_its_last_bytes():
    """From every state, reading any AUTOMATON_MEMORY bytes ends where reading them from the start ends
    (and one byte fewer does not), so each position's state needs only the bytes before it."""
    identifier = language_identifier()
    next_state = np.frombuffer(identifier.tk_nextmove, dtype=np.uint32)
    row_start = np.asarray(identifier.tk_row, dtype=np.int64) << 8
    states = len(row_start)
    walked, fresh = np.arange(states, dtype=np.int64), np.zeros(states, dtype=np.int64)
    every_byte = np.arange(256)
    for length in range(1, AUTOMATON_MEMORY + 1):
        assert len(walked), f"the automaton already forgets after {length - 1} bytes"
        walked = next_state[(row_start[walked][:, None] + every_byte).ravel()].astype(np.int64)
        fresh = next_state[(row_start[fresh][:, None] + every_byte).ravel()].astype(np.int64)
        differ = walked != fresh
        pairs = np.unique(walked[differ] * states + fresh[differ])  # distinct (walked, fresh) states that differ
        walked, fresh = pairs // states, pairs % states
    assert not len(walked)


def random_texts(seed: int) -> list[str]:
    """Stop-word prose in many languages, mixed scripts, digits, emoji, and texts shorter than the memory."""
    rng = random.Random(seed)
    languages = ["en", "fr", "de", "es", "ru", "ar", "zh", "ja", "hi", "fi", "tr", "vi", "id", "pt", "nl"]
    lexicons = [sorted(stopwords(lang) or ()) for lang in languages]
    alphabet = "abcXYZ éüßøñ çİı ΣσςЖжЯ 中文字日本語 한국어 العربية हिन्दी 0123456789 .,;!? 😀👍🏽 \u200b\t"
    texts = ["", "a", "ab", "Zürich", "ЖЖЖЖЖ", "ABCDEF", "HELLO WORLD, THIS IS LOUD", "  ", "12345", "😀"]
    for _ in range(300):
        words = rng.choice([w for w in lexicons if w])
        prose = " ".join(rng.choice(words) for _ in range(rng.randint(1, 400)))
        noise = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 60)))
        texts.append(prose if rng.random() < 0.5 else prose + noise + prose.upper())
    texts += ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 12))) for _ in range(200)]
    return texts


def real_texts(fixture_path, tmp_path) -> list[str]:
    extract_files([fixture_path("dolma_sample-0000.warc.gz"), fixture_path("cc-main-2024-22_whirlwind.warc.gz")],
                  "warc", tmp_path)
    extract_files([fixture_path("cc_net_sample.wet.txt")], "wet", tmp_path)
    extract_files([fixture_path("enwiki-table-markup.xml.bz2")], "wikipedia", tmp_path)
    return [text for shard in list_shards(tmp_path)
            for text in pq.read_table(shard, columns=["text"]).column("text").to_pylist()]


def test_identification_equals_py3langid_bit_for_bit(reference, fixture_path, tmp_path):
    texts = random_texts(seed=0) + real_texts(fixture_path, tmp_path)
    languages = set()
    for text in texts:
        sample = identification_sample(text)
        expected = reference.classify(sample)
        assert language_identifier().classify(sample) == expected, sample[:80]
        languages.add(expected[0])
    assert len(languages) >= 10  # the texts exercise many languages' weights, not one


def test_the_unpacked_model_is_cached_whole_reused_and_rebuilt_when_damaged(reference, tmp_path, monkeypatch):
    monkeypatch.setenv("ROOTS_CACHE_DIR", str(tmp_path))
    texts = ["The cat sat on the mat.", "Le chat est sur le tapis.", "猫はマットの上に座った。", ""]
    expected = [reference.classify(text) for text in texts]
    language_identifier.cache_clear()
    try:
        assert [language_identifier().classify(text) for text in texts] == expected  # unpacked, then cached
        cache = langid._model_cache_dir()
        assert [path.name for path in tmp_path.iterdir()] == [cache.name]  # no staging directory left behind
        assert sorted(path.name for path in cache.iterdir()) == sorted(f"{name}.npy" for name in langid._MODEL_ARRAYS)
        written = (cache / "weights.npy").stat().st_mtime_ns

        language_identifier.cache_clear()
        assert [language_identifier().classify(text) for text in texts] == expected  # mapped from the cache
        assert (cache / "weights.npy").stat().st_mtime_ns == written

        (cache / "weights.npy").write_bytes(b"not an array")  # damaged: unpacked again and the cache rewritten
        language_identifier.cache_clear()
        assert [language_identifier().classify(text) for text in texts] == expected
        assert langid._cached_model() is not None
    finally:
        language_identifier.cache_clear()
