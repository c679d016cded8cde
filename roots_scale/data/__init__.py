"""From token stores to training batches: splits, sample indices, blends, the cached index builder and
the data-parallel loader. `SampleSource` is what every dataset here is."""

from typing import Any, Protocol


class SampleSource(Protocol):
    """A dataset of samples by index: GPT windows, BERT samples, or a blend of either."""

    def __len__(self) -> int: ...
    def __getitem__(self, index: int) -> Any: ...
