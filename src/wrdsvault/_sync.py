"""The sync process: plan -> stream -> stage -> check -> commit (or roll back).

For each dataset:

* If the source's change marker (WRDS: the table comment) equals the one recorded in the current
  snapshot, the dataset is skipped without reading a row (``unchanged``), unless ``full=True``.
* Otherwise each year is compared: a year whose per-year marker is unchanged is reused without
  reading; any other year is streamed into a staged Parquet file whose SHA-256 is computed while
  writing. If that hash equals the current file's, the staged copy is dropped and the file reused.
* Years the source no longer has are dropped from the new manifest (their files stay on disk for
  older snapshots), if the `RemovedYears` rule lets them go (by default no year with rows may).

All datasets of one call land in one commit; if any dataset fails, nothing is committed.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import inspect
import logging
import sys
import threading
import time
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Final, Literal, TypeVar

import attrs
import psutil

from wrdsvault._storage.checkpoint import CheckpointRecord, columns_digest
from wrdsvault._storage.diskguard import DiskGuard
from wrdsvault._storage.writer import StagedFile, Writer
from wrdsvault.datasets import DatasetSpec
from wrdsvault.errors import (
    DiskSpaceError,
    SchemaDriftError,
    SourceError,
    SyncError,
    ValidationFailedError,
    WrdsVaultError,
)
from wrdsvault.manifest import (
    ColumnSchema,
    DatasetEntry,
    Manifest,
    PartitionFile,
    SyncRecipe,
    format_timestamp,
)
from wrdsvault.reports import DatasetResult, Status, SyncReport
from wrdsvault.schema import DriftPolicy, SchemaDrift, diff
from wrdsvault.sources.base import COMMENT_KEY, SOURCE_TYPE_KEY, PartitionInfo, Source, TableInfo
from wrdsvault.validation import (
    Finding,
    PartitionData,
    RemovedYears,
    Rule,
    StreamFacts,
    ValidationReport,
    default_rules,
    run_rules,
)

if TYPE_CHECKING:
    import pyarrow as pa

log = logging.getLogger(__name__)


#: What happened to a finished partition: streamed from the source, kept as it was (its marker
#: is unchanged), or taken from the checkpoint of an interrupted sync.
PartitionAction = Literal["read", "reused", "resumed"]


@attrs.frozen(kw_only=True)
class Progress:
    """One progress event of `Warehouse.sync`.

    Three kinds, told apart by ``done`` and ``rows_read``: a partition started (``done=False``,
    ``rows_read=0``), rows of it arrived (``done=False``, after each batch), it finished
    (``done=True``, with ``action``).

    Attributes:
        dataset: the dataset's name.
        year: the partition's year (``None`` for an unpartitioned dataset).
        index: the partition's position among the dataset's partitions to sync, from 0.
        total: how many partitions of the dataset this sync looks at.
        rows: the partition's exact row count from the source, ``None`` if unknown.
        done: the partition is finished.
        rows_read: rows of this partition streamed from the source so far (on ``done``
            events: all of them, or 0 for a year reused or resumed without reading).
        dataset_rows_done: rows of the dataset's finished partitions (read, reused or resumed).
        dataset_rows_total: rows of all the partitions this sync looks at (exact counts from the
            source, else its row estimate); ``None`` if unknown. For an ETA.
        dataset_index: the dataset's position among the datasets of this sync, from 0.
        dataset_total: how many datasets this sync looks at.
        action: on ``done`` events, what happened to the partition: ``"read"`` from the
            source (its file may still turn out identical and be reused), ``"reused"`` without
            reading (marker unchanged), ``"resumed"`` from an interrupted sync's checkpoint.
    """

    dataset: str
    year: int | None
    index: int
    total: int
    rows: int | None
    done: bool
    rows_read: int = 0
    dataset_rows_done: int = 0
    dataset_rows_total: int | None = None
    dataset_index: int = 0
    dataset_total: int = 1
    action: PartitionAction | None = None


ProgressCallback = Callable[[Progress], None]


def file_schema(schema: pa.Schema) -> pa.Schema:
    """The schema a partition's Parquet file is written with: the source's, without labels.

    A column's label (`COMMENT_KEY`) is kept in the manifest (`ColumnSchema.comment`), which
    leaves it out of a column's identity; in the file it would make a relabelled column (WRDS
    rewording a comment) rewrite every year and make the same rows from two sources (the
    sample, a WRDS replica) different files. The declared type stays: it is part of identity.
    """
    import pyarrow as pa

    fields = []
    for field in schema:
        if field.metadata and COMMENT_KEY in field.metadata:
            meta: dict[bytes | str, bytes | str] = {
                k: v for k, v in field.metadata.items() if k != COMMENT_KEY
            }
            field = field.with_metadata(meta) if meta else field.remove_metadata()
        fields.append(field)
    return (
        pa.schema(fields).with_metadata(schema.metadata) if schema.metadata else pa.schema(fields)
    )


def columns_of(schema: pa.Schema) -> tuple[ColumnSchema, ...]:
    """The manifest's description of an Arrow schema."""
    out = []
    for field in schema:
        meta = field.metadata or {}
        declared = meta.get(SOURCE_TYPE_KEY)
        label = meta.get(COMMENT_KEY)
        out.append(
            ColumnSchema(
                name=field.name,
                type=str(field.type),
                source_type=declared.decode() if declared else None,
                nullable=field.nullable,
                comment=label.decode() if label else None,
            )
        )
    return tuple(out)


@attrs.frozen(kw_only=True)
class SyncOptions:
    """Everything a sync call decided before it started."""

    years: frozenset[int] | None = None
    full: bool = False
    progress: ProgressCallback | None = None
    drift: Mapping[str, DriftPolicy] = attrs.field(factory=dict)  # per dataset
    default_drift: DriftPolicy = "strict"
    rules: Mapping[str, Sequence[Rule]] = attrs.field(factory=dict)  # extra rules per dataset
    validate: bool = True
    guard: DiskGuard | None = None
    #: the `RemovedYears` threshold; None lets years go without a check (allow_removal=True)
    max_removed_fraction: float | None = 0.0
    #: ``years`` per dataset, where they differ (``sync_all``: each dataset's recipe)
    dataset_years: Mapping[str, frozenset[int] | None] = attrs.field(factory=dict)

    def for_dataset(self, dataset: str) -> SyncOptions:
        """These options with ``years`` as ``dataset`` is synced."""
        if dataset not in self.dataset_years:
            return self
        return attrs.evolve(self, years=self.dataset_years[dataset], dataset_years={})

    def policy(self, dataset: str) -> DriftPolicy:
        return self.drift.get(dataset, self.default_drift)


def source_partitions(
    source: Source,
    spec: DatasetSpec,
    years: frozenset[int] | None,
    markers: frozenset[int | None] | None = None,
) -> Sequence[PartitionInfo]:
    """``source.partitions(spec, years=years, markers=markers)``, passing only the hints the
    source's signature takes (sources written before them still work).

    ``years`` lets a source skip work for years the sync will not look at (WRDS: hashing the
    whole table to sync one year); ``markers`` names the years whose marker the sync will
    compare with one it holds (``None``: all), so a source that can send markers with the rows
    (`streamed_marker`) need not compute the others up front. A source may ignore both; the sync
    filters anyway.
    """
    try:
        params = list(inspect.signature(source.partitions).parameters.values())
    except (TypeError, ValueError):  # builtins, C extensions: no signature to read
        params = []
    hints: dict[str, object] = {}
    for name, value in (("years", years), ("markers", markers)):
        if value is not None and any(p.name == name or p.kind is p.VAR_KEYWORD for p in params):
            hints[name] = value
    return source.partitions(spec, **hints)  # type: ignore[arg-type]


def streams_of(source: Source) -> int:
    """How many partitions the sync may read from ``source`` at once (its ``streams``, else 1).

    A source that can serve several `Source.read_partition` calls from different threads at
    once says so with an int attribute ``streams`` (`WrdsSource`: one connection each).
    """
    streams: object = getattr(source, "streams", 1)
    if isinstance(streams, bool) or not isinstance(streams, int) or streams < 1:
        return 1
    return streams


def streamed_marker(source: Source, spec: DatasetSpec, year: int | None) -> str | None:
    """The marker ``source`` computed from the rows of ``year`` it just sent, if it can."""
    method = getattr(source, "streamed_marker", None)
    if method is None:
        return None
    marker: object = _call(source, spec, "streamed_marker()", lambda: method(spec, year))
    if marker is not None and not isinstance(marker, str):
        raise _misbehaved(
            source, spec, f"streamed_marker() gave {year} a marker {marker!r}; a marker is a str"
        )
    return marker


# -- what a source sends ------------------------------------------------------------------
#
# A source is code the vault does not own (a user's, a driver's). Whatever it raises or returns
# outside its contract must fail the sync with an error naming the dataset and the fault, never
# escape raw or reach the files: a SourceError, or a SyncError for a schema DuckDB cannot query.

_T = TypeVar("_T")


def _kind_of(value: object) -> str:
    """``None``, or the qualified type of ``value`` (``pyarrow.lib.Table``), for messages."""
    if value is None:
        return "None"
    kind = type(value)
    name = (
        kind.__qualname__
        if kind.__module__ == "builtins"
        else f"{kind.__module__}.{kind.__qualname__}"
    )
    return f"{'an' if name[0] in 'aeiou' else 'a'} {name}"


def _source_name(source: Source) -> str:
    try:
        return str(source.name)
    except Exception:  # a broken name must not hide the real fault
        return type(source).__name__


def _misbehaved(source: Source, spec: DatasetSpec, reason: str) -> SourceError:
    return SourceError(source=_source_name(source), dataset=spec.name, reason=reason)


def _call(source: Source, spec: DatasetSpec, what: str, fn: Callable[[], _T]) -> _T:
    """``fn()``, a call into ``source``; an exception outside our hierarchy becomes SourceError.

    OS errors pass unchanged (a broken connection is retried like any other I/O failure).
    """
    try:
        return fn()
    except (WrdsVaultError, OSError):
        raise
    except Exception as exc:
        raise _misbehaved(source, spec, f"{what} raised {type(exc).__name__}: {exc}") from exc


def describe(source: Source, spec: DatasetSpec) -> TableInfo:
    """``source.describe(spec)``, checked against the `Source` contract.

    Raises:
        SourceError: it raised, or did not return a `TableInfo` with a pyarrow schema.
    """
    import pyarrow as pa

    got: object = _call(source, spec, "describe()", lambda: source.describe(spec))
    schema: object = got.schema if isinstance(got, TableInfo) else None
    if not isinstance(got, TableInfo) or not isinstance(schema, pa.Schema):
        shown = _kind_of(schema if isinstance(got, TableInfo) else got)
        raise _misbehaved(
            source, spec, f"describe() returned {shown}, not a TableInfo with a pyarrow.Schema"
        )
    info = got
    marker: object = info.change_marker
    if marker is not None and not isinstance(marker, str):
        raise _misbehaved(
            source,
            spec,
            f"describe() gave a change marker {info.change_marker!r}; a marker is a str or None",
        )
    return info


def ask(source: Source, spec: DatasetSpec) -> TableInfo:
    """`describe`, for callers outside the writer: a dropped connection is a `SyncError` too.

    What a sync asks the source before it takes the lock or writes anything (`preflight`, and
    ``date_column="auto"``), so that a table the source does not have costs no writer state.

    Raises:
        UnknownDatasetError: the source has no such table.
        SourceError: it raised, or did not return a `TableInfo` with a pyarrow schema.
        SyncError: an OS error (a dropped connection) while asking.
    """
    return _asking(source, spec, lambda: describe(source, spec))


def _asking(source: Source, spec: DatasetSpec, question: Callable[[], _T]) -> _T:
    """``question()``; an OS error (a dropped connection) becomes a `SyncError`."""
    try:
        return question()
    except OSError as exc:
        raise SyncError(
            dataset=spec.name,
            reason=f"asking the source {_source_name(source)!r} about it failed "
            f"({type(exc).__name__}: {exc}); nothing was written, run the sync again",
        ) from exc


def preflight(source: Source, specs: Sequence[DatasetSpec]) -> None:
    """Ask ``source`` about every dataset of a sync before the sync creates any writer state.

    A name the source does not serve (a typo, a table another source has) fails here, before
    the lock, the staging folder, a quarantine entry or a snapshot exist. The sync asks again
    under the lock (the answer may change while it waits for another writer). A source with a
    ``change_marker(spec)`` method is asked that (the same lookup, no schema), else `describe`.

    Raises:
        UnknownDatasetError, SourceError, SyncError: as `ask`.
    """
    method = getattr(source, "change_marker", None)
    for spec in specs:
        if not callable(method):
            ask(source, spec)
            continue
        # Existence and access are all this needs: the source's cheaper lookup answers them
        # with the same errors (and loads no pyarrow for a sync that will find nothing changed).
        marker = functools.partial(method, spec)
        _asking(source, spec, functools.partial(_call, source, spec, "change_marker()", marker))


def _refuse_duplicate_columns(spec: DatasetSpec, schema: pa.Schema) -> None:
    """SyncError when two columns share a name: DuckDB compares names without case."""
    seen: dict[str, str] = {}
    for name in schema.names:
        first = seen.get(name.lower())
        seen.setdefault(name.lower(), name)
        if first is not None:
            same = f"{name!r} twice" if first == name else f"{first!r} and {name!r}"
            raise SyncError(
                dataset=spec.name,
                reason=f"the source's columns include {same}; DuckDB matches column names "
                "without regard to case, so a query could not tell them apart. Rename one at "
                "the source (or select the columns to mirror there)",
            )


def list_partitions(
    source: Source,
    spec: DatasetSpec,
    years: frozenset[int] | None,
    markers: frozenset[int | None] | None = None,
) -> list[PartitionInfo]:
    """The source's partitions of ``spec``, checked against the `Source` contract.

    Raises:
        SourceError: it raised, or returned anything but `PartitionInfo` objects with one
            distinct calendar year each (partitioned) or a single ``year=None`` (not),
            ``row_count`` a count or None, ``marker`` a str or None.
    """
    got: object = _call(
        source, spec, "partitions()", lambda: source_partitions(source, spec, years, markers)
    )
    if isinstance(got, (str, bytes)) or not isinstance(got, (Sequence, Iterator)):
        raise _misbehaved(
            source, spec, f"partitions() returned {_kind_of(got)}, not a list of PartitionInfo"
        )
    listed: Iterable[object] = got
    parts: list[PartitionInfo] = []
    seen: set[int | None] = set()
    for part in _call(source, spec, "partitions()", lambda: list(listed)):
        if not isinstance(part, PartitionInfo):
            raise _misbehaved(
                source, spec, f"partitions() listed {_kind_of(part)}, not a PartitionInfo"
            )
        parts.append(part)
        year = part.year
        if spec.partitioned:
            if not isinstance(year, int) or isinstance(year, bool) or not 0 < year < 10_000:
                raise _misbehaved(
                    source,
                    spec,
                    f"partitions() listed year={year!r}; {spec.name} is partitioned by "
                    f"{spec.partition_column!r}, so each partition is a calendar year (an int "
                    "from 1 to 9999) whose rows the dates_in_year rule checks",
                )
        elif year is not None:
            raise _misbehaved(
                source,
                spec,
                f"partitions() listed year={year!r}, but {spec.name} is synced without a date "
                "column: it is one partition, PartitionInfo(year=None)",
            )
        if year in seen:
            which = "the single partition" if year is None else f"year {year}"
            raise _misbehaved(
                source, spec, f"partitions() listed {which} twice; each year is one partition"
            )
        seen.add(year)
        count = part.row_count
        if count is not None and (
            not isinstance(count, int) or isinstance(count, bool) or count < 0
        ):
            raise _misbehaved(
                source,
                spec,
                f"partitions() gave {year} a row_count of {count!r}; a count is an int >= 0 "
                "or None",
            )
        if part.marker is not None and not isinstance(part.marker, str):
            raise _misbehaved(
                source,
                spec,
                f"partitions() gave {year} a marker {part.marker!r}; a marker is a str or None",
            )
    return parts


def read_batches(
    source: Source, spec: DatasetSpec, year: int | None, batch_rows: int
) -> Iterator[pa.RecordBatch]:
    """``source.read_partition(...)``, yielding only record batches (the `Source` contract).

    Raises:
        SourceError: it raised, or yielded anything but a `pyarrow.RecordBatch` (a Table, None).
    """
    what = f"read_partition({year})"
    batches: object = _call(
        source, spec, what, lambda: source.read_partition(spec, year, batch_rows=batch_rows)
    )
    return _checked_batches(source, spec, what, batches)


def _checked_batches(
    source: Source, spec: DatasetSpec, what: str, batches: object
) -> Generator[pa.RecordBatch, None, None]:
    """``batches``, refusing anything but record batches (`read_batches`, `read_years`)."""
    if not isinstance(batches, Iterable):
        raise _misbehaved(
            source, spec, f"{what} returned {_kind_of(batches)}, not an iterator of RecordBatch"
        )
    import pyarrow as pa

    it = _call(source, spec, what, lambda: iter(batches))
    try:
        end = object()  # not None: a source yielding None is at fault, not finished
        while True:
            batch = _call(source, spec, what, lambda: next(it, end))
            if batch is end:
                return
            if not isinstance(batch, pa.RecordBatch):
                hint = " (send table.to_batches())" if isinstance(batch, pa.Table) else ""
                raise _misbehaved(
                    source,
                    spec,
                    f"{what} yielded {_kind_of(batch)}, not a pyarrow.RecordBatch{hint}",
                )
            yield batch
    finally:
        close = getattr(it, "close", None)
        if close is not None:
            _call(source, spec, what, close)


def reads_years(source: Source, spec: DatasetSpec) -> bool:
    """Whether ``source`` can stream several years of ``spec`` with one read
    (`read_partitions`, optional in the `Source` contract)."""
    return spec.partitioned and callable(getattr(source, "read_partitions", None))


def read_years(
    source: Source, spec: DatasetSpec, years: Sequence[int], batch_rows: int
) -> Generator[tuple[int, Iterator[pa.RecordBatch]], None, None]:
    """``source.read_partitions(...)``: each of ``years`` in turn with its batches, checked
    against the contract (every year once, in order; only record batches)."""
    what = f"read_partitions({years[0]}-{years[-1]})"
    method = source.read_partitions  # type: ignore[attr-defined]  # optional (reads_years)
    pairs: object = _call(source, spec, what, lambda: method(spec, years, batch_rows=batch_rows))
    if not isinstance(pairs, Iterable):
        raise _misbehaved(source, spec, f"{what} returned {_kind_of(pairs)}, not an iterator")
    it = _call(source, spec, what, lambda: iter(pairs))
    try:
        for year in years:
            pair: object = _call(source, spec, what, lambda: next(it, None))
            if not (isinstance(pair, tuple) and len(pair) == 2 and pair[0] == year):
                raise _misbehaved(
                    source, spec, f"{what} gave {pair!r} where ({year}, batches) was due"
                )
            yield year, _checked_batches(source, spec, f"{what} for {year}", pair[1])
    finally:
        close = getattr(it, "close", None)
        if close is not None:
            _call(source, spec, what, close)


#: Bytes per row assumed for the disk check before a dataset was ever synced (a wide CRSP row).
_DEFAULT_BYTES_PER_ROW: Final = 64


# -- one dataset, step by step ------------------------------------------------------------
#
# `_sync_dataset` reads as the steps it takes: skip a dataset whose marker is unchanged, plan
# (schema, drift policy, partitions, disk), stream and stage each partition (reused, resumed or
# read; checked by the rules as it lands), carry over the years not synced, validate, make sure
# the source did not change while it was read, and describe the result. Each step is a function
# of what the earlier ones returned; the only state that changes along the way is the
# `_Staged` tally and the `_Reporter`'s count of rows done.


def _sync_dataset(
    writer: Writer,
    source: Source,
    spec: DatasetSpec,
    prev: DatasetEntry | None,
    opts: SyncOptions,
    position: tuple[int, int] = (0, 1),
) -> tuple[DatasetEntry | None, DatasetResult]:
    """Sync one dataset into ``writer``'s staging area; the entry is None when nothing changed.

    Raises:
        SchemaDriftError, SyncError, SourceError, ValidationFailedError, DiskSpaceError.
    """
    if _quick_unchanged(source, spec, prev, opts):
        assert prev is not None
        return None, _unchanged(spec, prev)
    info = describe(source, spec)
    if _marker_unchanged(source, prev, info, opts):
        assert prev is not None
        return None, _unchanged(spec, prev)
    plan = _plan(source, spec, prev, info, opts, _compared_years(writer, spec, prev, info, opts))
    report = _Reporter(
        callback=opts.progress,
        dataset=spec.name,
        total=len(plan.parts),
        rows_total=plan.rows_total or None,
        position=position,
    )
    staged = _stage_partitions(writer, source, spec, prev, plan, opts, report)
    partitions, removed = _carry_over(prev, staged.parts, opts.years)
    _validate(spec, prev, partitions, staged.findings, opts)
    if staged.written or staged.resumed:
        _refuse_a_source_updated_while_read(source, spec, info)
    return _result(source, spec, prev, plan, staged, partitions, removed, opts.years)


def _quick_unchanged(
    source: Source, spec: DatasetSpec, prev: DatasetEntry | None, opts: SyncOptions
) -> bool:
    """`_marker_unchanged` from the source's ``change_marker(spec)`` alone, if it has one.

    A source may offer ``change_marker(spec)``: `describe`'s ``change_marker`` without the
    schema (`WrdsSource`: one catalog query; no pyarrow). When it still matches the recorded
    marker, the sync is done with the dataset before describing it; otherwise (or without the
    method) `describe` decides as before.
    """
    method = getattr(source, "change_marker", None)
    if not callable(method) or opts.full or prev is None or prev.change_marker is None:
        return False
    if prev.source != source.name:
        return False
    if opts.years is not None and not opts.years <= {p.year for p in prev.partitions}:
        return False
    marker: object = _call(source, spec, "change_marker()", lambda: method(spec))
    if marker is not None and not isinstance(marker, str):
        raise _misbehaved(
            source, spec, f"change_marker() gave {marker!r}; a change marker is a str or None"
        )
    return marker == prev.change_marker


def _marker_unchanged(
    source: Source, prev: DatasetEntry | None, info: TableInfo, opts: SyncOptions
) -> bool:
    """The source's change marker is the one recorded, and every year asked for is held."""
    if opts.full or prev is None or info.change_marker is None:
        return False
    if prev.change_marker != info.change_marker or prev.source != source.name:
        return False
    return opts.years is None or opts.years <= {p.year for p in prev.partitions}


def _unchanged(spec: DatasetSpec, prev: DatasetEntry) -> DatasetResult:
    """The result of a dataset skipped without reading a row."""
    return DatasetResult(
        dataset=spec.name,
        status="unchanged",
        years_reused=tuple(p.year for p in prev.partitions),
        row_count=prev.row_count,
        change_marker=prev.change_marker,
        previous_change_marker=prev.change_marker,
    )


@attrs.frozen(kw_only=True)
class _Plan:
    """What a dataset's sync will do, decided before its first row is read."""

    info: TableInfo
    columns: tuple[ColumnSchema, ...]
    same_schema: bool  # the columns are those of the current snapshot's entry
    drift: SchemaDrift | None  # the change from the current entry's columns (None: first sync)
    parts: Sequence[PartitionInfo]  # the partitions to look at, in the source's order
    rows_total: int  # rows of ``parts`` (counts, else the source's estimate; 0 if unknown)
    rules: Sequence[Rule]
    digest: str  # of ``columns``, for the checkpoints


def _compared_years(
    writer: Writer, spec: DatasetSpec, prev: DatasetEntry | None, info: TableInfo, opts: SyncOptions
) -> frozenset[int | None]:
    """The years whose per-year marker can decide anything: those the current snapshot holds
    with a marker (an unchanged one is reused without reading) and those an interrupted sync
    checkpointed (resumed if their marker still matches). ``full=True`` trusts no marker.

    A first sync compares none: the source may then send each year's marker with its rows
    (`streamed_marker`) instead of computing all of them before the first row.
    """
    if opts.full:
        return frozenset()
    held: set[int | None] = set(writer.checkpoints.years(spec.name))
    if prev is not None and prev.columns == columns_of(info.schema):
        held.update(p.year for p in prev.partitions if p.marker is not None)
    return frozenset(held)


def _plan(
    source: Source,
    spec: DatasetSpec,
    prev: DatasetEntry | None,
    info: TableInfo,
    opts: SyncOptions,
    compared: frozenset[int | None] | None = None,
) -> _Plan:
    """Check the columns and the drift policy, list the partitions, check the disk.

    Raises:
        SyncError: duplicate column names, ``years=`` on an unpartitioned dataset, or changed
            columns that years outside ``years=`` would keep.
        SchemaDriftError: the columns changed in a way the dataset's drift policy refuses.
        SourceError: the source broke its contract.
        DiskSpaceError: the rows would not fit.
    """
    years = opts.years
    _refuse_duplicate_columns(spec, info.schema)
    columns = columns_of(info.schema)
    same_schema = prev is not None and prev.columns == columns
    drift = diff(spec.name, prev.columns, columns) if prev is not None else None
    if drift is not None and not drift.allowed_by(opts.policy(spec.name)):
        raise SchemaDriftError(dataset=spec.name, drift=drift, policy=opts.policy(spec.name))
    parts: Sequence[PartitionInfo] = list_partitions(source, spec, years, compared)
    if years is not None:
        if not spec.partitioned:
            raise SyncError(
                dataset=spec.name, reason="years= was given but the dataset has no date column"
            )
        parts = [p for p in parts if p.year in years]
    if prev is not None and not same_schema:
        kept = {p.year for p in prev.partitions} - years if years is not None else set()
        if kept:
            raise SyncError(
                dataset=spec.name,
                reason=f"the source's columns changed and years {sorted(kept, key=str)} would "
                "keep the old ones; sync all years (omit years=) to rewrite the whole dataset",
            )
    rows_total = sum(p.row_count or 0 for p in parts) or (info.row_estimate or 0)
    if opts.guard is not None:
        per_row = (prev.size_bytes / prev.row_count) if prev and prev.row_count else None
        opts.guard.check(int(rows_total * (per_row or _DEFAULT_BYTES_PER_ROW)))
    rules = [*default_rules(spec), *opts.rules.get(spec.name, ())] if opts.validate else []
    return _Plan(
        info=info,
        columns=columns,
        same_schema=same_schema,
        drift=drift,
        parts=parts,
        rows_total=rows_total,
        rules=rules,
        digest=columns_digest(columns),
    )


@attrs.define(kw_only=True)
class _Reporter:
    """Sends the `Progress` events of one dataset's partitions to the sync's callback.

    Reads running in parallel report from their threads: one event at a time (a lock), so a
    callback never runs twice at once.
    """

    callback: ProgressCallback | None
    dataset: str
    total: int
    rows_total: int | None
    position: tuple[int, int]  # the dataset's index among the sync's datasets, and their number
    rows_done: int = 0  # rows of the partitions finished so far
    _lock: threading.Lock = attrs.field(factory=threading.Lock, init=False, repr=False)

    def started(self, index: int, part: PartitionInfo) -> None:
        self._send(index, part)

    def counted(
        self, index: int, part: PartitionInfo, batches: Iterator[pa.RecordBatch]
    ) -> Generator[pa.RecordBatch, None, None]:
        """``batches``, sending the rows read so far after each one."""
        read = 0
        for batch in batches:
            yield batch
            read += batch.num_rows
            self._send(index, part, read=read)

    def finished(
        self, index: int, part: PartitionInfo, action: PartitionAction, *, rows: int, read: int = 0
    ) -> None:
        """The partition is done with ``rows`` rows, ``read`` of them streamed from the source."""
        with self._lock:
            self.rows_done += rows
        self._send(index, part, read=read, action=action)

    def _send(
        self,
        index: int,
        part: PartitionInfo,
        *,
        read: int = 0,
        action: PartitionAction | None = None,
    ) -> None:
        if self.callback is None:
            return
        with self._lock:
            self.callback(
                Progress(
                    dataset=self.dataset,
                    year=part.year,
                    index=index,
                    total=self.total,
                    rows=part.row_count,
                    done=action is not None,
                    rows_read=read,
                    dataset_rows_done=self.rows_done,
                    dataset_rows_total=self.rows_total,
                    dataset_index=self.position[0],
                    dataset_total=self.position[1],
                    action=action,
                )
            )


@attrs.define
class _Staged:
    """The tally of the partitions staged so far: their files and what happened to each year."""

    parts: dict[int | None, PartitionFile] = attrs.field(factory=dict)
    written: list[int | None] = attrs.field(factory=list)  # new files (resumed ones included)
    reused: list[int | None] = attrs.field(factory=list)  # the current file kept
    resumed: list[int | None] = attrs.field(factory=list)  # taken from a checkpoint
    rows_written: int = 0
    bytes_written: int = 0
    findings: list[Finding] = attrs.field(factory=list)

    def reuse(self, old: PartitionFile) -> None:
        """Keep the current file of ``old.year``."""
        self.parts[old.year] = old
        self.reused.append(old.year)

    def write(self, new: PartitionFile, *, resumed: bool) -> None:
        """Publish ``new`` as the year's file; ``resumed``: it came from a checkpoint."""
        self.parts[new.year] = new
        self.written.append(new.year)
        if resumed:
            self.resumed.append(new.year)
        self.rows_written += new.row_count
        self.bytes_written += new.size_bytes


def _stage_partitions(
    writer: Writer,
    source: Source,
    spec: DatasetSpec,
    prev: DatasetEntry | None,
    plan: _Plan,
    opts: SyncOptions,
    report: _Reporter,
) -> _Staged:
    """Each partition in turn: reused (marker unchanged), resumed (checkpoint) or read.

    A read partition is staged and checkpointed, so that an interrupted sync resumes it; every
    staged partition is checked by the rules, and one whose content turns out identical to the
    current file is discarded and the file reused. Up to `streams_of` partitions are read at
    once (`_Reads`); their results are taken in the partitions' order, so the outcome is the
    one of a sequential sync.
    """
    staged = _Staged()
    todo: dict[int, PartitionInfo] = {}
    olds: dict[int, PartitionFile | None] = {}
    for index, part in enumerate(plan.parts):
        old = prev.partition(part.year) if (prev is not None and plan.same_schema) else None
        olds[index] = old
        if not (
            not opts.full
            and old is not None
            and part.marker is not None
            and old.marker == part.marker
        ):
            todo[index] = part
    with _Reads(writer, source, spec, plan, opts.full, report, todo) as reads:
        for index, part in enumerate(plan.parts):
            old = olds[index]
            if index not in todo:
                assert old is not None
                report.started(index, part)
                staged.reuse(old)
                report.finished(index, part, "reused", rows=old.row_count)
                continue
            done, action, marker, facts = reads.result(index)
            staged.findings += run_rules(
                plan.rules,
                PartitionData(
                    spec=spec,
                    year=part.year,
                    path=done.path,
                    row_count=done.row_count,
                    source_row_count=part.row_count,
                    previous=prev.partition(part.year) if prev is not None else None,
                    columns=[c.name for c in plan.columns],
                    facts=facts,
                ),
            )
            if old is not None and (
                old.sha256 == done.sha256
                or (bool(old.content_digest) and old.content_digest == done.content_digest)
            ):
                # The same rows: keep the file readers hold (a read in another run of years
                # cuts its batches elsewhere, so the bytes may differ; the rows do not).
                writer.discard(done)
                digest = old.content_digest or done.content_digest  # one synced before format 3
                staged.reuse(attrs.evolve(old, marker=marker, content_digest=digest))
            else:
                new = PartitionFile(
                    year=part.year,
                    path=writer.layout.partition_relpath(spec.name, part.year, done.sha256),
                    sha256=done.sha256,
                    size_bytes=done.size_bytes,
                    row_count=done.row_count,
                    marker=marker,
                    content_digest=done.content_digest,
                )
                staged.write(new, resumed=action == "resumed")
            report.finished(
                index,
                part,
                action,
                rows=done.row_count,
                read=done.row_count if action == "read" else 0,
            )
    return staged


class _Cancelled(Exception):
    """Internal: another partition's read failed; this one stops at its next batch."""


_ReadResult = tuple[StagedFile, PartitionAction, "str | None", "StreamFacts | None"]


#: Rows one read of several years may cover (`_groups`): a source that streams several years
#: at once (`read_partitions`) scans the table once per group instead of once per year, and
#: a group's read is one long statement on the server, so groups stay below this size.
GROUP_ROWS: Final = 10_000_000


def _groups(todo: Mapping[int, PartitionInfo], streams: int, together: bool) -> list[list[int]]:
    """The partitions to read, cut into runs read together (``together``: the source reads
    several years with one statement) or one by one.

    At least ``streams`` runs (every stream has one to read), and more where the rows would
    make a run larger than `GROUP_ROWS`; consecutive partitions, balanced by row count.
    """
    indices = list(todo)
    if not together or len(indices) <= streams:
        return [[index] for index in indices]
    rows = [max(todo[i].row_count or 0, 1) for i in indices]
    total = sum(rows)
    count = min(len(indices), max(streams, -(-total // GROUP_ROWS)))
    groups: list[list[int]] = []
    done = in_run = 0
    for placed, (index, n) in enumerate(zip(indices, rows, strict=True)):
        # A new run once this one holds its share (keeping a partition for every run still to
        # start), or before it would grow past GROUP_ROWS.
        left = len(indices) - placed
        if (
            not groups
            or in_run + n > GROUP_ROWS
            or (
                len(groups) < count
                and (done >= total * len(groups) / count or left <= count - len(groups))
            )
        ):
            groups.append([])
            in_run = 0
        groups[-1].append(index)
        in_run += n
        done += n
    return groups


class _Reads:
    """The partitions to read, read ``streams_of(source)`` at a time in worker threads.

    With one stream nothing runs ahead: `result` reads the partition when it is asked for,
    in the calling thread, exactly as a sequential sync does. With more, every read is
    submitted at once to a pool of that many threads; each stages its own file (memory: one
    source stream and one row group per thread). The first failure stops the other reads at
    their next batch, and `result` raises that failure, never the cancellations it caused.
    Leaving the ``with`` block (normally or by an exception) stops and waits for every thread,
    so no thread outlives the writer.

    A source that streams several years with one statement (`reads_years`) gets the partitions
    in runs of consecutive years (`_groups`): one read per run, staged a year at a time.
    """

    def __init__(
        self,
        writer: Writer,
        source: Source,
        spec: DatasetSpec,
        plan: _Plan,
        full: bool,
        report: _Reporter,
        todo: Mapping[int, PartitionInfo],
    ) -> None:
        self._read = functools.partial(_resume_or_read, writer, source, spec, plan, full, report)
        self._read_group = functools.partial(
            _resume_or_read_years, writer, source, spec, plan, full, report
        )
        self._todo = todo
        self._stop = threading.Event()
        self._pool: ThreadPoolExecutor | None = None
        self._futures: dict[int, Future[_ReadResult]] = {}
        self._runs: dict[int, Generator[tuple[int, _ReadResult], None, None]] = {}
        streams = min(streams_of(source), len(todo))
        groups = _groups(todo, max(streams, 1), reads_years(source, spec))
        if streams > 1:
            self._pool = ThreadPoolExecutor(streams, thread_name_prefix="wrdsvault-stream")
            for group in groups:
                if len(group) == 1:
                    index = group[0]
                    self._futures[index] = self._pool.submit(self._run, index, todo[index])
                else:
                    futures = {index: Future[_ReadResult]() for index in group}
                    self._futures.update(futures)
                    self._pool.submit(self._run_group, futures)
        else:
            for group in groups:
                if len(group) > 1:
                    run = self._read_group({i: todo[i] for i in group}, self._stop)
                    self._runs.update(dict.fromkeys(group, run))

    def _run_group(self, futures: dict[int, Future[_ReadResult]]) -> None:
        """Read one run of partitions in a worker thread; each result goes to its future."""
        left = dict(futures)
        try:
            if self._stop.is_set():
                raise _Cancelled
            run = self._read_group({i: self._todo[i] for i in futures}, self._stop)
            with contextlib.closing(run):
                for index, result in run:
                    left.pop(index).set_result(result)
        except BaseException as exc:
            if not isinstance(exc, _Cancelled):
                self._stop.set()  # the others stop at their next batch
            for number, future in enumerate(left.values()):
                # The partition that failed gets the failure, the rest of its run never ran.
                future.set_exception(exc if number == 0 else _Cancelled())

    def _run(self, index: int, part: PartitionInfo) -> _ReadResult:
        if self._stop.is_set():
            raise _Cancelled
        try:
            return self._read(part, index, self._stop)
        except _Cancelled:
            raise
        except BaseException:
            self._stop.set()  # the others stop at their next batch
            raise

    def result(self, index: int) -> _ReadResult:
        """The staged file, how it was staged and its marker (waits for a parallel read)."""
        future = self._futures.get(index)
        if future is None:
            run = self._runs.pop(index, None)
            if run is None:
                return self._read(self._todo[index], index, self._stop)
            got, result = next(run)
            assert got == index, (got, index)  # a run yields its partitions in order
            if run not in self._runs.values():
                run.close()  # its last partition: the source's stream ends now
            return result
        try:
            return future.result()
        except _Cancelled:
            pass
        self._stop.set()
        for other in self._futures.values():  # in partition order: the first real failure
            error = other.exception()
            if error is not None and not isinstance(error, _Cancelled):
                raise error
        raise AssertionError("a read was cancelled without a failure")  # pragma: no cover

    def __enter__(self) -> _Reads:
        return self

    def __exit__(self, *exc: object) -> None:
        for run in {id(r): r for r in self._runs.values()}.values():
            run.close()  # a run left before its end (a failure) stops its stream
        self._runs.clear()
        if self._pool is not None:
            if exc[0] is not None:
                self._stop.set()
            self._pool.shutdown(wait=True, cancel_futures=True)


def _resume_or_read(
    writer: Writer,
    source: Source,
    spec: DatasetSpec,
    plan: _Plan,
    full: bool,
    report: _Reporter,
    part: PartitionInfo,
    index: int,
    stop: threading.Event,
) -> _ReadResult:
    """Stage one partition from an interrupted sync's checkpoint, else read and checkpoint it.

    Returns the staged file, how it was staged, the partition's marker (the source's from
    `Source.partitions`, else the one it computed from the rows it sent, `streamed_marker`) and
    what the rows showed as they streamed in (`StreamFacts`; None for a resumed partition: its
    rules read the file).
    """
    report.started(index, part)
    want = _wanted(source, spec, plan, part)
    resumed = _resumed(writer, spec, part, want, full)
    if resumed is not None:
        return resumed, "resumed", part.marker, None
    batches = read_batches(source, spec, part.year, writer.settings.batch_rows)
    return _stage_read(writer, source, spec, plan, report, part, index, stop, want, batches)


def _wanted(
    source: Source, spec: DatasetSpec, plan: _Plan, part: PartitionInfo
) -> CheckpointRecord:
    """The checkpoint an earlier sync must have left for ``part`` to be resumed from it."""
    return CheckpointRecord(
        dataset=spec.name,
        year=part.year,
        source=source.name,
        columns_digest=plan.digest,
        change_marker=plan.info.change_marker,
        marker=part.marker,
        sha256="",
        size_bytes=0,
        row_count=-1 if part.row_count is None else part.row_count,
    )


def _resumed(
    writer: Writer, spec: DatasetSpec, part: PartitionInfo, want: CheckpointRecord, full: bool
) -> StagedFile | None:
    """``part`` staged from the checkpoint of an interrupted sync, if one is still current."""
    # full=True trusts no marker, so no checkpoint either (their validity rests on markers)
    resumed = None if full else writer.resume_partition(want, spec.primary_key)
    if resumed is not None:
        log.info("%s %s: resumed from the checkpoint of an earlier sync", spec.name, part.year)
    return resumed


def _resume_or_read_years(
    writer: Writer,
    source: Source,
    spec: DatasetSpec,
    plan: _Plan,
    full: bool,
    report: _Reporter,
    parts: Mapping[int, PartitionInfo],
    stop: threading.Event,
) -> Generator[tuple[int, _ReadResult], None, None]:
    """`_resume_or_read` for a run of partitions, in order: those with a checkpoint are
    resumed, all the others read with one `read_years` (one scan of the source's table)."""
    wants = {index: _wanted(source, spec, plan, part) for index, part in parts.items()}
    resumed = {
        index: _resumed(writer, spec, parts[index], want, full) for index, want in wants.items()
    }
    unread = [index for index in parts if resumed[index] is None]
    batch_rows = writer.settings.batch_rows
    years = [parts[index].year for index in unread]
    pairs = (
        read_years(source, spec, years, batch_rows)  # type: ignore[arg-type]  # partitioned
        if len(unread) > 1
        else None
    )
    try:
        for index, part in parts.items():
            report.started(index, part)
            done = resumed[index]
            if done is not None:
                yield index, (done, "resumed", part.marker, None)
                continue
            if pairs is None:
                batches: Iterator[pa.RecordBatch] = read_batches(
                    source, spec, part.year, batch_rows
                )
            else:
                _, batches = next(pairs)  # read_years checked that the year is this one
            yield (
                index,
                _stage_read(
                    writer, source, spec, plan, report, part, index, stop, wants[index], batches
                ),
            )
    finally:
        if pairs is not None:
            pairs.close()


def _stage_read(
    writer: Writer,
    source: Source,
    spec: DatasetSpec,
    plan: _Plan,
    report: _Reporter,
    part: PartitionInfo,
    index: int,
    stop: threading.Event,
    want: CheckpointRecord,
    batches: Iterator[pa.RecordBatch],
) -> _ReadResult:
    """Stage and checkpoint one partition from the source's ``batches``."""
    schema = file_schema(plan.info.schema)
    facts = StreamFacts(schema, spec.partition_column) if plan.rules else None
    done = writer.stage_partition(
        spec.name,
        part.year,
        schema,
        _observed(facts, _until(stop, report.counted(index, part, batches))),
        primary_key=spec.primary_key,
    )
    if facts is not None:
        facts.ordered_key = done.ordered_key
    marker = part.marker
    if marker is None:
        marker = streamed_marker(source, spec, part.year)
    writer.checkpoint(
        done,
        attrs.evolve(
            want,
            marker=marker,
            sha256=done.sha256,
            size_bytes=done.size_bytes,
            row_count=done.row_count,
        ),
    )
    return done, "read", marker, facts


def _observed(
    facts: StreamFacts | None, batches: Iterator[pa.RecordBatch]
) -> Iterator[pa.RecordBatch]:
    """``batches``, each shown to ``facts`` once the writer took it (so a batch the writer
    refuses, with a wrong schema, is never looked at)."""
    with contextlib.closing(batches):  # type: ignore[type-var]  # a generator has close()
        for batch in batches:
            yield batch
            if facts is not None:
                facts.update(batch)


def _until(
    stop: threading.Event, batches: Generator[pa.RecordBatch, None, None]
) -> Iterator[pa.RecordBatch]:
    """``batches`` until ``stop`` is set (another read failed): then `_Cancelled`."""
    with contextlib.closing(batches):  # closing the source's iterator ends its stream
        for batch in batches:
            if stop.is_set():
                raise _Cancelled
            yield batch


def _carry_over(
    prev: DatasetEntry | None,
    staged: Mapping[int | None, PartitionFile],
    years: frozenset[int] | None,
) -> tuple[tuple[PartitionFile, ...], list[int | None]]:
    """The new entry's partitions in year order, and the years the source no longer has.

    A current year outside ``years=`` keeps its file; one inside it that the source did not
    list is removed.
    """
    kept = dict(staged)
    removed: list[int | None] = []
    if prev is not None:
        for old in prev.partitions:
            if old.year in kept:
                continue
            if years is None or old.year in years:
                removed.append(old.year)  # the source no longer has this year
            else:
                kept[old.year] = old  # outside the requested years: keep
    partitions = tuple(kept[y] for y in sorted(kept, key=lambda y: -1 if y is None else y))
    return partitions, removed


def _validate(
    spec: DatasetSpec,
    prev: DatasetEntry | None,
    partitions: Sequence[PartitionFile],
    findings: Sequence[Finding],
    opts: SyncOptions,
) -> None:
    """Raise ValidationFailedError with the partitions' findings and any refused removal."""
    found = list(findings)
    if prev is not None and opts.validate and opts.max_removed_fraction is not None:
        loss = RemovedYears(opts.max_removed_fraction).check(
            prev, partitions, spec.partition_column
        )
        if loss is not None:
            found.append(loss)
    if found:
        raise ValidationFailedError(
            dataset=spec.name, report=ValidationReport(dataset=spec.name, findings=tuple(found))
        )


def _refuse_a_source_updated_while_read(source: Source, spec: DatasetSpec, info: TableInfo) -> None:
    """SyncError when the source's change marker moved since ``info`` was read.

    The markers were read before the rows: if the source was updated while its rows were read,
    the snapshot could pair new rows with old markers (or a mix of both versions) and later
    syncs would skip the difference. Ask again; a retry resumes what it can.
    """
    if info.change_marker is None:
        return
    now = describe(source, spec).change_marker
    if now != info.change_marker:
        raise SyncError(
            dataset=spec.name,
            reason=f"the source was updated while it was being read (its change marker "
            f"went from {info.change_marker!r} to {now!r}); run the sync again (finished "
            "years that did not change are resumed, not downloaded again)",
        )


def _result(
    source: Source,
    spec: DatasetSpec,
    prev: DatasetEntry | None,
    plan: _Plan,
    staged: _Staged,
    partitions: tuple[PartitionFile, ...],
    removed: Sequence[int | None],
    years: frozenset[int] | None,
) -> tuple[DatasetEntry | None, DatasetResult]:
    """The new entry (None if nothing, not even a marker, changed) and the dataset's result."""
    info = plan.info
    # The recipe widens with every sync: a quick ``years=[2024]`` refresh of a dataset synced
    # in full must not narrow what ``sync --all`` fetches. An entry written before recipes were
    # recorded counts as every year (what ``sync --all`` falls back to for it).
    if prev is None:
        recipe = SyncRecipe(years=years)
    else:
        recipe = (prev.recipe or SyncRecipe(years=None)).merged(years)
    entry = DatasetEntry(
        name=spec.name,
        partition_column=spec.partition_column,
        primary_key=spec.primary_key,
        columns=plan.columns,
        partitions=partitions,
        source=source.name,
        change_marker=info.change_marker,
        comment=info.comment,
        synced_at=format_timestamp(datetime.now(timezone.utc)),
        recipe=recipe,
    )
    status = _status(prev, entry, changed=bool(staged.written or removed) or not plan.same_schema)
    drift = plan.drift
    result = DatasetResult(
        dataset=spec.name,
        status=status,
        years_written=tuple(staged.written),
        years_reused=tuple(staged.reused),
        years_removed=tuple(removed),
        years_resumed=tuple(staged.resumed),
        previous_change_marker=prev.change_marker if prev is not None else None,
        rows_written=staged.rows_written,
        bytes_written=staged.bytes_written,
        row_count=entry.row_count,
        change_marker=info.change_marker,
        drift=drift if drift is not None and not drift.empty else None,
    )
    return (entry if status != "unchanged" else None), result


def _status(prev: DatasetEntry | None, entry: DatasetEntry, *, changed: bool) -> Status:
    """How the dataset changed: ``added``, ``updated`` (files or columns), ``recorded`` (only its
    markers, source or comment), else ``unchanged``.
    """
    if prev is None:
        return "added"
    if changed:
        return "updated"
    if (prev.change_marker, prev.source, prev.comment) != (
        entry.change_marker,
        entry.source,
        entry.comment,
    ) or [p.marker for p in prev.partitions] != [p.marker for p in entry.partitions]:
        return "recorded"
    return "unchanged"


def run_sync(
    writer: Writer,
    source: Source,
    specs: Sequence[DatasetSpec],
    head: Manifest | None,
    opts: SyncOptions,
) -> SyncReport:
    """Sync ``specs`` from ``source`` inside ``writer``; commit once if anything changed.

    Raises:
        DiskSpaceError: the disk or quota filled up (ENOSPC, EDQUOT, EFBIG).
        SyncError: anything else failed; nothing was committed.
    """
    started = time.monotonic()
    datasets = dict(head.datasets) if head else {}
    results = []
    current = "(commit)"
    try:
        for number, spec in enumerate(specs):
            current = spec.name
            entry, result = _sync_dataset(
                writer,
                source,
                spec,
                head.datasets.get(spec.name) if head else None,
                opts.for_dataset(spec.name),
                (number, len(specs)),
            )
            results.append(result)
            if entry is not None:
                datasets[spec.name] = entry
            log.info("%s: %s", spec.name, result.status)
        current = ",".join(s.name for s in specs)
        changed = any(r.status != "unchanged" for r in results)
        manifest = writer.commit(head, datasets) if changed else None
        for spec in specs:  # committed (or nothing to commit): no sync will resume from them
            try:
                writer.checkpoints.clear(spec.name)
            except OSError as exc:
                log.warning("could not remove the checkpoints of %s: %s", spec.name, exc)
    except WrdsVaultError:
        raise
    except OSError as exc:
        raise os_error(exc, dataset=current, root=writer.layout.root) from exc
    except Exception as exc:
        # pyarrow's errors (loaded by then if it raised one; a sync that stopped at the change
        # marker never loads pyarrow)
        arrow = sys.modules.get("pyarrow")
        if arrow is None or not isinstance(exc, arrow.ArrowException):
            raise
        raise SyncError(dataset=current, reason=f"{type(exc).__name__}: {exc}") from exc
    return SyncReport(
        snapshot_id=manifest.snapshot_id if manifest else (head.snapshot_id if head else None),
        parent_snapshot_id=head.snapshot_id if head else None,
        committed=manifest is not None,
        datasets=tuple(results),
        duration_s=time.monotonic() - started,
    )


_DISK_FULL: Final = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


def os_error(exc: OSError, *, dataset: str, root: Path) -> WrdsVaultError:
    """Translate an OS error during a write into the error a user can act on."""
    if exc.errno in _DISK_FULL:
        try:
            free: int | None = int(psutil.disk_usage(str(root)).free)
        except OSError:
            free = None  # the original error matters more than the figure
        return DiskSpaceError(
            path=str(root),
            needed_bytes=None,  # a write that fills the disk mid-way does not know the rest
            free_bytes=free,
            reason=f"the disk or quota filled up while writing {dataset} "
            f"({errno.errorcode.get(exc.errno or 0, exc.errno)}: {exc.strerror})",
        )
    # After a failed fsync the data must be treated as lost: never retry, abort the commit.
    return SyncError(dataset=dataset, reason=f"{type(exc).__name__}: {exc}")
