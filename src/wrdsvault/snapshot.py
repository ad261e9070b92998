"""Snapshot: a read-only view of the vault pinned to one committed manifest.

Files are immutable and the manifest never changes, so a snapshot gives the same answer for as
long as its files exist: tomorrow, next year, on another machine with a copy of the vault. While
it is open, a reader lease keeps ``gc`` from deleting them (docs/retention.md).

Opening one reads the manifest and takes the lease; a dataset's files are checked (no symlink,
exists, regular, size) when it is first used: by a query that names it, or `Snapshot.files`.
docs/query.md says why, and what a query that names no view (``read_parquet``) does.
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import duckdb

from wrdsvault._query import (
    LazyResult,
    Params,
    PinnedConnection,
    check_params,
    check_timeout,
    fetch_arrow,
    fetch_df,
)
from wrdsvault._storage.pinned import PinnedFileCheck
from wrdsvault.datasets import reserved_library, validate_dataset
from wrdsvault.errors import IntegrityError, UnknownDatasetError, VaultFormatError
from wrdsvault.schema import arrow_schema

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

    from wrdsvault._session import Session
    from wrdsvault._storage.layout import Layout
    from wrdsvault._storage.lease import Lease
    from wrdsvault.manifest import DatasetEntry, Manifest
    from wrdsvault.receipts import Receipt

__all__ = ["Snapshot"]

log = logging.getLogger(__name__)

T = TypeVar("T")


class Snapshot:
    """A read-only view of one committed manifest. Get one from `Warehouse.snapshot`.

    Attributes:
        id: the snapshot id (sorts by commit time).
        committed_at: when it was committed (aware UTC).
        fingerprint: SHA-256 of its data content; identical data gives an identical fingerprint.
        datasets: the dataset names it holds, sorted.

    Example:
        >>> snap = wh.snapshot("2025-12-01")            # doctest: +SKIP
        >>> snap.query("select count(*) as n from crsp.msf")  # doctest: +SKIP
    """

    def __init__(
        self,
        layout: Layout,
        manifest: Manifest,
        *,
        verify: bool = False,
        query_timeout_s: float | None = None,
        query_threads: int | None = None,
        query_memory_limit: str | None = None,
        lease: Lease | None = None,
        renew_lease: Callable[[], Lease | None] | None = None,
    ) -> None:
        """Open a view of ``manifest``; `Warehouse.snapshot` is the way to get one.

        ``lease`` is the reader lease taken for it (released by `close`, or on failure here);
        ``renew_lease`` takes a new one when the snapshot is queried again after `close`.
        """
        self._layout = layout
        self.manifest = manifest
        self.query_timeout_s = check_timeout(query_timeout_s, name="query_timeout_s")
        self._threads = query_threads
        self._memory_limit = query_memory_limit
        self._paths: dict[str, list[str]] = {}  # dataset -> absolute paths, resolved on use
        self._con: PinnedConnection | None = None
        self._con_lock = threading.Lock()
        self._finalizer: weakref.finalize[Any, Any] | None = None
        self._lease = lease
        self._renew_lease = renew_lease
        self._lease_released = False
        try:
            if verify:
                check = PinnedFileCheck(layout)
                for name in self.manifest.datasets:
                    self._check_dataset(name, check, verify=True)
        except BaseException:
            if lease is not None:
                lease.release()
            raise

    # -- identity --------------------------------------------------------------------------

    @property
    def id(self) -> str:
        return self.manifest.snapshot_id

    @property
    def committed_at(self) -> datetime:
        return self.manifest.committed_at

    @property
    def fingerprint(self) -> str:
        return self.manifest.fingerprint

    @property
    def datasets(self) -> tuple[str, ...]:
        return tuple(sorted(self.manifest.datasets))

    @property
    def leased(self) -> bool:
        """Whether a reader lease protects this snapshot's files from ``gc`` now.

        False after `close` (until the next query takes a new one), and for a process that
        cannot write the vault (a group member, a read-only mount): docs/retention.md.
        """
        lease = self._lease
        return lease is not None and not lease.released

    def __repr__(self) -> str:
        return f"Snapshot(id={self.id!r}, datasets={list(self.datasets)!r})"

    # -- files -----------------------------------------------------------------------------

    def _paths_of(self, name: str) -> list[str]:
        """The absolute paths of ``name``'s files, oldest year first (resolved once)."""
        paths = self._paths.get(name)
        if paths is None:
            resolve = self._layout.resolve_relpath_str
            paths = [resolve(rel) for rel in self.manifest.partition_paths(name)]
            self._paths[name] = paths
        return paths

    def _check_dataset(self, name: str, check: PinnedFileCheck, *, verify: bool = False) -> None:
        """`_check_files` of dataset ``name``."""
        entry = self.manifest.datasets[name]
        _check_files(entry, self._paths_of(name), check, snapshot_id=self.id, verify=verify)

    def dataset(self, name: str) -> DatasetEntry:
        """The manifest entry of one dataset: columns, partitions, source vintage.

        Raises:
            UnknownDatasetError: the snapshot does not hold ``name``.
        """
        validate_dataset(name)
        try:
            return self.manifest.datasets[name]
        except KeyError:
            raise UnknownDatasetError(
                dataset=name,
                known=list(self.datasets),
                hint=f"snapshot {self.id} does not hold it; sync it first",
            ) from None

    def files(self, dataset: str, years: int | Iterable[int] | None = None) -> list[Path]:
        """The absolute paths of the Parquet files pinned for ``dataset``, oldest year first.

        Any engine can read exactly this snapshot from them (docs/scale-out.md). ``years`` keeps
        the files of those years only. Each file is checked against the manifest (exists, size)
        when this is called: a missing or truncated file raises, never a short list.

        Raises:
            UnknownDatasetError: the snapshot does not hold ``dataset``.
            InvalidValueError: a year outside 1-9999, or ``years`` for an unpartitioned dataset.
            IntegrityError: a file is missing, not a regular file, or has another size.
        """
        from wrdsvault.engines import pinned_files

        return pinned_files(self, dataset, years)

    def to_polars(
        self,
        dataset: str,
        *,
        columns: Sequence[str] | None = None,
        years: int | Iterable[int] | None = None,
    ) -> Any:
        """A ``polars.LazyFrame`` scanning this snapshot's files of ``dataset`` (`files`).

        With the manifest's schema; needs ``pip install 'wrdsvault[polars]'``. Raises as `files`,
        `MissingExtraError` without polars, `InvalidValueError` for an unknown column.
        """
        from wrdsvault import engines

        return engines.to_polars(self, dataset, columns=columns, years=years)

    def to_dask(
        self,
        dataset: str,
        *,
        columns: Sequence[str] | None = None,
        years: int | Iterable[int] | None = None,
    ) -> Any:
        """A ``dask.dataframe.DataFrame`` over this snapshot's files of ``dataset`` (`files`).

        Arrow-backed columns with the manifest's types; needs ``pip install 'wrdsvault[dask]'``.
        Raises as `to_polars`.
        """
        from wrdsvault import engines

        return engines.to_dask(self, dataset, columns=columns, years=years)

    def to_ray(
        self,
        dataset: str,
        *,
        columns: Sequence[str] | None = None,
        years: int | Iterable[int] | None = None,
    ) -> Any:
        """A ``ray.data.Dataset`` over this snapshot's files of ``dataset`` (`files`).

        With the manifest's Arrow schema; needs ``pip install 'wrdsvault[ray]'``. Raises as
        `to_polars`.
        """
        from wrdsvault import engines

        return engines.to_ray(self, dataset, columns=columns, years=years)

    def to_spark(
        self,
        spark: Any,
        dataset: str,
        *,
        columns: Sequence[str] | None = None,
        years: int | Iterable[int] | None = None,
    ) -> Any:
        """A pyspark ``DataFrame`` of ``dataset`` read by the session ``spark`` (`files`).

        With the manifest's schema as a Spark ``StructType``; every executor must see the vault
        at the same path. Needs ``pip install 'wrdsvault[spark]'``. Raises as `to_polars`.
        """
        from wrdsvault import engines

        return engines.to_spark(self, spark, dataset, columns=columns, years=years)

    def _hold_lease(self) -> None:
        """Take a new reader lease if `close` released the last one (files are handed out)."""
        with self._con_lock:
            self._renew_if_released()

    def _renew_if_released(self) -> None:
        # Called with _con_lock held.
        if self._lease_released and self._renew_lease is not None:
            self._lease = self._renew_lease()
            self._lease_released = False

    def receipt(self, datasets: str | Iterable[str] | None = None) -> Receipt:
        """A reproducibility receipt of ``datasets`` (default: all) in this snapshot.

        Names the snapshot id and fingerprint and, per dataset, its source vintage (the table
        comment and change marker), row count and content digest, plus the versions of
        wrdsvault, DuckDB and pyarrow. Instant for data synced with format 3 or later (the
        digest is in the manifest); older files are read to compute it (``computed`` says so).
        Save it with `Receipt.save`; check it anywhere with `wrdsvault.check_receipt`.

        Raises:
            UnknownDatasetError: the snapshot does not hold one of ``datasets``.
            IntegrityError: a file whose digest had to be computed cannot be read.
        """
        from wrdsvault.receipts import make_receipt

        if datasets is None:
            names: list[str] = list(self.datasets)
        elif isinstance(datasets, str):
            names = [datasets]
        else:
            names = list(datasets)
        given: list[object] = list(names)  # untyped callers can pass anything
        for name in given:
            if not isinstance(name, str):
                msg = f"dataset names are str, not {type(name).__name__}"
                raise TypeError(msg)
            self.dataset(name)
        return make_receipt(self._layout, self.manifest, names)

    # -- queries ---------------------------------------------------------------------------

    def _acquire(self) -> PinnedConnection:
        """The connection, opened if needed, counted as in use: the caller must `release` it.

        Holding ``_con_lock`` while acquiring means `close` cannot slip in between: a connection
        handed out here is closed for real only after its last user releases it.
        """
        with self._con_lock:
            con = self._con
            if con is None or not con.acquire():
                con = self._open()
                con.acquire()
            return con

    def _open(self) -> PinnedConnection:
        # Called with _con_lock held. After close() released the lease, take a new one before
        # the files are checked again (docs/retention.md: lease first, then look).
        self._renew_if_released()
        # Every partition of a dataset has the dataset's one schema (sync refuses to mix schemas
        # across years), so no union_by_name: it costs ~9x at view creation.
        con = self._pinned()
        self._con = con
        self._finalizer = weakref.finalize(self, con.close)
        return con

    def _pinned(self, *, lazy: bool = True) -> PinnedConnection:
        """The connection over this snapshot's datasets, those DuckDB can name.

        A dataset's files are checked right before DuckDB first opens them (a symlink planted
        since the snapshot was opened must not be followed), on every new connection (after
        `close`): when a query first names the dataset (``lazy``), or all here.

        A dataset whose library is a name DuckDB reserves (committed before syncs refused such
        names) gets no view: its schema could not be created, and leaving it out keeps the rest
        of the snapshot queryable. Its files are still listed by `files`.
        """
        unqueryable = {
            name: f"{name} cannot be queried: its library {name.split('.', 1)[0]!r} is a name "
            f"DuckDB reserves (read its files with snapshot.files({name!r}), and run `wrdsvault "
            f"drop {name}` to commit a snapshot without it)"
            for name in self.manifest.datasets
            if reserved_library(name)
        }
        for note in unqueryable.values():
            log.warning("snapshot %s: %s", self.id, note)
        entries = self.manifest.datasets
        check = PinnedFileCheck(self._layout)  # used under the connection's view lock only
        views: dict[str, list[str]] = {}
        # A dataset whose entry is damaged (the manifest is read lazily) allows no file, and a
        # query that uses it fails with why; the others stay queryable. Strings only: an
        # exception's traceback would hold the Snapshot, whose finalizer closes us.
        damaged: dict[str, tuple[str, str]] = {}
        for name in entries:
            if name in unqueryable:
                continue
            try:
                views[name] = self._paths_of(name)
            except VaultFormatError as exc:
                views[name] = []
                damaged[name] = (exc.path, exc.problem)
        sid = self.id

        def check_view(name: str) -> None:  # must not hold the Snapshot: its finalizer closes us
            if name in damaged:
                path, problem = damaged[name]
                raise VaultFormatError(path=path, problem=problem)
            _check_files(entries[name], views[name], check, snapshot_id=sid)

        return PinnedConnection(
            views,
            threads=self._threads,
            memory_limit=self._memory_limit,
            schemas={
                name: arrow_schema(entries[name].columns)
                for name, paths in views.items()
                if not paths and name not in damaged
            },
            unqueryable=unqueryable,
            check=check_view,
            lazy=lazy,
            snapshot_id=self.id,
        )

    def _timeout(self, timeout_s: float | None) -> float | None:
        return self.query_timeout_s if timeout_s is None else check_timeout(timeout_s)

    def _run(
        self,
        sql: str,
        params: Params,
        timeout_s: float | None,
        fetch: Callable[[duckdb.DuckDBPyRelation], T],
    ) -> T:
        """Run one checked SELECT on a cursor of this snapshot's connection; ``fetch`` the rows."""
        limit = self._timeout(timeout_s)
        con = self._acquire()
        try:
            return con.run(sql, params, limit, fetch)
        finally:
            con.release()

    def _stream(
        self, sql: str, params: Params, timeout_s: float | None, batch_rows: int
    ) -> Iterator[pa.RecordBatch]:
        """Stream one checked SELECT's rows; the connection is in use until the stream ends."""
        limit = self._timeout(timeout_s)
        con = self._acquire()
        try:
            yield from con.stream(sql, params, limit, batch_rows)
        finally:
            con.release()

    def _translate(self, sql: str, params: Params, dialect: str) -> tuple[str, Params]:
        """``sql`` and ``params`` as DuckDB runs them: PostgreSQL is translated first, so the
        sandbox judges the statement that runs (docs/wrds-compat.md)."""
        if dialect == "duckdb" and isinstance(dialect, str):
            return sql, params  # without importing the translator (~10 ms a process)
        from wrdsvault._pgsql import check_dialect, schema_of, translate

        if check_dialect(dialect) == "duckdb":  # pragma: no cover - a str subclass
            return sql, params
        return translate(sql, params, schema=schema_of(self.manifest))

    def query(
        self,
        sql: str,
        params: Params = None,
        *,
        timeout_s: float | None = None,
        dialect: str = "duckdb",
    ) -> pd.DataFrame:
        """Run one SELECT over this snapshot's tables and return a pandas DataFrame.

        Tables are named as on WRDS (``crsp.msf``, ``comp.funda``; quote ``"at"``). Safe to call
        from several threads at once; each query runs on its own DuckDB cursor. Columns come
        back as DuckDB converts them: an integer column with NULLs is a pandas nullable
        ``Int32``/``Int64``, a date is ``datetime64``; `wrdsvault.Connection` returns what
        ``wrds`` returns instead.

        Args:
            sql: exactly one SELECT statement (DuckDB dialect). Use ``$1``/``?`` placeholders.
            params: values for the placeholders.
            timeout_s: interrupt the query after this many seconds (finite, > 0).
            dialect: ``"duckdb"``, or ``"postgres"`` to run SQL written for WRDS (``%s`` and
                ``%(name)s`` placeholders, ``'01/01/1960'``, bare ``at``): translated to
                DuckDB first (needs ``pip install 'wrdsvault[sql]'``; docs/wrds-compat.md).

        Raises:
            QueryRejectedError: not exactly one SELECT (COPY, ATTACH, SET, PRAGMA, ... are
                refused), a refused function, or a statement too big to plan.
            QueryError: DuckDB could not run it (syntax, unknown column).
            QueryTimeoutError: it ran past ``timeout_s``.
            SqlDialectError: ``dialect="postgres"`` and the statement has no DuckDB form.
            InvalidValueError: ``timeout_s`` is not a finite number > 0, or an unknown dialect.
            TypeError: ``params`` is not a list, tuple, dict or None.
            IntegrityError: a file of a dataset the query reads (checked when a query first
                names it; every dataset, for a query that names no view) fails its checks.
        """
        sql, params = self._translate(sql, params, dialect)
        return self._run(sql, params, timeout_s, fetch_df)

    def arrow(
        self,
        sql: str,
        params: Params = None,
        *,
        timeout_s: float | None = None,
        dialect: str = "duckdb",
    ) -> pa.Table:
        """Like `query`, returning a pyarrow Table."""
        sql, params = self._translate(sql, params, dialect)
        return self._run(sql, params, timeout_s, fetch_arrow)

    def pl(
        self,
        sql: str,
        params: Params = None,
        *,
        timeout_s: float | None = None,
        dialect: str = "duckdb",
    ) -> Any:
        """Like `query`, returning a polars DataFrame built from the Arrow result without a copy
        where polars can share its buffers.

        Raises:
            MissingExtraError: polars is not installed (``pip install 'wrdsvault[polars]'``);
                the query does not run.
        """
        from wrdsvault._polars import from_arrow, require_polars

        require_polars()
        sql, params = self._translate(sql, params, dialect)
        return from_arrow(self._run(sql, params, timeout_s, fetch_arrow))

    def session(self) -> Session:
        """A sandboxed scratch session: ``with snap.session() as s:`` runs several statements,
        ``CREATE TEMP TABLE ... AS``, ``CREATE TEMP VIEW``, ``INSERT INTO`` a temp table, in
        memory, seen by this session only and gone after the block (docs/query.md#sessions).

        ``s.execute(sql)`` runs statements; ``s.query``, ``s.arrow``, ``s.pl`` return a SELECT's
        rows as `query`, `arrow` and `pl` do. The sandbox is the one of `query`.
        """
        from wrdsvault._session import Session

        return Session(self)

    def sql(self, sql: str, params: Params = None, *, dialect: str = "duckdb") -> LazyResult:
        """Validate ``sql`` now; run it later with ``.df()``, ``.arrow()``, ``.pl()``."""
        sql, params = self._translate(sql, params, dialect)
        check_params(params)
        con = self._acquire()
        try:
            text = con.check(sql)
        finally:
            con.release()
        return LazyResult(self, text, params)

    def close(self) -> None:
        """Close the DuckDB connection and release the reader lease. Idempotent; the snapshot
        reopens it (and takes a new lease) on the next query.

        Returns at once. A query running on another thread finishes normally; the connection
        (and its spill folder) is closed, and the lease released, when the last such query ends.
        """
        with self._con_lock:
            con, lease = self._con, self._lease
            if self._finalizer is not None:
                self._finalizer()
            self._con = None
            self._finalizer = None
            self._lease = None
            self._lease_released = True
        if lease is not None:
            if con is None:
                lease.release()
            else:
                con.when_closed(lease.release)

    def __enter__(self) -> Snapshot:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _check_files(
    entry: DatasetEntry,
    paths: list[str],
    check: PinnedFileCheck,
    *,
    snapshot_id: str,
    verify: bool = False,
) -> None:
    """The cheap checks of a dataset's files (no symlinked folder, exists, regular file, size);
    the full hash too if ``verify``. The same checks as ``verify``.

    Raises:
        IntegrityError: a file fails a check, or cannot be looked at or read (EIO, EACCES).
    """
    for part, path in zip(entry.partitions, paths, strict=True):
        problem = check.check(path, part.size_bytes)
        if problem is None and verify:
            problem = check.hash(path, part.sha256)[1]
        if problem is not None:
            raise IntegrityError(path=problem.path, problem=problem.detail, snapshot_id=snapshot_id)
