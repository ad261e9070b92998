"""Content digests: a SHA-256 of a table's rows that does not depend on how they are stored.

The file ``sha256`` in a manifest changes with the row-group size, the compression, the writer's
version and the row order; the content digest does not. It is defined on values:

1. Every column is brought to a canonical Arrow type (`canonical_column`): integers to int64,
   floats to float64 with ``-0.0`` written as ``0.0`` and every NaN as one NaN, strings to
   large_string, binaries to large_binary, dates to date32, dictionary columns to their values,
   decimals to decimal128(38, scale) (the precision is only a bound; the scale counts: 1.50 at
   scale 2 is not 1.5 at scale 1), timestamps to microseconds (nanoseconds only when a value
   has sub-microsecond digits). A zone-aware timestamp is an instant, so its zone name does not
   count (it becomes UTC); a naive one is a wall-clock reading and stays naive, so the two
   differ. Nulls stay nulls.
2. The rows are sorted by the dataset's primary key; if that leaves two rows tied (no key, or a
   duplicate key), by the key and then every other column (by name). Either way two rows tie only
   when they are equal in every canonical value, so any storage order gives the same sequence.
   The primary key is part of the definition: digests compare datasets of the same spec.
3. SHA-256 runs over a versioned header, the row count, and each column (by name): its name, its
   canonical type, its validity (a flag, then a bit per row when a null is present), and its
   values (fixed-width values as little-endian bytes with nulls zeroed; variable-width values
   as 64-bit offsets from zero and the bytes).

A partition's digest is that hash of its file's rows. A dataset's digest is the SHA-256 of its
partitions' ``(year, digest)`` pairs in year order (`combine`); partitions follow from the
partition column, a row value, so equal rows give equal partitions.

Equal: the same rows in any order, any row-group size, compression or Parquet version; int32 and
int64 of the same value; NaN and NaN; ``-0.0`` and ``0.0``; the same instant in any unit that
holds it, whatever zone it is shown in. Different: any changed, added or removed row; a renamed
column; a null and a value (also a null and NaN); naive and zone-aware timestamps.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

__all__ = ["DIGEST_VERSION", "combine", "file_digest", "table_digest"]

# Arrays are typed Any: the pyarrow stubs cannot follow the casts between types here.

#: Bumped if the canonical encoding ever changes (part of every digest's input).
DIGEST_VERSION = 1
_HEADER = b"wrdsvault-content-digest\x00v%d\x00" % DIGEST_VERSION


def _canonical_float(arr: Any) -> Any:
    arr = pc.cast(arr, pa.float64())
    values = arr.to_numpy(zero_copy_only=False).copy()  # nulls become NaN; validity kept apart
    values[values == 0.0] = 0.0  # -0.0 -> 0.0
    nan = np.isnan(values)
    if nan.any():
        values[nan] = np.nan  # one NaN bit pattern
    if arr.null_count == 0:
        return pa.array(values, pa.float64())
    return pa.array(values, pa.float64(), mask=arr.is_null().to_numpy(zero_copy_only=False))


def canonical_column(arr: Any) -> Any:
    """``arr`` in its canonical type (see the module docstring)."""
    t = arr.type
    if pa.types.is_dictionary(t):
        return canonical_column(arr.dictionary_decode())
    if pa.types.is_boolean(t) or pa.types.is_null(t):
        return arr
    if pa.types.is_integer(t):
        try:
            return pc.cast(arr, pa.int64())
        except pa.ArrowInvalid:  # uint64 past int64
            return pc.cast(arr, pa.large_string())
    if pa.types.is_floating(t):
        return _canonical_float(arr)
    if pa.types.is_string(t) or pa.types.is_large_string(t) or str(t) == "string_view":
        return pc.cast(arr, pa.large_string())
    if pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_fixed_size_binary(t):
        return pc.cast(arr, pa.large_binary())
    if pa.types.is_date(t):
        return pc.cast(arr, pa.date32())
    if pa.types.is_timestamp(t):
        tz = None if t.tz is None else "UTC"  # an aware value is an instant: zone name aside
        try:
            return pc.cast(arr, pa.timestamp("us", tz))
        except pa.ArrowInvalid:  # sub-microsecond digits: keep them
            return pc.cast(arr, pa.timestamp("ns", tz))
    if pa.types.is_time(t):
        try:
            return pc.cast(arr, pa.time64("us"))
        except pa.ArrowInvalid:
            return pc.cast(arr, pa.time64("ns"))
    if pa.types.is_decimal(t):
        try:  # the value at its scale; the precision is only a bound
            return pc.cast(arr, pa.decimal128(38, t.scale))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):  # past 38 digits
            return pc.cast(arr, pa.large_string())
    # anything else (lists, structs, ...): its Python repr, slow but total
    return pa.array([None if v is None else repr(v) for v in arr.to_pylist()], pa.large_string())


def _type_tag(t: pa.DataType) -> bytes:
    return str(t).encode()


def _feed(h: hashlib._Hash, name: str, arr: Any) -> None:
    n = len(arr)
    for part in (name.encode(), _type_tag(arr.type)):
        h.update(struct.pack("<Q", len(part)))
        h.update(part)
    if pa.types.is_null(arr.type):
        return
    if arr.null_count == 0:
        h.update(b"\x00")  # no nulls
    else:
        h.update(b"\x01")
        h.update(np.packbits(arr.is_valid().to_numpy(zero_copy_only=False)).tobytes())
    if pa.types.is_large_string(arr.type) or pa.types.is_large_binary(arr.type):
        filled = arr.fill_null("" if pa.types.is_large_string(arr.type) else b"")
        filled = pa.concat_arrays([filled]) if filled.offset else filled
        bufs = filled.buffers()
        offsets = np.frombuffer(bufs[1], dtype="<i8", count=n + 1)
        start, end = int(offsets[0]), int(offsets[-1])
        h.update((offsets - start).tobytes())
        if bufs[2] is not None:
            h.update(memoryview(bufs[2])[start:end])
        return
    if pa.types.is_decimal(arr.type):  # decimal128(38, s): 16 little-endian bytes a value
        if arr.null_count:
            arr = pc.if_else(arr.is_valid(), arr, pa.scalar(0, pa.int64()).cast(arr.type))
        arr = pa.concat_arrays([arr]) if arr.offset else arr
        h.update(memoryview(arr.buffers()[1])[: 16 * n])
        return
    if pa.types.is_boolean(arr.type):
        values = arr.fill_null(False).to_numpy(zero_copy_only=False).astype(np.uint8)
    else:
        if pa.types.is_floating(arr.type):
            storage = arr
        else:
            storage = arr.view(pa.int32() if pa.types.is_date32(arr.type) else pa.int64())
        values = storage.fill_null(0).to_numpy(zero_copy_only=False)
    h.update(np.ascontiguousarray(values).astype(values.dtype.newbyteorder("<")).tobytes())


def _sort_order(canon: pa.Table, keys: Sequence[str]) -> Any:
    """Indices sorting ``canon`` by ``keys``; None if ``keys`` leave two rows tied."""
    if not keys:
        return None
    idx = pc.sort_indices(canon, sort_keys=[(k, "ascending") for k in keys])
    ties: Any = None
    for k in keys:
        col: Any = canon.column(k).combine_chunks().take(idx)
        a, b = col.slice(1), col.slice(0, len(col) - 1)
        same = pc.or_kleene(pc.equal(a, b), pc.and_(a.is_null(), b.is_null())).fill_null(False)
        if pa.types.is_floating(col.type):  # NaN sorts as equal to NaN
            same = pc.or_(same, pc.and_(pc.is_nan(a), pc.is_nan(b)).fill_null(False))
        ties = same if ties is None else pc.and_(ties, same)
    if ties is not None and pc.any(ties).as_py():
        return None
    return idx


def _digest(read: Callable[[list[str]], pa.Table], names: Sequence[str], key: Sequence[str]) -> str:
    """The digest of the table ``read(columns)`` returns, read a few columns at a time."""
    names = sorted(names)

    def canon_of(cols: Sequence[str]) -> pa.Table:
        table = read(list(cols))
        return pa.table(
            {n: canonical_column(table.column(n).combine_chunks()) for n in cols},
            schema=None,
        )

    keys = [k for k in key if k in names]
    keyed = canon_of(keys) if keys else None
    rows = keyed.num_rows if keyed is not None else read(names[:1]).num_rows if names else 0
    order: Any = _sort_order(keyed, keys) if keyed is not None and rows > 1 else None
    whole: pa.Table | None = None
    if order is None and rows > 1:  # no key, or a tie on it: every column breaks ties
        whole = canon_of(names)
        rest = [n for n in names if n not in keys and not pa.types.is_null(whole.column(n).type)]
        order = pc.sort_indices(whole, sort_keys=[(k, "ascending") for k in keys + rest])
    identity = order is None or _is_identity(order)
    h = hashlib.sha256(_HEADER)
    h.update(struct.pack("<QQ", rows, len(names)))
    for name in names:
        src = whole if whole is not None else canon_of([name])
        col = src.column(name).combine_chunks()
        _feed(h, name, col if identity else col.take(order))
    return h.hexdigest()


def table_digest(table: pa.Table, primary_key: Sequence[str] = ()) -> str:
    """The content digest of ``table``'s rows (hex SHA-256); see the module docstring."""
    return _digest(table.select, table.column_names, primary_key)


def _is_identity(idx: Any) -> bool:
    values = idx.to_numpy(zero_copy_only=False)
    return bool(np.array_equal(values, np.arange(len(values), dtype=values.dtype)))


def file_digest(path: str | Path, primary_key: Sequence[str] = ()) -> str:
    """The content digest of the rows of one Parquet file (as `table_digest`).

    Reads the key columns, then one column at a time: memory stays at about one column.
    """
    pf = pq.ParquetFile(path)
    try:
        names = pf.schema_arrow.names
        return _digest(lambda cols: pf.read(columns=cols), names, primary_key)
    finally:
        pf.close()


def combine(parts: Iterable[tuple[int | None, str]]) -> str:
    """A dataset's digest from its partitions' ``(year, digest)`` pairs (any order)."""
    h = hashlib.sha256(_HEADER + b"dataset\x00")
    for year, digest in sorted(parts, key=lambda p: -1 if p[0] is None else p[0]):
        h.update(b"%d:%s\n" % (-1 if year is None else year, digest.encode()))
    return h.hexdigest()
