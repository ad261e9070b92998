"""Content digests: a SHA-256 of a table's rows that does not depend on how they are stored.

The file ``sha256`` in a manifest changes with the row-group size, the compression, the writer's
version and the row order; the content digest does not. It is defined on values:

1. **Order.** The rows are taken in the order of the dataset's primary key. If the key leaves
   two rows tied (a duplicate key, or no key), they are ordered by the key and then every other
   column (by name). Two rows tie then only when they are equal in every value, so any storage
   order gives one sequence. The primary key is part of the definition (a dataset's spec fixes
   it), and so is the column order of tie-breaking.
2. **Values.** Each column is hashed in canonical form, fixed by its type alone (`_kind`):
   signed and small unsigned integers as int64, uint64 as itself, floats as float64 with ``-0.0``
   written as ``0.0`` and every NaN as one NaN, strings and binaries as their bytes, dates as
   days, timestamps as microseconds (nanoseconds for a nanosecond column) with a zone-aware
   value taken as a UTC instant (its zone name does not count, naive and aware differ),
   decimals as their unscaled integer (the scale counts, the precision is only a bound),
   dictionary columns as their values. Anything else (lists, structs) as its Python ``repr``.
3. **Hash.** Per column, three SHA-256 streams that do not depend on where batches or row groups
   begin: the row numbers of its nulls, the lengths of variable-width values, and the values
   (little-endian, as Arrow holds them on the little-endian machines it runs on; nulls as zero).
   The digest is the SHA-256 of a versioned header, the row and column counts, and per column
   (by name) its name, canonical type and the three stream digests.

Because the streams are cut-independent, a sync hashes its batches as they pass (`Digester`),
with no second read, whenever the source sends them in strictly increasing key order (the
bundled sources do); otherwise the digest is computed from the written file, sorted
(`file_digest`). Both give the same digest by construction.

A dataset's digest is the SHA-256 of its partitions' ``(year, digest)`` pairs in year order
(`combine`); the partition follows from the partition column, a row value.

Equal: the same rows in any order, any row-group size, codec or Parquet version; int32 and int64
of the same value; NaN and NaN; ``-0.0`` and ``0.0``; an instant in any zone; numeric(10,6) and
numeric(12,6) of one value. Different: any changed, added or removed row; a renamed column; a
null and a value (also a null and NaN); naive and zone-aware timestamps; another scale.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from wrdsvault import _arrays
from wrdsvault._arrays import bools, from_numpy, valid

__all__ = ["DIGEST_VERSION", "Digester", "combine", "file_digest", "table_digest"]

# Arrays are typed Any: the pyarrow stubs cannot follow the casts between types here.

#: Bumped if the canonical encoding ever changes (part of every digest's input).
DIGEST_VERSION = 1
_HEADER = b"wrdsvault-content-digest\x00v%d\x00" % DIGEST_VERSION


def _kind(t: pa.DataType) -> tuple[str, str]:
    """(how a column of type ``t`` is hashed, its canonical type tag): from the type alone."""
    if pa.types.is_dictionary(t):
        return _kind(t.value_type)
    if pa.types.is_null(t):
        return "null", "null"
    if pa.types.is_boolean(t):
        return "bool", "bool"
    if pa.types.is_uint64(t):
        return "uint", "uint64"
    if pa.types.is_integer(t):
        return "int", "int64"
    if pa.types.is_floating(t):
        return "float", "float64"
    if pa.types.is_string(t) or pa.types.is_large_string(t) or str(t) == "string_view":
        return "str", "utf8"
    if pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_fixed_size_binary(t):
        return "bin", "binary"
    if pa.types.is_date(t):
        return "date", "date32"
    if pa.types.is_timestamp(t):
        unit = "ns" if t.unit == "ns" else "us"
        return "ts", f"timestamp[{unit}{', UTC' if t.tz is not None else ''}]"
    if pa.types.is_time(t):
        return "time", f"time64[{'ns' if t.unit == 'ns' else 'us'}]"
    if pa.types.is_decimal128(t):
        return "dec16", f"decimal128(scale={t.scale})"
    if pa.types.is_decimal256(t):
        return "dec32", f"decimal256(scale={t.scale})"
    return "repr", "repr"


def _floats(arr: Any) -> Any:
    """float64 values with -0.0 as 0.0, one NaN, nulls as 0.0 (a numpy array)."""
    values = _arrays.values(pc.cast(arr, pa.float64()), "<f8").copy()
    values[values == 0.0] = 0.0  # -0.0 -> 0.0
    nan = np.isnan(values)
    if nan.any():
        values[nan] = np.nan  # one NaN bit pattern
    if arr.null_count:
        values[~valid(arr)] = 0.0
    return values


def _fixed_bytes(arr: Any, width: int) -> Any:
    """The little-endian value bytes of a fixed-width array, nulls zeroed (no copy if none)."""
    raw = np.frombuffer(arr.buffers()[1], dtype=np.uint8)
    values: Any = raw[arr.offset * width : (arr.offset + len(arr)) * width]
    if arr.null_count:
        values = values.reshape(len(arr), width).copy()
        values[~valid(arr)] = 0
    return memoryview(values)


class _Column:
    """The three hash streams of one column (see the module docstring)."""

    def __init__(self, name: str, t: pa.DataType) -> None:
        self.name = name
        self.kind, self.tag = _kind(t)
        ns = self.tag.startswith(("timestamp[ns", "time64[ns"))
        self.unit: Literal["us", "ns"] = "ns" if ns else "us"
        self.nulls = hashlib.sha256()
        self.lengths = hashlib.sha256()
        self.values = hashlib.sha256()

    def update(self, arr: Any, first_row: int) -> None:
        """Hash ``arr``, whose first value is row ``first_row`` of the (ordered) table."""
        if isinstance(arr, pa.ChunkedArray):
            for chunk in arr.chunks:
                self.update(chunk, first_row)
                first_row += len(chunk)
            return
        if pa.types.is_dictionary(arr.type):
            arr = arr.dictionary_decode()
        kind = self.kind
        if kind == "null" or len(arr) == 0:
            return
        if arr.null_count:
            where = np.flatnonzero(~valid(arr))
            rows: Any = where.astype(np.int64) + first_row
            self.nulls.update(memoryview(rows))
        if kind == "repr":
            arr = pa.array([None if v is None else repr(v) for v in arr.to_pylist()], pa.string())
            kind = "str"
        if kind in ("str", "bin"):
            arr = pc.cast(arr, pa.large_string() if kind == "str" else pa.large_binary())
            if arr.null_count:  # a null is hashed as its row number, its slot as empty
                arr = arr.fill_null("" if kind == "str" else b"")
            arr = pa.concat_arrays([arr]) if arr.offset else arr
            bufs = arr.buffers()
            offsets = np.frombuffer(bufs[1], dtype="<i8", count=len(arr) + 1)
            lengths: Any = np.diff(offsets)
            self.lengths.update(memoryview(lengths))
            if bufs[2] is not None:
                self.values.update(memoryview(bufs[2])[int(offsets[0]) : int(offsets[-1])])
            return
        if kind == "float":
            self.values.update(memoryview(_floats(arr)))  # float64, native = little-endian
        elif kind == "bool":
            self.values.update(bools(arr.fill_null(False)).astype(np.uint8).tobytes())
        elif kind in ("int", "uint"):
            arr = pc.cast(arr, pa.int64() if kind == "int" else pa.uint64())
            self.values.update(_fixed_bytes(arr, 8))
        elif kind == "date":
            self.values.update(_fixed_bytes(pc.cast(arr, pa.date32()), 4))
        elif kind == "ts":
            unit = pa.timestamp(self.unit, "UTC" if arr.type.tz is not None else None)
            self.values.update(_fixed_bytes(pc.cast(arr, unit), 8))
        elif kind == "time":
            self.values.update(_fixed_bytes(pc.cast(arr, pa.time64(self.unit)), 8))
        elif kind == "dec16":
            self.values.update(_fixed_bytes(arr, 16))
        elif kind == "dec32":
            self.values.update(_fixed_bytes(arr, 32))

    def parts(self) -> list[bytes]:
        return [
            self.name.encode(),
            self.tag.encode(),
            self.nulls.digest(),
            self.lengths.digest(),
            self.values.digest(),
        ]


def _sortable(arr: Any) -> Any:
    """``arr`` as sorted for the digest: dictionaries decoded, floats canonical, others as-is."""
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if pa.types.is_dictionary(arr.type):
        arr = arr.dictionary_decode()
    kind = _kind(arr.type)[0]
    if kind == "float":
        return from_numpy(_floats(arr), pa.float64(), mask=~valid(arr))
    if kind == "ts" and arr.type.tz is not None:
        return pc.cast(arr, pa.timestamp(arr.type.unit))  # the instant, zone aside
    if kind == "repr":
        return pa.array([None if v is None else repr(v) for v in arr.to_pylist()], pa.string())
    return arr


def _increasing(keys: Sequence[Any]) -> bool:
    """Whether the rows of the key columns ``keys`` are in strictly increasing key order."""
    if len(keys[0]) < 2:
        return all(k.null_count == 0 for k in keys)
    lt: Any = None
    for arr in reversed(keys):
        if arr.null_count or (pa.types.is_floating(arr.type) and pc.any(pc.is_nan(arr)).as_py()):
            return False
        a, b = arr.slice(0, len(arr) - 1), arr.slice(1)
        less = pc.less(a, b)
        lt = less if lt is None else pc.or_(less, pc.and_(pc.equal(a, b), lt))
    return bool(pc.all(lt).as_py())


class Digester:
    """The digest of rows fed in batches, valid while they come in strictly increasing key order.

    `update` each batch in order; `in_order` turns False (and hashing stops) at the first row
    that is not after the one before it, and the caller computes the digest from the whole
    table instead (`file_digest`, `table_digest`).
    """

    def __init__(self, schema: pa.Schema, primary_key: Sequence[str]) -> None:
        self.columns = {f.name: _Column(f.name, f.type) for f in schema}
        self.key = [k for k in primary_key if k in self.columns]
        self.rows = 0
        self.in_order = bool(self.key)  # without a key, the order must be built
        self._last: list[Any] | None = None  # the last row's key values, as 1-value arrays

    def update(self, batch: pa.RecordBatch | pa.Table) -> None:
        if not self.in_order or batch.num_rows == 0:
            return
        keys = [_sortable(batch.column(k)) for k in self.key]
        if self._last is not None:
            keys_with_last = [
                pa.concat_arrays([last, arr.cast(last.type)])
                for last, arr in zip(self._last, keys, strict=True)
            ]
        else:
            keys_with_last = keys
        if not _increasing(keys_with_last):
            self.in_order = False
            return
        self._last = [k.slice(len(k) - 1) for k in keys]
        for name, col in self.columns.items():
            col.update(batch.column(name), self.rows)
        self.rows += batch.num_rows

    def feed_column(self, name: str, arr: Any) -> None:
        """Hash a whole column already in digest order (`_sorted_digest`)."""
        self.columns[name].update(arr, 0)

    def hexdigest(self) -> str:
        h = hashlib.sha256(_HEADER)
        h.update(struct.pack("<QQ", self.rows, len(self.columns)))
        for name in sorted(self.columns):
            for part in self.columns[name].parts():
                h.update(struct.pack("<Q", len(part)))
                h.update(part)
        return h.hexdigest()


def _sorted_digest(
    read: Callable[[list[str]], pa.Table], schema: pa.Schema, key: Sequence[str]
) -> str:
    """The digest of the table ``read(columns)`` returns, sorted, read a few columns at a time."""
    names = sorted(schema.names)
    keys = [k for k in key if k in names]
    digester = Digester(schema, keys)
    first = read(keys or names[:1])
    rows = first.num_rows
    order: Any = None
    whole: dict[str, Any] | None = None
    if rows > 1:
        if keys:
            sort_keys = {k: _sortable(first.column(k)) for k in keys}
            table = pa.table(sort_keys)
            order = pc.sort_indices(table, sort_keys=[(k, "ascending") for k in keys])
            if not _increasing([sort_keys[k].take(order) for k in keys]):
                order = None  # a tie on the key: every column breaks it
        if order is None:
            data = read(names)
            whole = {n: data.column(n) for n in names}
            ordered = [n for n in keys + [n for n in names if n not in keys]]
            ordered = [n for n in ordered if not pa.types.is_null(schema.field(n).type)]
            sortable = pa.table({n: _sortable(whole[n]) for n in ordered})
            order = pc.sort_indices(sortable, sort_keys=[(n, "ascending") for n in ordered])
    identity = order is None or bool(
        np.array_equal(_arrays.values(order, np.uint64), np.arange(rows, dtype=np.uint64))
    )
    for name in names:
        col = whole[name] if whole is not None else read([name]).column(name)
        col = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
        digester.feed_column(name, col if identity else col.take(order))
    digester.rows = rows
    return digester.hexdigest()


def table_digest(table: pa.Table, primary_key: Sequence[str] = ()) -> str:
    """The content digest of ``table``'s rows (hex SHA-256); see the module docstring."""
    streamed = Digester(table.schema, primary_key)
    streamed.update(table)
    if streamed.in_order:
        return streamed.hexdigest()
    return _sorted_digest(table.select, table.schema, primary_key)


def file_digest(path: str | Path, primary_key: Sequence[str] = ()) -> str:
    """The content digest of the rows of one Parquet file (as `table_digest`).

    Reads the key columns, then one column at a time: memory stays at about one column (all of
    them when the key has ties).
    """
    pf = pq.ParquetFile(path)
    try:
        return _sorted_digest(lambda cols: pf.read(columns=cols), pf.schema_arrow, primary_key)
    finally:
        pf.close()


def combine(parts: Iterable[tuple[int | None, str]]) -> str:
    """A dataset's digest from its partitions' ``(year, digest)`` pairs (any order)."""
    h = hashlib.sha256(_HEADER + b"dataset\x00")
    for year, digest in sorted(parts, key=lambda p: -1 if p[0] is None else p[0]):
        h.update(b"%d:%s\n" % (-1 if year is None else year, digest.encode()))
    return h.hexdigest()
