"""Document splits: parsing, disjoint and complete by construction, deterministic, never empty when asked for."""

from __future__ import annotations

import numpy as np
import pytest

from roots_scale.config import ConfigError, parse_split
from roots_scale.data.splits import SplitError, split_documents


@pytest.mark.parametrize("text, expected", [("969,30,1", (0.969, 0.03, 0.001)), ("90,10", (0.9, 0.1, 0.0)),
                                            ("1", (1.0, 0.0, 0.0)), (" 2, 1 ,1 ", (0.5, 0.25, 0.25)),
                                            ("0,0,3", (0.0, 0.0, 1.0))])
def test_parse_split(text: str, expected: tuple[float, float, float]) -> None:
    assert parse_split(text) == pytest.approx(expected)


@pytest.mark.parametrize("text, fragment", [("a,b", "not a list of numbers"), ("", "not a list of numbers"),
                                            ("1,2,3,4", "has 4 parts"), ("1,-1", "negative"), ("0,0,0", "sums to 0"),
                                            ("nan,1,1", "NaN"), ("inf,1", "infinite")])
def test_bad_splits_name_the_value_and_the_format(text: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_split(text)
    assert fragment in str(err.value) and repr(text) in str(err.value) and "'969,30,1'" in str(err.value)


@pytest.mark.parametrize("num_documents", [3, 10, 999, 100_003])
@pytest.mark.parametrize("split", ["969,30,1", "90,10,0", "1", "1,1,1", "0,1,0"])
def test_splits_are_disjoint_complete_and_sized_by_ratio(num_documents: int, split: str) -> None:
    parts = split_documents(num_documents, split)
    assert list(parts) == ["train", "valid", "test"]
    joined = np.concatenate(list(parts.values()))
    assert len(joined) == num_documents and np.array_equal(np.sort(joined), np.arange(num_documents))
    for part, ratio in zip(parts.values(), parse_split(split)):
        assert np.array_equal(part, np.sort(part)) and part.dtype == np.int64
        if ratio == 0:
            assert len(part) == 0
        else:  # within one document of its share, except that a tiny store still gives every split one
            assert len(part) >= 1 and abs(len(part) - ratio * num_documents) < (1 if num_documents > 100 else 2)


def test_splits_are_deterministic_and_mixed_through_the_store() -> None:
    first, again, other = (split_documents(10_000, "90,5,5", seed=s) for s in (0, 0, 1))
    assert all(np.array_equal(first[k], again[k]) for k in first)
    assert not np.array_equal(first["valid"], other["valid"])
    # a permutation, not the last 5 % of the store: valid comes from everywhere in it
    assert first["valid"].min() < 1000 and first["valid"].max() > 9000
    assert np.array_equal(split_documents(10_000, "90,5,5")["valid"], first["valid"])  # seed 0 is the default


def test_too_few_documents_for_the_splits_asked_for() -> None:
    assert [len(p) for p in split_documents(3, "969,30,1").values()] == [1, 1, 1]
    assert [len(p) for p in split_documents(2, "969,30,0").values()] == [1, 1, 0]
    with pytest.raises(SplitError, match="'969,30,1' needs at least 3 documents .* the store has 2"):
        split_documents(2, "969,30,1")
    with pytest.raises(SplitError, match="needs at least 1 documents"):
        split_documents(0, "1")
