"""Arrow arrays built from numpy buffers, so that a worker process starts writing at once.

`pyarrow.array` imports pandas the first time a process calls it (to ask whether its argument is
a pandas object): about 0.5 s of CPU, paid again by every worker process that writes a shard.
These builders make the same arrays straight from buffers, without that import.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa

_MAX_STRING_BYTES = 2**31 - 1  # an Arrow string array addresses its bytes with int32 offsets


def numpy_array(values: np.ndarray) -> pa.Array:
    """The Arrow array (no nulls) of a 1-D numeric numpy array."""
    values = np.ascontiguousarray(values)
    return pa.Array.from_buffers(pa.from_numpy_dtype(values.dtype), len(values), [None, pa.py_buffer(values)])


def string_array(values: Sequence[str | None]) -> pa.Array:
    """The Arrow string array of `values`, None as null; ValueError beyond Arrow's 2 GiB per string array."""
    encoded = [b"" if value is None else value.encode("utf-8") for value in values]
    offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
    np.cumsum(np.fromiter(map(len, encoded), np.int64, len(encoded)), out=offsets[1:])
    if offsets[-1] > _MAX_STRING_BYTES:
        raise ValueError(f"{offsets[-1]:,} bytes of text exceed the {_MAX_STRING_BYTES:,} an Arrow string array holds")
    valid = np.fromiter((value is not None for value in values), bool, len(encoded))
    validity = None if valid.all() else pa.py_buffer(np.packbits(valid, bitorder="little"))
    return pa.Array.from_buffers(pa.string(), len(encoded), [validity, pa.py_buffer(offsets.astype(np.int32)),
                                                             pa.py_buffer(b"".join(encoded))])
