"""NumPy views of Arrow arrays that do not import pandas.

``pyarrow.Array.to_numpy`` and ``pyarrow.array(ndarray)`` go through pyarrow's pandas
conversion layer, which imports pandas (~0.3-0.6 s of CPU and ~40 MB of memory in a fresh
process) the first time either runs. The sync's hot path (row-hash sums, stream facts, the
content digest) only needs plain fixed-width values and validity bits, so it reads Arrow's
buffers directly with these helpers: a sync then loads pandas only when a caller asks for a
DataFrame.

Every helper takes a single (not chunked) array of a fixed-width type.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

__all__ = ["bools", "from_numpy", "valid", "values"]


def values(arr: Any, dtype: Any) -> Any:
    """A read-only NumPy view of ``arr``'s values as ``dtype`` (the slot of a null is arbitrary).

    ``dtype`` must have the width of ``arr``'s type (``"<i8"`` for int64, ``"<f8"`` for
    float64, ``"<i4"`` for int32 and date32, ...).
    """
    dt = np.dtype(dtype)
    buf = arr.buffers()[1]
    if len(arr) == 0 or buf is None:
        return np.empty(0, dtype=dt)
    return np.frombuffer(buf, dtype=dt, count=len(arr), offset=arr.offset * dt.itemsize)


def _bits(buf: Any, offset: int, length: int) -> Any:
    """``length`` little-endian bits of ``buf`` from bit ``offset``, as a bool array."""
    start, skip = divmod(offset, 8)
    nbytes = (skip + length + 7) // 8
    raw = np.frombuffer(buf, dtype=np.uint8, count=nbytes, offset=start)
    return np.unpackbits(raw, bitorder="little")[skip : skip + length].view(np.bool_)


def valid(arr: Any) -> Any:
    """A bool array: True where ``arr`` holds a value, False where it holds a null."""
    if arr.null_count == 0:
        return np.ones(len(arr), dtype=np.bool_)
    if pa.types.is_null(arr.type):
        return np.zeros(len(arr), dtype=np.bool_)
    return _bits(arr.buffers()[0], arr.offset, len(arr))


def bools(arr: Any) -> Any:
    """The values of a boolean array as a bool array (a null's slot is arbitrary)."""
    if len(arr) == 0:
        return np.zeros(0, dtype=np.bool_)
    return _bits(arr.buffers()[1], arr.offset, len(arr))


def from_numpy(data: Any, type_: pa.DataType, mask: Any = None) -> Any:
    """A fixed-width Arrow array of ``type_`` holding ``data``; ``mask`` True marks a null."""
    data = np.ascontiguousarray(data)
    validity = None
    if mask is not None and bool(np.any(mask)):
        bits: Any = np.packbits(~np.asarray(mask, dtype=np.bool_), bitorder="little")
        validity = pa.py_buffer(memoryview(bits))
    return pa.Array.from_buffers(type_, len(data), [validity, pa.py_buffer(memoryview(data))])
