"""`WrdsSource`: mirror WRDS (a PostgreSQL server, reached by the ``wrds`` client's rules).

How it reads WRDS (docs/wrds.md has the user's version):

* **Login** with psycopg2 alone, with the ``wrds`` client's host, port, database, TLS and
  credential conventions (``_wrds_login.py``), never a prompt; ``wrds``, SQLAlchemy and pandas
  are imported only for a ``wrds.Connection`` (``db=``, `WrdsSource.db`, `connect`).

* **Schema** from ``information_schema.columns`` joined to ``pg_attribute``/``format_type`` for
  the exact declared types (``numeric(11,5)``, ``varchar(8)``), never from pandas; each type is
  mapped explicitly (`arrow_type`) and kept in the field metadata under ``b"source_type"``; the
  column's comment (WRDS's label, ``col_description``) under ``b"comment"``.
  Works on WRDS's friendly schemas (``crsp``, ``comp``, ``ff``), which are views.
* **Change marker**: the table comment (``"Daily Stock - Securities (Updated 2025-02-08)"`` or
  ``"Last modified: 06/14/2024 02:40:46"``). A comment in neither format, or none, gives
  ``None``: the vault then compares content.
* **Partitions**: one ``GROUP BY extract(year FROM <date column>)`` query returns each year's exact
  row count and a content marker, the row count plus the sum of ``hash_record_extended(row, 0)``
  over the year's rows (PostgreSQL >= 14; computed on the server, about 1M rows/s; without it the
  marker is ``None``). Only the years the sync will compare are hashed up front; the others
  (all of them on a first sync) get their marker from the rows as they are read: the COPY adds
  ``hash_record_extended(row, 0)`` as a last column, summed exactly and dropped by the reader.
  Rows with a NULL date are refused, never dropped.
* **Rows**: ``COPY (SELECT ... ORDER BY <key>, <other columns>) TO STDOUT (FORMAT csv)`` on the
  source's psycopg2 connection, written by one thread into an OS pipe and
  parsed by another with ``pyarrow.csv.open_csv`` (explicit column types) into a bounded queue
  the vault writes from. ``read_partitions`` reads a run of years with one COPY ordered by the
  year (sent as a last column; the reader cuts the blocks where it changes): one scan of a
  table without an index on its date for the run instead of one per year. Memory is bounded
  by a few CSV blocks and the vault's row group, not by the year or the run (figures against
  ``wrds.Connection.raw_sql``: docs/performance.md). Up to ``streams`` years or runs are read
  at once, each on its own connection (at most WRDS's per-user limit; docs/wrds.md).
* **Failures** become `SourceError` (or `UnknownDatasetError`) with what to do next and never
  the password. A dropped connection before a partition has sent its first batch is retried from
  the start (reconnecting, with exponential backoff); after that, the partition fails with
  ``retryable=True`` and the vault commits nothing.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import difflib
import io
import itertools
import logging
import os
import queue
import re
import threading
import time
from collections.abc import Collection, Generator, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Final

import attrs

from wrdsvault._memory import stream_pool
from wrdsvault.datasets import DatasetSpec
from wrdsvault.errors import (
    InvalidValueError,
    SourceError,
    SourceUnavailableError,
    UnknownDatasetError,
)
from wrdsvault.sources._wrds_login import (
    CONNECT_TIMEOUT_S,
    WRDS_CONNECT_ARGS,
    WRDS_POSTGRES_DB,
    WRDS_POSTGRES_HOST,
    WRDS_POSTGRES_PORT,
    LoginParams,
    display_url,
    login,
)
from wrdsvault.sources._wrds_login import check_connect_kwargs as _check_connect_kwargs
from wrdsvault.sources._wrds_login import first_line as _first_line
from wrdsvault.sources._wrds_login import login_error as _login_error
from wrdsvault.sources._wrds_login import scrub as _scrub
from wrdsvault.sources._wrds_login import secrets as _secrets
from wrdsvault.sources.base import COMMENT_KEY, SOURCE_TYPE_KEY, PartitionInfo, TableInfo

if TYPE_CHECKING:
    import psycopg2.extensions
    import pyarrow as pa
    import wrds

__all__ = [
    "CONNECT_TIMEOUT_S",
    "DEFAULT_STREAMS",
    "WRDS_CONNECTION_LIMIT",
    "WRDS_CONNECT_ARGS",
    "WRDS_POSTGRES_DB",
    "WRDS_POSTGRES_HOST",
    "WRDS_POSTGRES_PORT",
    "WrdsSource",
    "arrow_type",
    "connect",
    "parse_comment",
]

log = logging.getLogger(__name__)

_NAME: Final = "wrds"
#: WRDS's two comment formats (docs/wrds.md#table-comments-say-when-a-table-changed).
_UPDATED_RE: Final = re.compile(r"\(Updated\s+(\d{4}-\d{2}-\d{2})\)\s*$")
_MODIFIED_RE: Final = re.compile(r"^Last modified:\s*(\d{2}/\d{2}/\d{4} \d{2}:\d{2}:\d{2})")
#: Marker of a year: "<method>:<row count>:<sum of row hashes>"; bump the method to invalidate.
_ROW_HASH_METHOD: Final = "pg-rowhash1"
_ROW_ALIAS: Final = "wrdsvault_row"
#: The name the CSV reader gives the row-hash column a COPY may add (never a table column).
_HASH_COLUMN: Final = "wrdsvault_row_hash"
#: ... and the row's year, which a COPY of several years adds last (`WrdsSource.read_partitions`).
_YEAR_COLUMN: Final = "wrdsvault_row_year"
#: Bytes per block the CSV reader parses at once (2 MiB: -30 MB RSS, ~15% slower), pipe buffers.
_CSV_BLOCK_BYTES: Final = 4 << 20
_PIPE_BUFFER_BYTES: Final = 1 << 20
#: Parsed blocks queued between the parser and the consumer (memory: about this many blocks).
_QUEUE_BLOCKS: Final = 8
#: Run before each COPY, for that transaction only (the caller's session stays as it was): ISO
#: dates whatever the server's DateStyle, shortest exact floats on any server version.
_COPY_SETUP: Final = (
    "BEGIN READ ONLY; SET LOCAL DateStyle = 'ISO, MDY'; SET LOCAL extra_float_digits = 3"
)
#: Libraries WRDS serves only as SAS data sets on the WRDS Cloud, never through PostgreSQL
#: (docs/wrds.md#libraries-served-only-as-sas-data).
SAS_ONLY_LIBRARIES: Final = {
    "taqmsec": "TAQ millisecond trades and quotes",
    "taq": "monthly TAQ",
    "taqmsamp": "TAQ millisecond samples",
}
#: SQLSTATEs after which a reconnect and retry can help (class 08 is matched by prefix).
_RETRYABLE_STATES: Final = frozenset({"57P01", "57P02", "57P03", "53300", "40001", "40P01"})
#: Concurrent connections WRDS accepts from one user (docs/wrds.md#parallel-streams).
WRDS_CONNECTION_LIMIT: Final = 5
#: Years a sync streams at once by default. The first stream uses the source's own connection
#: and each other one a connection of its own, so a sync holds this many connections: one below
#: WRDS's limit, which leaves room for the user's notebook or a second script.
DEFAULT_STREAMS: Final = WRDS_CONNECTION_LIMIT - 1

# --------------------------------------------------------------------------------------------
# Types
# --------------------------------------------------------------------------------------------

#: Declared types with one Arrow type each, by the name of its pyarrow factory (pyarrow is
#: loaded when a type is first mapped: a sync that stops at the change marker never loads it).
_FIXED_TYPES: Final[dict[str, str]] = {
    "smallint": "int16",
    "integer": "int32",
    "bigint": "int64",
    "real": "float32",
    "double precision": "float64",
    "numeric": "float64",  # unbounded: no fixed scale to keep
    "date": "date32",
    "boolean": "bool_",
    "text": "string",
    "varchar": "string",
    "char": "string",
    '"char"': "string",
    "name": "string",
    "citext": "string",
}
_NUMERIC_RE: Final = re.compile(r"numeric\((\d+),(-?\d+)\)")
_TEXT_RE: Final = re.compile(r"(varchar|char)\(\d+\)")
_TIME_RE: Final = re.compile(r"time(\(\d\))? without time zone")
_TIMESTAMP_RE: Final = re.compile(r"timestamp(\(\d\))? (with|without) time zone")


def _short_type(formatted: str) -> str:
    """WRDS's spelling of a ``format_type`` result: ``character varying(8)`` -> ``varchar(8)``."""
    out = re.sub(r"^character varying", "varchar", formatted)
    return re.sub(r"^character(?=\(|$)", "char", out)


def arrow_type(declared: str) -> pa.DataType | None:
    """Return the Arrow type wrdsvault stores for a declared PostgreSQL type, or ``None``.

    The mapping is explicit (docs/wrds.md#types): ``smallint``/``integer``/``bigint`` ->
    int16/int32/int64; ``real``/``double precision`` -> float32/float64; ``numeric(p,s)`` with
    ``p <= 38`` -> ``decimal128(p,s)``; unbounded ``numeric`` (and wider ones) -> float64;
    ``varchar``/``char``/``text`` -> string; ``date`` -> date32; ``time`` -> time64[us];
    ``timestamp`` -> timestamp[us] (naive); ``timestamptz`` -> timestamp[us, UTC];
    ``boolean`` -> bool. ``None`` means no mapping: the column is kept as its text form.

    Example:
        >>> arrow_type("numeric(11,5)")
        Decimal128Type(decimal128(11, 5))
        >>> arrow_type("varchar(8)")
        DataType(string)
    """
    import pyarrow as pa

    if declared in _FIXED_TYPES:
        factory: Any = getattr(pa, _FIXED_TYPES[declared])
        return factory()  # type: ignore[no-any-return]
    match = _NUMERIC_RE.fullmatch(declared)
    if match:
        precision, scale = int(match[1]), int(match[2])
        if 1 <= precision <= 38 and 0 <= scale <= precision:
            return pa.decimal128(precision, scale)
        return pa.float64()
    if _TEXT_RE.fullmatch(declared):
        return pa.string()
    if _TIME_RE.fullmatch(declared):
        return pa.time64("us")
    match = _TIMESTAMP_RE.fullmatch(declared)
    if match:
        return pa.timestamp("us", tz="UTC" if match[2] == "with" else None)
    return None


@attrs.frozen
class _Column:
    """One column as read: its name, declared type, Arrow type and how it is selected."""

    name: str
    declared: str
    arrow: pa.DataType
    parse: pa.DataType  # what the CSV reader parses (naive timestamps for timestamptz)
    known: bool  # False: unmapped type kept as text (not used for ordering)


@attrs.frozen
class _Table:
    """What `describe` learned about one relation; reused by `partitions`/`read_partition`."""

    library: str
    table: str
    oid: int
    comment: str | None
    columns: tuple[_Column, ...]
    schema: pa.Schema

    def column(self, name: str) -> _Column | None:
        return next((c for c in self.columns if c.name == name), None)


def _column(name: str, formatted: str, base: str | None) -> _Column:
    import pyarrow as pa

    declared = _short_type(formatted)
    arrow = arrow_type(_short_type(base) if base else declared)
    if arrow is None:
        log.info("column %s: no mapping for type %s; kept as text", name, declared)
        return _Column(name, declared, pa.string(), pa.string(), known=False)
    parse = pa.timestamp("us") if pa.types.is_timestamp(arrow) else arrow
    return _Column(name, declared, arrow, parse, known=True)


def parse_comment(comment: str | None) -> str | None:
    """Return the update stamp in a WRDS table comment, or ``None`` if it has none.

    ``"Daily Stock - Securities (Updated 2025-02-08)"`` -> ``"2025-02-08"``;
    ``"Last modified: 06/14/2024 02:40:46"`` -> ``"06/14/2024 02:40:46"`` (New York time).
    """
    if not comment:
        return None
    match = _UPDATED_RE.search(comment) or _MODIFIED_RE.match(comment)
    return match[1] if match else None


# --------------------------------------------------------------------------------------------
# Connecting (the login itself: _wrds_login.py)
# --------------------------------------------------------------------------------------------


def connect(*, load_libraries: bool = False, **kwargs: Any) -> wrds.Connection:
    """Connect to WRDS once, like ``wrds.Connection(**kwargs)``, but never prompt.

    Uses the client's conventions: ``wrds_hostname`` (default env ``PGHOST``, else WRDS's host),
    ``wrds_port`` (9737), ``wrds_dbname`` (``wrds``), ``wrds_username`` (default: libpq's
    ``PGUSER`` or the login name), the password from ``wrds_password``, ``PGPASSWORD`` or
    ``~/.pgpass``, and ``wrds_connect_args`` (default ``sslmode=require``). Unlike
    ``wrds.Connection()``, a failed login is not retried against WRDS's default host and does
    not ask for credentials on stdin (a sync must not hang on a prompt), and libpq gives up
    after `CONNECT_TIMEOUT_S` seconds unless ``wrds_connect_args`` sets ``connect_timeout``.

    `WrdsSource` does not need this (it logs in with psycopg2 alone, without importing ``wrds``,
    SQLAlchemy or pandas); it is for code that wants the client's ``raw_sql``/``get_table``.
    Each connection the returned object's engine opens is one such login.

    Args:
        load_libraries: also load the list of libraries (``db.list_libraries()``), quietly.
        **kwargs: the ``wrds_*`` arguments above.

    Returns:
        A connected ``wrds.Connection`` (``raw_sql``, ``get_table`` ... work on it).

    Raises:
        SourceError: login refused (``retryable=False``; check ``~/.pgpass`` and Duo) or WRDS
            unreachable (``retryable=True``). The message never contains the password.
    """
    params = LoginParams.resolve(kwargs)
    import sqlalchemy as sa
    import wrds

    db = wrds.Connection(autoconnect=False, **kwargs)
    # The engine wrds.Connection builds (AUTOCOMMIT), each of its connections one `login`;
    # a refused login raises our SourceError through SQLAlchemy unchanged.
    engine = sa.create_engine(
        display_url(params), isolation_level="AUTOCOMMIT", creator=lambda: login(params)
    )
    try:
        connection = engine.connect()
    except BaseException:
        engine.dispose()
        raise
    db.engine, db.connection = engine, connection
    if load_libraries:
        with contextlib.redirect_stdout(io.StringIO()):  # it prints "Loading library list..."
            db.load_library_list()
    return db


def _shared_wrds_connection(source: WrdsSource, params: LoginParams) -> wrds.Connection:
    """A ``wrds.Connection`` over the source's own psycopg2 connection: no second login.

    Its engine holds exactly one connection (a ``StaticPool``), the one `WrdsSource._raw`
    returns; SQLAlchemy asks again (and so gets the source's new connection) after either side
    found it broken. Closing it closes the source's connection, which then logs in again.
    """
    import sqlalchemy as sa
    import wrds

    db = wrds.Connection(autoconnect=False, **source._connect_kwargs)
    engine = sa.create_engine(
        display_url(params),
        isolation_level="AUTOCOMMIT",
        poolclass=sa.pool.StaticPool,
        creator=lambda: source._raw(),
    )
    db.engine, db.connection = engine, engine.connect()
    return db


# --------------------------------------------------------------------------------------------
# Errors while querying
# --------------------------------------------------------------------------------------------


class _ConnectionLostError(Exception):
    """Internal: the connection broke during a statement; a reconnect may help."""


def _driver_error(exc: BaseException) -> BaseException:
    """The psycopg2 error behind ``exc`` (psycopg2 can wrap one in a SystemError during COPY)."""
    import psycopg2

    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, psycopg2.Error):
            return seen
        seen = seen.__cause__ or seen.__context__
    return exc


def _is_lost(exc: BaseException, raw: Any) -> bool:
    """Whether the connection broke (a reconnect and a retry may help)."""
    import psycopg2

    if raw is not None and raw.closed:
        return True
    exc = _driver_error(exc)
    state = getattr(exc, "pgcode", None) or ""
    if state.startswith("08") or state in _RETRYABLE_STATES:
        return True
    return isinstance(exc, psycopg2.OperationalError) and raw is None


def _query_error(exc: BaseException, spec: DatasetSpec, doing: str) -> Exception:
    import psycopg2.errors

    exc = _driver_error(exc)
    text = _first_line(exc)
    if isinstance(exc, psycopg2.errors.InsufficientPrivilege):
        return SourceError(
            source=_NAME,
            reason=f"{spec.name}: not subscribed ({text}). Your WRDS account has no access to "
            f"this table; check the name, or ask your institution's WRDS representative",
        )
    if isinstance(exc, psycopg2.errors.UndefinedTable):
        return UnknownDatasetError(
            dataset=spec.name, known=[], hint=f"WRDS reports: {text} (while {doing})"
        )
    if isinstance(exc, psycopg2.errors.QueryCanceled):
        return SourceUnavailableError(
            source=_NAME,
            reason=f"{spec.name}: WRDS cancelled the query while {doing} ({text}); run the "
            "sync again, or sync fewer years at a time",
        )
    return SourceError(source=_NAME, reason=f"{spec.name}: {doing} failed: {text}")


# --------------------------------------------------------------------------------------------
# COPY -> pipe -> pyarrow
# --------------------------------------------------------------------------------------------


_END: Final = object()


class _CopyStream:
    """``COPY ... TO STDOUT`` -> OS pipe -> ``pyarrow.csv`` parser -> bounded queue of batches.

    Two threads: one runs the COPY on the psycopg2 connection and writes its bytes into a pipe;
    the other parses the pipe in blocks, converts each to the table's schema and queues it. The
    queue holds at most `_QUEUE_BLOCKS` blocks, so the server, the parser and the vault's
    Parquet writer (the consumer) all run at once while memory stays bounded: a full queue
    stops the parser, a full pipe the COPY, a full socket the server.

    The parser hands a block on only once the next block (or a clean end of the COPY) has
    arrived: the last block of a broken stream may end in a cut row.

    With ``by_year``, the COPY sends several years in year order, each row's year as its last
    column: the queue then holds ``(year, batch)`` pairs, a block cut where the year changes,
    and the rows and hash sums are counted per year (`year_rows`, `year_sums`).
    """

    def __init__(
        self,
        raw: Any,
        setup: str,
        copy_sql: str,
        table: _Table,
        *,
        hashed: bool = False,
        by_year: bool = False,
    ) -> None:
        self.raw = raw
        #: The COPY sends one more column, each row's ``hash_record_extended``: summed here
        #: (`row_hash_sum`, exact) and dropped from the batches.
        self.hashed = hashed
        self.row_hash_sum = 0
        self.rows = 0
        self.by_year = by_year
        self.year_rows: dict[int, int] = {}
        self.year_sums: dict[int, int] = {}
        self._last_year = 0
        self._setup = setup
        self._copy_sql = copy_sql
        self._table = table
        self._read_fd, write_fd = os.pipe()
        self._sink = os.fdopen(write_fd, "wb", buffering=_PIPE_BUFFER_BYTES)
        # What os.fdopen(fd, "rb", buffering=...) builds, spelled out so its type has peek().
        self._source = io.BufferedReader(io.FileIO(self._read_fd, "rb"), _PIPE_BUFFER_BYTES)
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=_QUEUE_BLOCKS)
        self._stopping = threading.Event()
        self._copy_ended = threading.Event()  # set before the pipe closes
        self.copy_error: BaseException | None = None
        self.parse_error: BaseException | None = None
        self.cancelled = False
        self._copier = threading.Thread(target=self._copy, name="wrdsvault-copy", daemon=True)
        self._parser = threading.Thread(target=self._parse, name="wrdsvault-parse", daemon=True)

    def batches(self) -> Generator[Any, None, None]:
        """Yield the converted blocks (``(year, block)`` pairs with ``by_year``); afterwards
        see `copy_error`/`parse_error`."""
        self._copier.start()
        self._parser.start()
        try:
            while (item := self._queue.get()) is not _END:
                yield item
        finally:
            self._stop()

    # -- the COPY thread ---------------------------------------------------------------------

    def _copy(self) -> None:
        try:
            with self.raw.cursor() as cur:
                cur.execute(self._setup)
                try:
                    cur.copy_expert(self._copy_sql, self._sink)
                    cur.execute("COMMIT")
                except BaseException:
                    if not self.raw.closed:
                        with contextlib.suppress(Exception):
                            cur.execute("ROLLBACK")
                    raise
        except BaseException as exc:  # reported through copy_error
            self.copy_error = exc
        finally:
            self._copy_ended.set()
            with contextlib.suppress(OSError, ValueError):
                self._sink.close()  # EOF for the parser

    def _cancel_copy(self) -> None:
        # A COPY that ended by itself (a parser that sees a cut stream always finds it ended)
        # keeps its own error; only a running one is cancelled.
        if not self._copy_ended.is_set():
            self.cancelled = True
            with contextlib.suppress(Exception):
                self.raw.cancel()  # the server ends the COPY; the connection stays usable

    # -- the parser thread -------------------------------------------------------------------

    def _parse(self) -> None:
        import pyarrow as pa
        import pyarrow.csv as pacsv

        table = self._table
        try:
            if not self._source.peek(1):  # no rows at all (pyarrow refuses an empty file)
                self._copier.join()
                return
            extra = [_HASH_COLUMN] if self.hashed else []
            if self.by_year:
                extra.append(_YEAR_COLUMN)
            reader = pacsv.open_csv(
                self._source,
                read_options=pacsv.ReadOptions(
                    column_names=[c.name for c in table.columns] + extra,
                    block_size=_CSV_BLOCK_BYTES,
                ),
                # PostgreSQL's CSV: NULL is an unquoted empty field, '' is quoted, quotes are
                # doubled, and text may hold newlines.
                parse_options=pacsv.ParseOptions(newlines_in_values=True),
                convert_options=pacsv.ConvertOptions(
                    column_types={c.name: c.parse for c in table.columns}
                    | {name: pa.int32() if name == _YEAR_COLUMN else pa.int64() for name in extra},
                    null_values=[""],
                    strings_can_be_null=True,
                    quoted_strings_can_be_null=False,
                    true_values=["t"],
                    false_values=["f"],
                ),
                memory_pool=stream_pool(),
            )
            pending: list[Any] = []
            width = len(table.columns)
            try:
                for block in reader:
                    if self._stopping.is_set():
                        return
                    items = self._split(block, width) if self.by_year else None
                    if self.hashed and items is None:
                        self.row_hash_sum += _exact_sum(block.column(width))
                    self.rows += block.num_rows
                    batch = _conform(
                        pa.RecordBatch.from_arrays(
                            block.columns[:width], names=block.schema.names[:width]
                        ),
                        table,
                    )
                    for item in pending:
                        self._put(item)
                    if items is None:
                        pending = [batch]
                    else:
                        pending = [(y, batch.slice(start, n)) for y, start, n in items]
            finally:
                reader.close()
            self._copier.join()  # EOF: the COPY has ended
            if self.copy_error is None:
                for item in pending:
                    self._put(item)
        except BaseException as exc:  # reported through parse_error
            self.parse_error = exc
            self._cancel_copy()
        finally:
            self._drain()
            self._put(_END, force=True)

    def _split(self, block: pa.RecordBatch, width: int) -> list[tuple[int, int, int]]:
        """``(year, first row, rows)`` of each run of one year in ``block``; counts and sums
        each year's rows and hashes. Raises if the years are not in order."""
        import numpy as np

        from wrdsvault._arrays import values as _values

        column = block.column(block.num_columns - 1)
        if column.null_count:
            msg = "a row's year is NULL"
            raise ValueError(msg)
        years = _values(column, "<i4")
        if len(years) == 0:
            return []
        if int(years[0]) < self._last_year or bool(np.any(years[1:] < years[:-1])):
            msg = "the rows did not come in year order"
            raise ValueError(msg)
        self._last_year = int(years[-1])
        cuts = [0, *(np.flatnonzero(years[1:] != years[:-1]) + 1).tolist(), len(years)]
        runs = []
        for start, end in itertools.pairwise(cuts):
            year = int(years[start])
            self.year_rows[year] = self.year_rows.get(year, 0) + end - start
            if self.hashed:
                total = _exact_sum(block.column(width).slice(start, end - start))
                self.year_sums[year] = self.year_sums.get(year, 0) + total
            runs.append((year, start, end - start))
        return runs

    def _put(self, item: Any, *, force: bool = False) -> None:
        while force or not self._stopping.is_set():
            try:
                self._queue.put(item, timeout=0.05)
            except queue.Full:
                if force and self._stopping.is_set():
                    return  # the consumer is gone and drains nothing more
                continue
            return

    def _drain(self) -> None:
        """Read the pipe to its end so the COPY thread never blocks on a write; then close."""
        with contextlib.suppress(OSError):
            while os.read(self._read_fd, 1 << 16):
                pass
        self._copier.join()
        self._source.close()

    # -- stopping ----------------------------------------------------------------------------

    def _stop(self) -> None:
        """Stop both threads (the consumer is done or gave up) and wait for them."""
        self._stopping.set()
        if self._parser.is_alive():
            self._cancel_copy()
        while self._parser.is_alive():
            with contextlib.suppress(queue.Empty):
                while True:
                    self._queue.get_nowait()  # unblock a parser waiting to queue a block
            self._parser.join(0.05)
        self._copier.join()


def _exact_sum(hashes: Any) -> int:
    """The exact sum of an int64 column (PostgreSQL sums bigints as numeric: no overflow)."""
    import numpy as np
    import pyarrow as pa

    from wrdsvault._arrays import values as _values

    if isinstance(hashes, pa.ChunkedArray):
        return sum(_exact_sum(chunk) for chunk in hashes.chunks)
    if hashes.null_count:  # hash_record_extended never returns NULL; a NULL would be a bug
        msg = "a row hash is NULL"
        raise ValueError(msg)
    # Arrow's own buffer: ``to_numpy`` would import pandas (wrdsvault._arrays).
    values = _values(hashes.cast(pa.int64()), "<i8")
    # Split each value into a signed high and an unsigned low 32-bit half: a block of fewer
    # than 2**31 rows cannot overflow either int64 sum.
    high = int((values >> 32).sum(dtype=np.int64))
    low = int((values & 0xFFFFFFFF).sum(dtype=np.int64))
    return (high << 32) + low


def _conform(block: pa.RecordBatch, table: _Table) -> pa.RecordBatch:
    """Give a parsed block the exact described schema (types and field metadata)."""
    import pyarrow as pa

    arrays = []
    for column, array in zip(table.columns, block.columns, strict=True):
        if array.type != column.arrow:
            # naive UTC timestamps -> timestamp[us, UTC]
            array = array.cast(column.arrow, memory_pool=stream_pool())
        arrays.append(array)
    return pa.RecordBatch.from_arrays(arrays, schema=table.schema)


def _stream_dbapi(connection: Any) -> Any:
    """The psycopg2 connection of a stream: itself, or the one inside a SQLAlchemy connection
    (``db=``; None if it was invalidated)."""
    if not hasattr(connection, "invalidate"):  # a psycopg2 connection (`WrdsSource._login`)
        return connection
    try:
        return connection.connection.dbapi_connection
    except Exception:
        return None


def _discard(connection: Any) -> None:
    """Close a stream connection that may be dead (a dead one cannot be rolled back)."""
    if not hasattr(connection, "invalidate"):  # a psycopg2 connection
        with contextlib.suppress(Exception):
            connection.close()
        return
    with contextlib.suppress(Exception):
        connection.invalidate()
    with contextlib.suppress(Exception):
        connection.close()


def _row() -> Any:
    """The alias of the table's row in our queries (unlikely to be a column's name)."""
    from psycopg2 import sql

    return sql.Identifier(_ROW_ALIAS)


def _utc(column: _Column) -> Any:
    """The SQL for a column as read: timestamptz in UTC (naive), anything else as is."""
    import pyarrow as pa
    from psycopg2 import sql

    ident = sql.SQL("{}.{}").format(_row(), sql.Identifier(column.name))
    if pa.types.is_timestamp(column.arrow) and column.arrow.tz is not None:
        return sql.SQL("({} AT TIME ZONE 'UTC')").format(ident)
    return ident


def _slices(batch: pa.RecordBatch, rows: int) -> Iterator[pa.RecordBatch]:
    for start in range(0, batch.num_rows, rows):
        yield batch.slice(start, rows)


# --------------------------------------------------------------------------------------------
# The source
# --------------------------------------------------------------------------------------------


def _year_range(date: Any, first: int, last: int) -> Any:
    """``date`` within the calendar years ``first..last`` (a range the planner can index)."""
    from psycopg2 import sql

    cond = sql.SQL("{} >= {}").format(date, sql.Literal(dt.date(first, 1, 1)))
    if last < 9999:
        cond = sql.SQL("{} AND {} < {}").format(cond, date, sql.Literal(dt.date(last + 1, 1, 1)))
    return cond


def _years_filter(date: Any, years: Collection[int]) -> Any:
    """`` WHERE`` clause keeping the rows of ``years``: one date range per run of years."""
    from psycopg2 import sql

    runs: list[list[int]] = []
    for y in sorted({int(y) for y in years if 1 <= int(y) <= 9999}):
        if runs and y == runs[-1][1] + 1:
            runs[-1][1] = y
        else:
            runs.append([y, y])
    if not runs:
        return sql.SQL(" WHERE false")
    ranges = [sql.SQL("({})").format(_year_range(date, a, b)) for a, b in runs]
    return sql.SQL(" WHERE {}").format(sql.SQL(" OR ").join(ranges))


#: `WrdsSource._lookup`'s one statement; ``{columns}`` is `_COLUMNS_SQL` or ``NULL``.
_LOOKUP_SQL: Final = """
    SELECT n.oid IS NOT NULL,
           n.oid IS NOT NULL AND has_schema_privilege(n.oid, 'USAGE'),
           c.oid,
           obj_description(c.oid, 'pg_class'),
           c.oid IS NOT NULL AND has_table_privilege(c.oid, 'SELECT'),
           {columns}
    FROM (SELECT %s::name AS nspname, %s::name AS relname) AS s
    LEFT JOIN pg_namespace AS n ON n.nspname = s.nspname
    LEFT JOIN pg_class AS c ON c.relnamespace = n.oid AND c.relname = s.relname
         AND c.relkind IN ('r', 'v', 'm', 'f', 'p')
    """
_COLUMNS_SQL: Final = """(SELECT json_agg(json_build_array(
                       i.column_name,
                       format_type(a.atttypid, a.atttypmod),
                       CASE WHEN t.typtype = 'd'
                            THEN format_type(t.typbasetype, t.typtypmod) END,
                       col_description(a.attrelid, a.attnum))
                   ORDER BY i.ordinal_position)
            FROM information_schema.columns AS i
            JOIN pg_attribute AS a ON a.attrelid = c.oid AND a.attname = i.column_name
            JOIN pg_type AS t ON t.oid = a.atttypid
            WHERE i.table_schema = s.nspname AND i.table_name = s.relname)"""


class WrdsSource:
    """Rows, schemas and change markers from WRDS's PostgreSQL server.

    Logs in on first use with the ``wrds`` client's conventions (``~/.pgpass``, ``PGUSER``,
    ``PGHOST``) through psycopg2 alone, or reuses a ``wrds.Connection`` you opened (WRDS asks
    for a Duo approval per login, so one login per sync is the rule).

    Args:
        db: an open ``wrds.Connection`` to use; `close` leaves it open.
        wrds_username, wrds_password, wrds_hostname, wrds_port, wrds_dbname, wrds_connect_args:
            how to log in on first use (not with ``db``), with the ``wrds`` client's defaults
            and conventions (docs/wrds.md#connecting) but psycopg2 alone: a sync imports
            neither ``wrds``, SQLAlchemy nor pandas.
        retries: attempts per statement when the connection drops (>= 1).
        retry_backoff_s: the first wait between attempts; doubles each time.
        year_markers: compute per-year content markers on the server (``False``: always
            ``None``, so changed tables are re-read and compared).
        streams: how many years a sync may read at once, each on its own connection (one
            login each; docs/wrds.md#parallel-streams). Default `DEFAULT_STREAMS`, one below
            WRDS's per-user connection limit; ``1`` reads one year at a time on the source's
            single connection.

    Example:
        >>> from wrdsvault import Warehouse
        >>> wh = Warehouse("vault", source=WrdsSource(wrds_username="jdoe"))  # doctest: +SKIP
        >>> wh.sync(["crsp.msf", "comp.funda"]).summary()  # doctest: +SKIP
    """

    def __init__(
        self,
        *,
        db: wrds.Connection | None = None,
        retries: int = 3,
        retry_backoff_s: float = 1.0,
        year_markers: bool = True,
        streams: int = DEFAULT_STREAMS,
        **connect_kwargs: Any,
    ) -> None:
        _check_connect_kwargs(connect_kwargs)
        if isinstance(streams, bool) or not isinstance(streams, int):
            msg = f"streams must be an int, not {type(streams).__name__}"
            raise TypeError(msg)
        if not 1 <= streams <= WRDS_CONNECTION_LIMIT:
            raise InvalidValueError(
                name="streams",
                value=streams,
                rule=f"an int from 1 to {WRDS_CONNECTION_LIMIT} (WRDS accepts at most "
                f"{WRDS_CONNECTION_LIMIT} connections per user at once)",
            )
        if db is not None and connect_kwargs:
            msg = f"pass either db= or connection arguments, not both ({sorted(connect_kwargs)})"
            raise TypeError(msg)
        if isinstance(retries, bool) or not isinstance(retries, int):
            msg = f"retries must be an int, not {type(retries).__name__}"
            raise TypeError(msg)
        if retries < 1:
            raise InvalidValueError(name="retries", value=retries, rule="an int >= 1")
        if not retry_backoff_s >= 0:  # NaN too
            raise InvalidValueError(
                name="retry_backoff_s", value=retry_backoff_s, rule="a number of seconds >= 0"
            )
        #: The user's ``wrds.Connection`` (``db=``): its connection and engine serve the sync.
        self._db = db
        self._owns_db = db is None
        self._connect_kwargs = dict(connect_kwargs)
        #: Without ``db=``: the login (resolved on first use), the source's own psycopg2
        #: connection, and the ``wrds.Connection`` over it that `db` builds when asked.
        self._params: LoginParams | None = None
        self._conn: psycopg2.extensions.connection | None = None
        self._wrds: wrds.Connection | None = None
        #: Held while logging in, so that threads finding the connection gone log in once.
        #: Re-entrant: re-pointing `db` asks `_raw` for the new connection.
        self._login_lock = threading.RLock()
        self.retries = retries
        self.retry_backoff_s = float(retry_backoff_s)
        self.year_markers = bool(year_markers)
        self._row_hash: bool | None = None  # None: not tried yet on this server
        self._unhashed: set[str] = set()  # tables whose rows the server cannot hash
        self._marked: dict[str, set[int | None]] = {}  # years partitions() gave a marker
        self._tables: dict[str, _Table] = {}
        self.streams = streams
        self._pool_lock = threading.Lock()
        self._main_busy = False  # a COPY runs on the source's own connection
        self._idle: list[Any] = []  # stream connections between two COPYs
        self._streamed: dict[tuple[str, int | None], str] = {}

    def __repr__(self) -> str:
        if not self._owns_db:
            return "WrdsSource(db=<wrds.Connection>)"
        shown = {k: v for k, v in self._connect_kwargs.items() if k != "wrds_password"}
        text = ", ".join(f"{k}={v!r}" for k, v in sorted(shown.items()))
        return f"WrdsSource({_scrub(text, _secrets(self._connect_kwargs))})"

    @property
    def name(self) -> str:
        """Return ``"wrds"``, the name recorded in manifests."""
        return _NAME

    @property
    def db(self) -> wrds.Connection:
        """A ``wrds.Connection`` on the source's connection (logs in on first access).

        The one passed as ``db=``, or else one built on first access around the source's own
        psycopg2 connection: no second login (no second Duo push, no extra connection against
        WRDS's per-user limit), ``raw_sql``/``get_table`` run on the connection the sync uses.
        Building it imports ``wrds``, SQLAlchemy and pandas, which a sync never needs. Closing
        it (``db.close()``) closes the source's connection too; the source logs in again when
        next used, and `close` closes it.

        Raises:
            SourceError: the login failed or WRDS is unreachable.
        """
        if self._db is not None:
            return self._db
        if self._wrds is None or getattr(self._wrds, "engine", None) is None:
            self._raw()  # log in first: a refused login is our SourceError, unwrapped
            self._wrds = _shared_wrds_connection(self, self._login_params())
        return self._wrds

    def login(self) -> None:
        """Log in now, if not yet (the source otherwise logs in on first use).

        For a script that wants the Duo approval (or a refused login) before other work. Imports
        neither ``wrds``, SQLAlchemy nor pandas.

        Raises:
            SourceError: the login failed or WRDS is unreachable.
        """
        self._raw()

    # -- connection plumbing ---------------------------------------------------------------

    def _login_params(self) -> LoginParams:
        if self._params is None:
            self._params = LoginParams.resolve(self._connect_kwargs)
        return self._params

    def _login(self) -> Any:
        """Log in once more, for a stream: a psycopg2 connection of its own (with ``db=``, a
        SQLAlchemy connection from that ``wrds.Connection``'s engine). See `_stream_dbapi`."""
        if self._db is None:
            return login(self._login_params())
        import sqlalchemy as sa

        engine = self._db.engine
        try:
            return engine.connect()
        except sa.exc.DBAPIError as exc:
            where = str(engine.url.render_as_string(hide_password=True))
            raise _login_error(exc, where, _secrets(self._connect_kwargs)) from exc

    def _raw(self) -> psycopg2.extensions.connection:
        """The source's psycopg2 connection; logs in on first use and again if it broke."""
        if self._db is None:
            with self._login_lock:
                conn = self._conn
                if conn is None or conn.closed:
                    if conn is not None:
                        log.warning("the connection to WRDS was lost; reconnecting")
                    self._conn = conn = login(self._login_params())
                    self._rebind_wrds()
                return conn
        db = self._db
        if getattr(db, "engine", None) is None or getattr(db, "connection", None) is None:
            raise SourceError(
                source=_NAME,
                reason="the wrds.Connection passed as db= is closed; open a new one "
                "(wrds.Connection()) or let WrdsSource connect",
            )
        raw: psycopg2.extensions.connection | None = self._dbapi(db)
        if raw is None or raw.closed:
            self._reconnect(db)
            raw = self._dbapi(db)
            assert raw is not None
        return raw

    def _rebind_wrds(self) -> None:
        """Point the ``wrds.Connection`` `db` built at the source's new connection."""
        shared = self._wrds
        if shared is None:
            return
        if getattr(shared, "engine", None) is None:  # the user closed it: build anew if asked
            self._wrds = None
            return
        with contextlib.suppress(Exception):
            shared.connection.invalidate()  # the pool asks `_raw` again: the new connection
        with contextlib.suppress(Exception):
            shared.connection = shared.engine.connect()

    @staticmethod
    def _dbapi(db: Any) -> Any:
        try:
            return db.connection.connection.dbapi_connection
        except Exception:  # an invalidated SQLAlchemy connection
            return None

    def _reconnect(self, db: Any) -> None:
        import sqlalchemy as sa

        log.warning("the connection to WRDS was lost; reconnecting")
        old = db.connection
        with contextlib.suppress(Exception):
            old.invalidate()
        with contextlib.suppress(Exception):
            old.close()
        try:
            db.connection = db.engine.connect()
        except sa.exc.DBAPIError as exc:
            where = str(db.engine.url.render_as_string(hide_password=True))
            raise _login_error(exc, where, _secrets(self._connect_kwargs)) from exc

    def _backoff(self, attempt: int) -> None:
        time.sleep(self.retry_backoff_s * 2 ** (attempt - 1))

    def _fetch(
        self, spec: DatasetSpec, doing: str, query: Any, params: Sequence[Any] = ()
    ) -> list[tuple[Any, ...]]:
        """Run one read-only query with reconnect-and-retry on a dropped connection."""
        import psycopg2

        for attempt in range(1, self.retries + 1):
            raw = self._raw()
            try:
                with raw.cursor() as cur:
                    cur.execute(query, params)
                    return list(cur.fetchall())
            except psycopg2.Error as exc:
                if _is_lost(exc, raw) and attempt < self.retries:
                    log.warning("%s: %s: %s; retrying", spec.name, doing, _first_line(exc))
                    self._backoff(attempt)
                    continue
                if _is_lost(exc, raw):
                    raise SourceUnavailableError(
                        source=_NAME,
                        reason=f"{spec.name}: the connection to WRDS broke while {doing}, "
                        f"{self.retries} times ({_first_line(exc)}); run the sync again later",
                    ) from exc
                raise _query_error(exc, spec, doing) from exc
        raise AssertionError("unreachable")  # pragma: no cover

    # -- describe --------------------------------------------------------------------------

    def describe(self, spec: DatasetSpec) -> TableInfo:
        """Return the table's schema, comment-based change marker and planner row estimate.

        Raises:
            UnknownDatasetError: no such library or table (the message suggests close names).
            SourceError: not subscribed, login failed, or WRDS unreachable.
        """
        table = self._load_table(spec)
        estimate = self._estimate(spec, table)
        marker = table.comment if parse_comment(table.comment) else None
        return TableInfo(
            schema=table.schema, change_marker=marker, row_estimate=estimate, comment=table.comment
        )

    def change_marker(self, spec: DatasetSpec) -> str | None:
        """The table's change marker alone: `describe`'s ``change_marker``, in one round trip.

        The same lookup and the same errors as `describe`, without the columns, their Arrow
        types or the row estimate: a sync whose recorded marker still holds stops here (it then
        loads neither pyarrow nor anything that writes).

        Raises:
            UnknownDatasetError: no such library or table.
            SourceError: not subscribed, login failed, or WRDS unreachable.
        """
        _, comment, _ = self._lookup(spec, columns=False)
        return comment if parse_comment(comment) else None

    def _lookup(self, spec: DatasetSpec, *, columns: bool) -> tuple[int, str | None, Any]:
        """(oid, comment, the columns' JSON or None) of ``spec``'s table; raises as `describe`."""
        given: object = spec  # untyped callers can pass anything; mypy cannot see that
        if not isinstance(given, DatasetSpec):
            msg = f"spec must be a DatasetSpec, not {type(given).__name__}"
            raise TypeError(msg)
        # One round trip (on a remote server each costs a full network round trip, and a sync
        # describes a table three times): the table's existence and privileges, its comment
        # and, in the same statement, its columns (NULL when there is no such table).
        rows = self._fetch(
            spec,
            "looking up the table",
            _LOOKUP_SQL.format(columns=_COLUMNS_SQL if columns else "NULL"),
            (spec.library, spec.table),
        )
        has_schema, usage, oid, comment, can_select, found = rows[0]
        if not has_schema and spec.library in SAS_ONLY_LIBRARIES:
            raise SourceError(
                source=_NAME,
                reason=f"{spec.name}: WRDS serves {SAS_ONLY_LIBRARIES[spec.library]} (library "
                f"{spec.library!r}) only as SAS data sets on the WRDS Cloud, not through its "
                "PostgreSQL server, which is what wrdsvault (and the wrds package) reads. Work "
                "with it on the WRDS Cloud (SAS, or Python there), or export the slice you need "
                "to Parquet there",
            )
        if not has_schema:
            libraries = [
                r[0]
                for r in self._fetch(spec, "listing libraries", "SELECT nspname FROM pg_namespace")
            ]
            raise UnknownDatasetError(
                dataset=spec.name,
                known=difflib.get_close_matches(spec.library, libraries, n=5),
                hint=f"WRDS has no library {spec.library!r} (the list shows close names)",
            )
        if not usage or (oid is not None and not can_select):
            what = f"library {spec.library!r}" if not usage else f"table {spec.name!r}"
            raise SourceError(
                source=_NAME,
                reason=f"{spec.name}: not subscribed: your WRDS account has no access to {what}. "
                "Check the name, or ask your institution's WRDS representative for access",
            )
        if oid is None:
            tables = [
                r[0]
                for r in self._fetch(
                    spec,
                    "listing tables",
                    "SELECT c.relname FROM pg_class AS c JOIN pg_namespace AS n "
                    "ON n.oid = c.relnamespace "
                    "WHERE n.nspname = %s AND c.relkind IN ('r', 'v', 'm', 'f', 'p')",
                    (spec.library,),
                )
            ]
            close = difflib.get_close_matches(spec.table, tables, n=5)
            raise UnknownDatasetError(
                dataset=spec.name,
                known=[f"{spec.library}.{t}" for t in close],
                hint=f"library {spec.library!r} has {len(tables)} tables but not {spec.table!r} "
                "(the list shows close names)",
            )
        return int(oid), comment, found

    def _load_table(self, spec: DatasetSpec) -> _Table:
        import pyarrow as pa

        oid, comment, found = self._lookup(spec, columns=True)
        if isinstance(found, str):  # a driver that does not decode json
            import json

            found = json.loads(found)
        columns = [tuple(column) for column in found or ()]
        if not columns:
            raise SourceError(
                source=_NAME, reason=f"{spec.name}: the table shows no columns you can read"
            )
        cols = tuple(_column(name, formatted, base) for name, formatted, base, _ in columns)
        # The column comment is WRDS's label ("Assets - Total"); the manifest keeps it for
        # wrdsvault.Connection.describe_table. It is not part of the column's identity.
        labels = {name: label for name, _, _, label in columns if label}
        schema = pa.schema(
            [
                pa.field(
                    c.name,
                    c.arrow,
                    metadata={
                        SOURCE_TYPE_KEY: c.declared.encode(),
                        **({COMMENT_KEY: labels[c.name].encode()} if c.name in labels else {}),
                    },
                )
                for c in cols
            ]
        )
        table = _Table(spec.library, spec.table, oid, comment, cols, schema)
        self._tables[spec.name] = table
        return table

    def _estimate(self, spec: DatasetSpec, table: _Table) -> int | None:
        from psycopg2 import sql

        # What wrds.Connection.get_row_count does: the planner's estimate, instant on views.
        query = sql.SQL("EXPLAIN (FORMAT json) SELECT 1 FROM {}.{}").format(
            sql.Identifier(table.library), sql.Identifier(table.table)
        )
        rows = self._fetch(spec, "estimating the row count", query)
        try:
            plan = rows[0][0]
            if isinstance(plan, str):
                import json

                plan = json.loads(plan)
            return int(plan[0]["Plan"]["Plan Rows"])
        except (LookupError, TypeError, ValueError):
            return None

    def _table(self, spec: DatasetSpec) -> _Table:
        cached = self._tables.get(spec.name)
        return cached if cached is not None else self._load_table(spec)

    # -- partitions ------------------------------------------------------------------------

    def partitions(
        self,
        spec: DatasetSpec,
        *,
        years: Collection[int] | None = None,
        markers: Collection[int | None] | None = None,
    ) -> Sequence[PartitionInfo]:
        """Return each year's exact row count and content marker, oldest first.

        One query over the table: ``count(*)`` and, on PostgreSQL >= 14, the sum of
        ``hash_record_extended(row, 0)`` per year, computed on the server. With ``years``, only
        rows of those years are counted and hashed (a date-range filter per run of consecutive
        years): syncing one year of ``crsp.dsf`` does not hash the other ninety-nine.

        ``markers`` names the years whose marker the caller will compare with one it holds
        (``None``: every year). When it names none (a first sync), the query only counts, and
        each year's marker comes with its rows instead (`streamed_marker`): the COPY adds the
        row hash as a last column and the reader sums it, so the marker costs no extra scan.

        Raises:
            SourceError: rows have a NULL date (they cannot be placed in a year), the date
                column is missing or not a date, or WRDS failed.
        """
        from psycopg2 import sql

        table = self._table(spec)
        relation = sql.SQL("{}.{} AS {}").format(
            sql.Identifier(table.library), sql.Identifier(table.table), _row()
        )
        year: sql.Composable = sql.SQL("NULL::integer")
        tail: sql.Composable = sql.SQL("")
        if spec.partition_column is not None:
            column = self._partition_column(spec, table)
            year = sql.SQL("extract(year FROM {})::integer").format(_utc(column))
            tail = sql.SQL(" GROUP BY 1 ORDER BY 1 NULLS LAST")
            if years is not None:
                tail = sql.SQL("{}{}").format(_years_filter(_utc(column), years), tail)
        rows = None
        if markers is None:
            wanted = True
        elif years is None:
            wanted = bool(markers)
        else:
            wanted = any(y in markers for y in years)
        if self.year_markers and self._row_hash is not False and wanted:
            rows = self._try_row_hash(
                spec,
                sql.SQL("SELECT {}, count(*), sum(hash_record_extended({}.*, 0)) FROM {}{}").format(
                    year, _row(), relation, tail
                ),
            )
        hashed = rows is not None
        if rows is None:
            query = sql.SQL("SELECT {}, count(*), NULL FROM {}{}").format(year, relation, tail)
            rows = self._fetch(spec, "counting rows per year", query)
        out = []
        for y, count, digest in rows:
            if y is None and spec.partition_column is not None:
                raise SourceError(
                    source=_NAME,
                    reason=f"{spec.name}: {count} rows have a NULL {spec.partition_column}, so "
                    "they belong to no year; wrdsvault does not drop rows. Sync the table as "
                    "one partition (date_column=None) or choose another date_column",
                )
            marker = f"{_ROW_HASH_METHOD}:{count}:{digest or 0}" if hashed else None
            out.append(PartitionInfo(year=y, row_count=int(count), marker=marker))
        with self._pool_lock:  # a year marked here needs no hash column when it is read
            known = self._marked.setdefault(spec.name, set())
            for part in out:
                if part.marker is None:
                    known.discard(part.year)
                else:
                    known.add(part.year)
        return out

    @staticmethod
    def _partition_column(spec: DatasetSpec, table: _Table) -> _Column:
        import pyarrow as pa

        column = table.column(spec.partition_column or "")
        if column is None or not (
            pa.types.is_date(column.arrow) or pa.types.is_timestamp(column.arrow)
        ):
            found = "missing" if column is None else f"of type {column.declared}"
            raise SourceError(
                source=_NAME,
                reason=f"{spec.name}: the partition column {spec.partition_column!r} is {found}; "
                "pass a date or timestamp column as date_column=, or date_column=None for one "
                "partition",
            )
        return column

    def _try_row_hash(self, spec: DatasetSpec, query: Any) -> list[tuple[Any, ...]] | None:
        """Run the row-hash query; ``None`` if this server or table cannot hash rows."""
        import psycopg2.errors

        try:
            rows = self._fetch(spec, "hashing rows per year", query)
        except SourceError as exc:
            cause = exc.__cause__
            if not isinstance(cause, psycopg2.errors.UndefinedFunction):
                raise
            # PostgreSQL < 14 has no hash_record_extended (then never try again); a column
            # type without an extended hash (json, point) only rules out this table. Either
            # way the markers are None and the vault reads and compares content.
            log.info("%s: per-year markers off (%s)", spec.name, _first_line(cause))
            if "hash_record_extended" in str(cause):
                self._row_hash = False
            return None
        self._row_hash = True
        return rows

    # -- rows ------------------------------------------------------------------------------

    def read_partition(
        self, spec: DatasetSpec, year: int | None, *, batch_rows: int = 131_072
    ) -> Iterator[pa.RecordBatch]:
        """Stream one year (``year=None``: the whole unpartitioned table) in key order.

        Batches have exactly the `describe` schema and at most ``batch_rows`` rows. A dropped
        connection before the first batch is retried (reconnect, backoff); after it, the
        iterator raises ``SourceUnavailableError()`` so that nothing half-read is committed.

        Raises:
            ValueError: ``year`` does not fit the spec, or ``batch_rows < 1``.
            SourceError: WRDS failed, or a value could not be converted.
        """
        if isinstance(batch_rows, bool) or not isinstance(batch_rows, int) or batch_rows < 1:
            msg = f"batch_rows must be an int >= 1, got {batch_rows!r}"
            raise ValueError(msg)
        if spec.partitioned != (year is not None):
            msg = (
                f"{spec.name}: year must be None for an unpartitioned dataset and an int "
                f"otherwise, got {year!r}"
            )
            raise ValueError(msg)
        if year is not None and (
            isinstance(year, bool) or not isinstance(year, int) or not 1 <= year <= 9999
        ):
            msg = f"year must be an int from 1 to 9999, got {year!r}"
            raise ValueError(msg)
        table = self._table(spec)
        return self._read(spec, table, year, batch_rows)

    def _copy_sql(
        self,
        spec: DatasetSpec,
        table: _Table,
        year: int | None,
        raw: Any,
        *,
        hashed: bool = False,
        years: Sequence[int] | None = None,
    ) -> str:
        """The COPY of one year (``year``), of the whole table (``None``), or of several years
        in year order, each row's year sent as a last column (``years``)."""
        from psycopg2 import sql

        row = _row()
        # Key first, then every other orderable column: the order (and so the file's bytes)
        # is the same whenever the rows are, so an unchanged year hashes the same.
        keys = [k for k in spec.primary_key if (c := table.column(k)) is not None and c.known]
        keys += [c.name for c in table.columns if c.known and c.name not in keys]
        order = [sql.SQL("{}.{}").format(row, sql.Identifier(k)) for k in keys]
        where: sql.Composable = sql.SQL("")
        selected = [_utc(c) for c in table.columns]
        if hashed:
            # The same expression partitions() sums, over the same rows: the marker is theirs.
            selected.append(sql.SQL("hash_record_extended({}.*, 0)").format(row))
        if year is not None or years is not None:
            # Years as partitions() counts them (timestamptz: in UTC).
            date = _utc(self._partition_column(spec, table))
            if years is None:
                assert year is not None
                where = sql.SQL(" WHERE {}").format(_year_range(date, year, year))
            else:
                where = _years_filter(date, years)
                of_year = sql.SQL("extract(year FROM {})::integer").format(date)
                selected.append(of_year)
                order.insert(0, of_year)
        query = sql.SQL("COPY (SELECT {} FROM {}.{} AS {}{}{}) TO STDOUT WITH (FORMAT csv)").format(
            sql.SQL(", ").join(selected),
            sql.Identifier(table.library),
            sql.Identifier(table.table),
            row,
            where,
            sql.SQL(" ORDER BY {}").format(sql.SQL(", ").join(order)) if order else sql.SQL(""),
        )
        return query.as_string(raw)

    def read_partitions(
        self, spec: DatasetSpec, years: Sequence[int], *, batch_rows: int = 131_072
    ) -> Iterator[tuple[int, Iterator[pa.RecordBatch]]]:
        """Stream several years with one COPY: ``(year, batches)`` for each of ``years``.

        The pairs come in the order of ``years`` (strictly increasing), one per year, also for
        a year that has no rows (its batches are empty). Read each year's batches before asking
        for the next pair: the years share one COPY, ordered by year and then as
        `read_partition` orders one year, and a year's marker (`streamed_marker`) is known once
        its batches are done. One scan of the table for all of them, where one COPY per year
        scans a table without an index on its date once per year. A dropped connection before
        the first batch is retried (reconnect, backoff); after it the iterator raises
        ``SourceUnavailableError()``.

        Raises:
            ValueError: the dataset is not partitioned, ``years`` is empty or not strictly
                increasing years, or ``batch_rows < 1``.
            SourceError: WRDS failed, or a value could not be converted.
        """
        if isinstance(batch_rows, bool) or not isinstance(batch_rows, int) or batch_rows < 1:
            msg = f"batch_rows must be an int >= 1, got {batch_rows!r}"
            raise ValueError(msg)
        wanted = list(years)
        if not spec.partitioned:
            msg = f"{spec.name}: read_partitions() needs a partitioned dataset"
            raise ValueError(msg)
        if (
            not wanted
            or any(isinstance(y, bool) or not isinstance(y, int) for y in wanted)
            or wanted[0] < 1
            or wanted[-1] > 9999
            or any(a >= b for a, b in itertools.pairwise(wanted))
        ):
            msg = f"years must be strictly increasing ints from 1 to 9999, got {years!r}"
            raise ValueError(msg)
        table = self._table(spec)
        return self._split_years(spec, table, wanted, batch_rows)

    def _split_years(
        self, spec: DatasetSpec, table: _Table, years: list[int], batch_rows: int
    ) -> Generator[tuple[int, Iterator[pa.RecordBatch]], None, None]:
        flat = self._read(spec, table, None, batch_rows, years=years)
        complete: set[int] = set()

        def one(year: int) -> Generator[pa.RecordBatch, None, None]:
            for got, batch in flat:
                if got != year:  # pragma: no cover - _copy_years sends the years in order
                    msg = f"{spec.name}: expected rows of {year}, got {got}"
                    raise AssertionError(msg)
                if batch is None:  # every row of the year was sent
                    complete.add(year)
                    return
                yield batch

        try:
            for year in years:
                yield year, one(year)
                if year not in complete:  # the caller left the year before its end
                    for _, batch in flat:
                        if batch is None:
                            break
        finally:
            flat.close()

    def _read(
        self,
        spec: DatasetSpec,
        table: _Table,
        year: int | None,
        batch_rows: int,
        *,
        years: list[int] | None = None,
    ) -> Generator[Any, None, None]:
        """One year's (or the table's) batches; with ``years``, ``(year, batch)`` pairs and a
        ``(year, None)`` after each year's last batch."""
        attempt = 1
        while True:
            sent = 0
            handed_on = False  # a retry must not send a year's end twice
            try:
                with contextlib.closing(
                    self._stream(spec, table, year, batch_rows, years)
                ) as stream:
                    for item in stream:
                        batch = item if years is None else item[1]
                        sent += 0 if batch is None else batch.num_rows
                        handed_on = True
                        yield item
                return
            except _ConnectionLostError as lost:
                cause = lost.__cause__ or lost
                if years is not None:
                    where = f"{spec.name} {years[0]}-{years[-1]}"
                else:
                    where = f"{spec.name} {'all' if year is None else year}"
                if handed_on:
                    raise SourceUnavailableError(
                        source=_NAME,
                        reason=f"{where}: the connection to WRDS broke after {sent} rows were "
                        f"read ({_first_line(cause)}); a year is never resumed halfway, and a "
                        "failed sync commits nothing. Run the sync again",
                    ) from cause
                if attempt >= self.retries:
                    raise SourceUnavailableError(
                        source=_NAME,
                        reason=f"{where}: the connection to WRDS broke {attempt} times "
                        f"({_first_line(cause)}); a failed sync commits nothing. Run the sync "
                        "again later",
                    ) from cause
                log.warning(
                    "%s: connection lost (%s); retry %d of %d",
                    where,
                    _first_line(cause),
                    attempt,
                    self.retries - 1,
                )
                self._backoff(attempt)
                attempt += 1

    def _stream(
        self,
        spec: DatasetSpec,
        table: _Table,
        year: int | None,
        batch_rows: int,
        years: list[int] | None = None,
    ) -> Generator[Any, None, None]:
        with self._pool_lock:
            for each in [year] if years is None else years:
                self._streamed.pop((spec.name, each), None)
        raw, extra = self._acquire()
        try:
            if years is None:
                yield from self._copy(spec, table, year, batch_rows, raw)
            else:
                yield from self._copy_years(spec, table, years, batch_rows, raw)
        finally:
            self._release(extra)

    def _hashed(self, spec: DatasetSpec, years: Collection[int | None]) -> bool:
        """Whether a COPY of ``years`` sends the rows' hashes: unless this server or table
        cannot hash rows, or `partitions` marked every one of those years already."""
        with self._pool_lock:
            marked = self._marked.get(spec.name, set())
            all_marked = all(y in marked for y in years)
        return (
            self.year_markers
            and self._row_hash is not False
            and spec.name not in self._unhashed
            and not all_marked
        )

    def _unhashable(self, spec: DatasetSpec, stream: _CopyStream, hashed: bool) -> bool:
        """Whether ``stream`` failed only because the server could not hash the rows (then
        the caller reads again without the hashes; nothing was handed on)."""
        import psycopg2.errors

        error = stream.copy_error
        if error is None or stream.cancelled or not hashed:
            return False
        cause = _driver_error(error)
        if not isinstance(cause, psycopg2.errors.UndefinedFunction):
            return False
        # The parser holds a block back until the COPY ends cleanly, so nothing was handed on.
        log.info("%s: per-year markers off (%s)", spec.name, _first_line(cause))
        if "hash_record_extended" in str(cause):
            self._row_hash = False
        else:
            self._unhashed.add(spec.name)
        return True

    def _raise_failure(self, spec: DatasetSpec, stream: _CopyStream, raw: Any) -> None:
        """Raise what ended ``stream`` early, if anything did."""
        error = stream.copy_error
        if error is not None and not stream.cancelled:
            # The COPY broke first (a cut stream then also fails to parse): report the COPY.
            if _is_lost(error, raw):
                raise _ConnectionLostError from error
            raise _query_error(error, spec, "reading rows") from error
        if stream.parse_error is not None:
            exc = stream.parse_error
            raise SourceError(
                source=_NAME,
                reason=f"{spec.name}: could not convert WRDS's rows to the declared types "
                f"({type(exc).__name__}: {exc})",
            ) from exc

    def _copy_years(
        self, spec: DatasetSpec, table: _Table, years: list[int], batch_rows: int, raw: Any
    ) -> Generator[tuple[int, pa.RecordBatch | None], None, None]:
        hashed = self._hashed(spec, years)
        copy_sql = self._copy_sql(spec, table, None, raw, hashed=hashed, years=years)
        stream = _CopyStream(raw, _COPY_SETUP, copy_sql, table, hashed=hashed, by_year=True)
        todo = iter(years)
        current = next(todo)

        def done(year: int) -> None:
            if hashed:
                rows, total = stream.year_rows.get(year, 0), stream.year_sums.get(year, 0)
                with self._pool_lock:
                    self._streamed[(spec.name, year)] = f"{_ROW_HASH_METHOD}:{rows}:{total}"

        with contextlib.closing(stream.batches()) as items:  # closing stops both threads
            for year, batch in items:
                while year > current:  # every row of `current` came before this one
                    done(current)
                    yield current, None
                    current = next(todo, 10_000)
                if year != current:
                    raise SourceError(
                        source=_NAME,
                        reason=f"{spec.name}: the COPY of {years[0]}-{years[-1]} sent a row of "
                        f"{year} out of order; run the sync again",
                    )
                for piece in _slices(batch, batch_rows):
                    yield year, piece
        if self._unhashable(spec, stream, hashed):
            yield from self._copy_years(spec, table, years, batch_rows, raw)
            return
        self._raise_failure(spec, stream, raw)
        while current <= years[-1]:
            done(current)
            yield current, None
            current = next(todo, 10_000)

    def _copy(
        self, spec: DatasetSpec, table: _Table, year: int | None, batch_rows: int, raw: Any
    ) -> Generator[pa.RecordBatch, None, None]:
        # The rows' hashes come with the rows unless this server or table cannot hash them.
        hashed = self._hashed(spec, [year])
        copy_sql = self._copy_sql(spec, table, year, raw, hashed=hashed)
        stream = _CopyStream(raw, _COPY_SETUP, copy_sql, table, hashed=hashed)
        with contextlib.closing(stream.batches()) as batches:  # closing stops both threads
            for batch in batches:
                yield from _slices(batch, batch_rows)
        if self._unhashable(spec, stream, hashed):
            # Read again without the hash; the year's marker stays unknown.
            yield from self._copy(spec, table, year, batch_rows, raw)
            return
        self._raise_failure(spec, stream, raw)
        if hashed:
            marker = f"{_ROW_HASH_METHOD}:{stream.rows}:{stream.row_hash_sum}"
            with self._pool_lock:
                self._streamed[(spec.name, year)] = marker

    def streamed_marker(self, spec: DatasetSpec, year: int | None) -> str | None:
        """The marker of the rows of ``year`` the last complete `read_partition` sent.

        The same value `partitions` gives for those rows (row count and the sum of their
        ``hash_record_extended``), computed from the COPY itself; ``None`` if the last read of
        that year did not finish or could not hash (``year_markers=False``, an old server), or
        if `partitions` already gave that year a marker (then the COPY sends no hashes).
        """
        with self._pool_lock:
            return self._streamed.get((spec.name, year))

    # -- stream connections -----------------------------------------------------------------

    def _acquire(self) -> tuple[Any, Any]:
        """A psycopg2 connection for one COPY, and the stream connection it belongs to.

        The first stream uses the source's own connection (``None`` is returned as the
        second item); a stream running while another does gets a connection of its own
        (`_login`: one login each), kept for the next stream and closed by `close`.
        The sync runs at most `streams` of them at once.
        """
        with self._pool_lock:
            use_main = not self._main_busy
            self._main_busy = True
            extra = None if use_main or not self._idle else self._idle.pop()
        if use_main:
            try:
                return self._raw(), None
            except BaseException:
                self._release(None)
                raise
        if extra is not None:
            raw = _stream_dbapi(extra)
            if raw is not None and not raw.closed:
                return raw, extra
            _discard(extra)
        extra = self._login()
        return _stream_dbapi(extra), extra

    def _release(self, extra: Any) -> None:
        with self._pool_lock:
            if extra is None:
                self._main_busy = False
            else:
                self._idle.append(extra)

    # -- lifecycle -------------------------------------------------------------------------

    def close(self) -> None:
        """Close the connection if this source opened it (not one passed as ``db=``).

        Idempotent; the source reconnects if used again.
        """
        self._tables.clear()
        with self._pool_lock:
            idle, self._idle = self._idle, []
            self._streamed.clear()
            self._marked.clear()
        for extra in idle:
            _discard(extra)
        shared, self._wrds = self._wrds, None
        if shared is not None and getattr(shared, "engine", None) is not None:
            with contextlib.suppress(Exception):
                shared.connection.invalidate()  # no rollback: the connection is closed below
            with contextlib.suppress(Exception):
                shared.close()
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()
