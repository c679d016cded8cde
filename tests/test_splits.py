"""Document splits: disjoint, complete, deterministic, never empty when asked for."""

from __future__ import annotations

import numpy as np
import pytest

from roots_scale.data.splits import SplitError, parse_split, split_documents


@pytest.mark.parametrize("num_documents", [3, 10, 999, 100_003])
@pytest.mark.parametrize("split", ["969,30,1", "90,10,0", "1", "1,1,1"])
def test_disjoint_complete_and_stable(num_documents: int, split: str) -> None:
    parts = split_documents(num_documents, split)
    assert np.array_equal(np.concatenate(list(parts.values())), np.arange(num_documents))
    for name, ratio in zip(("train", "valid", "test"), parse_split(split)):
        if ratio > 0:
            assert len(parts[name]) >= 1
            assert abs(len(parts[name]) - ratio * num_documents) <= 1 + (num_documents < 100)
        else:
            assert len(parts[name]) == 0
    again = split_documents(num_documents, split)
    assert all(np.array_equal(parts[k], again[k]) for k in parts)


def test_errors_name_the_value() -> None:
    with pytest.raises(SplitError, match="'a,b'"):
        parse_split("a,b")
    with pytest.raises(SplitError, match="non-negative"):
        parse_split("1,-1")
    with pytest.raises(SplitError, match="at least 3 documents"):
        split_documents(2, "8,1,1")
