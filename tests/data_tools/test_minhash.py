"""MinHash: normalization, exact 61-bit arithmetic, Jaccard estimates, LSH band collisions, determinism."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from data_tools.errors import DataToolsError
from data_tools.minhash import MERSENNE_PRIME, MinHasher, exact_hashes, normalize, shingle_hashes

REPO_ROOT = Path(__file__).resolve().parents[2]
VOCABULARY = [f"w{i}" for i in range(5000)]


def words(seed: int, count: int) -> list[str]:
    """`count` words drawn from a large vocabulary, reproducibly."""
    rng = random.Random(seed)
    return [rng.choice(VOCABULARY) for _ in range(count)]


def encoded(*texts: str) -> list[bytes]:
    return [normalize(text).encode("utf-8") for text in texts]


def shingle_jaccard(a: str, b: str, shingle_size: int = 5) -> float:
    hashes, offsets = shingle_hashes(encoded(a, b), shingle_size)
    first, second = set(hashes[: offsets[1]].tolist()), set(hashes[offsets[1]:].tolist())
    return len(first & second) / len(first | second)


def test_normalize_folds_unicode_form_case_and_whitespace():
    assert normalize("  Ｈｅｌｌｏ\u00a0 WORLD\n\t\u3000ﬁne  Straße ") == "hello world fine strasse"
    assert normalize("") == "" and normalize(" \n ") == ""


def test_equivalent_texts_have_identical_hashes_and_signatures():
    text = " ".join(words(1, 120))
    variant = "  " + text.upper().replace(" ", " \n ") + "\t"
    other = " ".join(words(2, 120))
    normalized = encoded(text, variant, other)
    exact = exact_hashes(normalized)
    signatures = MinHasher().signatures(normalized)
    assert exact.shape == (3, 2) and signatures.shape == (3, 112)
    assert np.array_equal(exact[0], exact[1]) and not np.array_equal(exact[0], exact[2])
    assert np.array_equal(signatures[0], signatures[1])
    assert (signatures[0] == signatures[2]).mean() < 0.1


def test_signatures_are_the_exact_modular_minimum_and_independent_of_batching():
    hasher = MinHasher(shingle_size=3, bands=4, rows=2)
    texts = encoded(*(" ".join(words(seed, count)) for seed, count in ((3, 700), (4, 1), (5, 0), (6, 1300), (7, 9))))
    signatures = hasher.signatures(texts)  # documents straddle the 512-shingle blocks
    hashes, offsets = shingle_hashes(texts, 3)
    for doc in (0, 1, 2, 4):
        shingles = [int(h) % MERSENNE_PRIME for h in hashes[offsets[doc]:offsets[doc + 1]]]
        expected = [min((int(a) * x + int(b)) % MERSENNE_PRIME for x in shingles) for a, b in zip(hasher.a, hasher.b)]
        assert signatures[doc].tolist() == expected
    one_by_one = np.concatenate([hasher.signatures([text]) for text in texts])
    assert np.array_equal(signatures, one_by_one)


def test_short_documents_are_one_shingle_of_the_whole_text():
    hashes, offsets = shingle_hashes([b"a b", b"b a", b"", b"a b c d e f"], 5)
    assert offsets.tolist() == [0, 1, 2, 3, 5]
    assert len(set(hashes.tolist())) == 5  # word order matters; the empty text is a shingle too


@pytest.mark.parametrize("changed", [10, 40, 90, 150])
def test_jaccard_estimate_is_close_to_the_true_shingle_jaccard(changed):
    base = words(10, 300)
    edited = list(base)
    rng = random.Random(changed)
    for position in rng.sample(range(300), changed):
        edited[position] = f"x{position}"
    a, b = " ".join(base), " ".join(edited)
    signatures = MinHasher().signatures(encoded(a, b))
    estimate = float((signatures[0] == signatures[1]).mean())
    truth = shingle_jaccard(a, b)
    assert 0.0 < truth < 1.0
    assert abs(estimate - truth) < 0.12, (estimate, truth)  # 112 permutations: standard error ≤ 0.05


def test_band_keys_collide_for_near_duplicates_and_not_for_unrelated_texts():
    hasher = MinHasher()
    for seed in range(20):
        base = words(seed, 200)
        edited = list(base)
        edited[100 + seed] = "changed"
        unrelated = words(1000 + seed, 200)
        keys = hasher.band_keys(hasher.signatures(encoded(*(" ".join(w) for w in (base, edited, unrelated)))))
        assert keys.shape == (3, 14)
        assert (keys[0] == keys[1]).any(), seed
        assert not (keys[0] == keys[2]).any(), seed


def test_signatures_are_the_same_in_another_process():
    texts = [" ".join(words(seed, 50)) for seed in range(3)]
    code = (
        "import json, sys\n"
        "from data_tools.minhash import MinHasher, normalize\n"
        "h = MinHasher()\n"
        "texts = json.loads(sys.stdin.read())\n"
        "print(json.dumps(h.band_keys(h.signatures([normalize(t).encode() for t in texts])).tolist()))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], input=json.dumps(texts), capture_output=True, text=True,
                            cwd=REPO_ROOT, env={**os.environ, "PYTHONHASHSEED": "12345"}, check=True)
    hasher = MinHasher()
    assert json.loads(result.stdout) == hasher.band_keys(hasher.signatures(encoded(*texts))).tolist()


@pytest.mark.parametrize("kwargs, named", [({"shingle_size": 0}, "shingle size 0"), ({"bands": -1}, "bands -1"),
                                           ({"rows": 2.5}, "rows 2.5")])
def test_invalid_parameters_are_refused(kwargs, named):
    with pytest.raises(DataToolsError, match=f"MinHash {named} is invalid: it must be a whole number ≥ 1"):
        MinHasher(**kwargs)
