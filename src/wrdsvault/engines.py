"""Other engines over a pinned snapshot: Polars, Dask, Ray, Spark, or any engine given the files.

A snapshot is a list of immutable Parquet files and a schema, both in its manifest. Handing that
list (never a folder: a folder of the vault also holds the files of other snapshots) and that
schema to an engine lets it read exactly the pinned data, with the types as stored:

* `pinned_files` (``snap.files``): the manifest's files of one dataset, pruned by year, each
  checked against the manifest (exists, regular file, recorded size) at the moment it is handed
  out, so a file removed or truncated since the snapshot was opened is an `IntegrityError`, never
  a short result;
* `to_polars`, `to_dask`, `to_ray`, `to_spark`: the same files read by that engine with an
  explicit schema derived from the manifest (decimals stay decimals, ``int32`` ids stay ``int32``,
  dates stay dates, text stays text), with ``columns=`` pushed into the scan.

The engines are optional extras (``pip install 'wrdsvault[polars]'``, ``[dask]``, ``[ray]``,
``[spark]``, or ``[engines]`` for Spark, Dask and Ray), imported only when a function here needs
one. Every engine reads lazily: keep the snapshot open until the computation has finished, so that
its reader lease keeps ``gc`` from deleting the files (docs/scale-out.md).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

from wrdsvault._optional import require
from wrdsvault._storage.pinned import PinnedFileCheck
from wrdsvault.errors import IntegrityError, InvalidValueError
from wrdsvault.schema import arrow_schema

if TYPE_CHECKING:
    import pyarrow as pa

    from wrdsvault.manifest import DatasetEntry
    from wrdsvault.snapshot import Snapshot

__all__ = ["pinned_files", "to_dask", "to_polars", "to_ray", "to_spark"]

#: ``years=``: one year, several (a range, a list), or None for every year.
Years: TypeAlias = int | Iterable[int] | None


def _years(years: object) -> frozenset[int] | None:
    """``years=`` as a set: None, one int, or an iterable of ints from 1 to 9999 (not empty)."""
    if years is None:
        return None
    if isinstance(years, (str, bytes)) or not isinstance(years, (int, Iterable)):
        msg = f"years must be an int, an iterable of ints (a range, a list) or None, not {years!r}"
        raise TypeError(msg)
    values: Iterable[object] = [years] if isinstance(years, int) else years
    out: set[int] = set()
    for y in values:
        if not isinstance(y, int) or isinstance(y, bool) or not 1 <= y <= 9999:
            raise InvalidValueError(name="year", value=y, rule="an int from 1 to 9999")
        out.add(y)
    if not out:
        raise InvalidValueError(name="years", value=[], rule="years= is empty; omit it for all")
    return frozenset(out)


def _columns(entry: DatasetEntry, columns: Sequence[str] | None) -> list[str] | None:
    """``columns=`` checked against the manifest: a list of its column names, or None for all."""
    if columns is None:
        return None
    if isinstance(columns, (str, bytes)) or not isinstance(columns, Sequence):
        msg = f"columns must be a list of column names or None, not {columns!r}"
        raise TypeError(msg)
    known = [c.name for c in entry.columns]
    out: list[str] = []
    given: list[object] = list(columns)  # untyped callers can pass anything
    for name in given:
        if not isinstance(name, str):
            msg = f"column names are str, not {type(name).__name__}"
            raise TypeError(msg)
        if name not in known:
            raise InvalidValueError(
                name="column",
                value=name,
                rule=f"a column of {entry.name}: {', '.join(known)}",
            )
        if name not in out:
            out.append(name)
    if not out:
        raise InvalidValueError(name="columns", value=[], rule="columns= is empty; omit it for all")
    return out


def pinned_files(snap: Snapshot, dataset: str, years: Years = None) -> list[Path]:
    """The absolute paths of ``dataset``'s pinned Parquet files, oldest year first.

    ``years`` keeps only the files of those calendar years (the partition column's year); years
    the dataset has no file for are simply absent. Each file is checked now against the manifest
    (no symlinked folder on the way, a regular file, the recorded size), so a file removed or
    truncated since the snapshot was opened raises instead of giving a short list. Takes a new
    reader lease if the snapshot was closed, as a query does.

    Raises:
        UnknownDatasetError: the snapshot does not hold ``dataset``.
        InvalidValueError: a year outside 1-9999, an empty ``years``, or ``years`` for a
            dataset that is not partitioned by year (it has one file holding every year).
        IntegrityError: a file is missing, not a regular file, or has another size.
        TypeError: ``years`` is not an int, an iterable of ints, or None.
    """
    entry = snap.dataset(dataset)
    wanted = _years(years)
    if wanted is not None and entry.partition_column is None:
        raise InvalidValueError(
            name="years",
            value=sorted(wanted),
            rule=f"{dataset} is not partitioned by year (one file holds all its rows); omit years=",
        )
    snap._hold_lease()  # the lease first, then look at the files
    layout = snap._layout
    check = PinnedFileCheck(layout)
    out: list[Path] = []
    parts = sorted(entry.partitions, key=lambda p: -1 if p.year is None else p.year)
    for part in parts:
        if wanted is not None and part.year not in wanted:
            continue
        path = layout.resolve_relpath_str(part.path)
        problem = check.check(path, part.size_bytes)
        if problem is not None:
            raise IntegrityError(path=problem.path, problem=problem.detail, snapshot_id=snap.id)
        out.append(Path(path))
    return out


def _plan(
    snap: Snapshot, dataset: str, columns: Sequence[str] | None, years: Years
) -> tuple[list[str], pa.Schema, list[str] | None]:
    """The checked files (as str), the manifest's Arrow schema, and the checked column list."""
    entry = snap.dataset(dataset)
    cols = _columns(entry, columns)
    files = [str(p) for p in pinned_files(snap, dataset, years)]
    return files, arrow_schema(entry.columns), cols


def to_polars(
    snap: Snapshot, dataset: str, *, columns: Sequence[str] | None = None, years: Years = None
) -> Any:
    """A ``polars.LazyFrame`` scanning exactly the pinned files (nothing is read until collect).

    The scan gets the manifest's schema (decimal, Int32, Date, String as stored), no glob
    expansion and no hive partitioning, so no path is interpreted and no other file is seen.
    """
    pl = require("polars", "polars")
    files, schema, cols = _plan(snap, dataset, columns, years)
    pl_schema = pl.from_arrow(schema.empty_table()).schema
    if files:
        lf = pl.scan_parquet(files, schema=pl_schema, hive_partitioning=False, glob=False)
    else:
        lf = pl.LazyFrame(schema=pl_schema)
    return lf.select(cols) if cols is not None else lf


def to_dask(
    snap: Snapshot, dataset: str, *, columns: Sequence[str] | None = None, years: Years = None
) -> Any:
    """A ``dask.dataframe.DataFrame`` over exactly the pinned files, one partition per file.

    Columns keep their Arrow types as pandas ``ArrowDtype`` (``dtype_backend="pyarrow"``):
    ``decimal128(11, 5)[pyarrow]``, ``int32[pyarrow]`` (a NULL stays NULL; NumPy int32 would turn
    the column into float64), ``date32[day][pyarrow]``, ``string[pyarrow]``.
    """
    dd = require("dask.dataframe", "dask")
    files, schema, cols = _plan(snap, dataset, columns, years)
    if not files:
        import pandas as pd

        empty = schema.empty_table().to_pandas(types_mapper=pd.ArrowDtype)
        frame = dd.from_pandas(empty if cols is None else empty[cols], npartitions=1)
        return frame
    return dd.read_parquet(
        files,
        columns=cols,
        dtype_backend="pyarrow",
        schema=schema,
        index=False,
        calculate_divisions=False,
        ignore_metadata_file=True,
        split_row_groups=False,
        dataset={"partitioning": None},
    )


def to_ray(
    snap: Snapshot, dataset: str, *, columns: Sequence[str] | None = None, years: Years = None
) -> Any:
    """A ``ray.data.Dataset`` over exactly the pinned files, with the manifest's Arrow schema.

    Uses the running Ray (``ray.init``), or starts a local one as Ray does on first use.
    """
    data = require("ray.data", "ray")
    fs = require("pyarrow.fs", "ray")
    files, schema, cols = _plan(snap, dataset, columns, years)
    if not files:
        ds = data.from_arrow(schema.empty_table())
    else:
        ds = data.read_parquet(
            files, filesystem=fs.LocalFileSystem(), schema=schema, partitioning=None
        )
    return ds.select_columns(cols) if cols is not None else ds


def _spark_schema(schema: pa.Schema) -> Any:
    """The Spark StructType of an Arrow schema: decimal(p,s), int/short/long, date, string."""
    types = require("pyspark.sql.pandas.types", "spark")
    try:
        return types.from_arrow_schema(schema)
    except TypeError as exc:
        raise InvalidValueError(
            name="schema",
            value=str(schema),
            rule=f"Spark has no type for a column of it ({exc}); read it with files() instead",
        ) from exc


def to_spark(
    snap: Snapshot,
    spark: Any,
    dataset: str,
    *,
    columns: Sequence[str] | None = None,
    years: Years = None,
) -> Any:
    """A pyspark ``DataFrame`` over exactly the pinned files, read by the ``spark`` session.

    The read gets the manifest's schema as a Spark ``StructType`` (``DecimalType(11,5)``,
    ``IntegerType``, ``ShortType``, ``DateType``, ``StringType``), so Spark infers nothing from
    a footer. The files are passed as ``file://`` URIs: every executor must see the vault at the
    same path (one machine, or a shared drive mounted alike on every worker).
    """
    files, schema, cols = _plan(snap, dataset, columns, years)
    spark_schema = _spark_schema(schema)
    if not files:
        df = spark.createDataFrame([], spark_schema)
    else:
        df = spark.read.schema(spark_schema).parquet(*(f"file://{f}" for f in files))
    return df.select(*cols) if cols is not None else df
