"""`Connection`: the read methods of ``wrds.Connection``, answered from a pinned vault snapshot.

Code written for WRDS changes one line::

    db = wrds.Connection()                                      # before
    db = wrdsvault.Connection("data/wrds", snapshot="paper-v1")  # after (or $WRDSVAULT_VAULT)

and every read (``raw_sql``, ``get_table``, ``list_libraries``, ``list_tables``,
``describe_table``, ``get_row_count``) runs on one snapshot, offline, with the same SQL
(PostgreSQL, translated to DuckDB before the sandbox checks it) and the same pandas dtypes as
``wrds`` gives: the rows are handed to the very pandas routine ``pandas.read_sql_query`` uses,
as the same Python values psycopg2 would give. docs/wrds-compat.md lists where results must
differ and why.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from wrdsvault.datasets import validate_dataset
from wrdsvault.errors import InvalidValueError, UnknownDatasetError

if TYPE_CHECKING:
    import duckdb
    import pandas as pd

    from wrdsvault.manifest import ColumnSchema
    from wrdsvault.snapshot import Snapshot
    from wrdsvault.warehouse import Warehouse

__all__ = ["Connection", "VAULT_ENV"]

#: The environment variable naming the vault when ``Connection`` is given none.
VAULT_ENV: Final = "WRDSVAULT_VAULT"

#: ``wrds.Connection`` keyword arguments that only matter for logging in to WRDS: accepted (so the
#: one-line change works) and ignored.
_WRDS_LOGIN_OPTIONS: Final = frozenset({"autoconnect", "verbose"})

#: What ``dtype_backend`` may be: pandas.read_sql_query's choices, and ``"numpy"`` (its
#: default: what wrds releases without the argument give).
_DTYPE_BACKENDS: Final = ("numpy_nullable", "pyarrow", "numpy")

Rows = tuple[list[str], list[tuple[Any, ...]]]


def _fetch_rows(rel: duckdb.DuckDBPyRelation) -> Rows:
    """Column names and rows as Python values (int, float, Decimal, str, date, datetime)."""
    return list(rel.columns), rel.fetchall()


class Connection:
    """A read-only stand-in for ``wrds.Connection``, pinned to one snapshot of a vault.

    Args:
        vault: the vault folder; default: the environment variable ``WRDSVAULT_VAULT``.
        snapshot: a tag, snapshot id, ``"latest"`` or an ISO date (as-of); default: the latest.
        verify: re-hash every pinned file before the first query.
        wrds_options: ``wrds.Connection``'s login arguments (``wrds_username``, ``autoconnect``,
            ...): accepted so existing code runs, and ignored (nothing logs in).

    Attributes:
        snapshot: the `Snapshot` every method reads.

    Raises:
        InvalidValueError: neither ``vault`` nor ``$WRDSVAULT_VAULT`` names a vault.
        NotAVaultError: the folder holds no vault (nothing is created).
        SnapshotNotFoundError: ``snapshot`` matches no committed snapshot.
        TypeError: an argument ``wrds.Connection`` does not take.
    """

    def __init__(
        self,
        vault: str | os.PathLike[str] | None = None,
        snapshot: str | None = None,
        *,
        verify: bool = False,
        **wrds_options: Any,
    ) -> None:
        from wrdsvault.warehouse import Warehouse

        unknown = sorted(
            k for k in wrds_options if not k.startswith("wrds_") and k not in _WRDS_LOGIN_OPTIONS
        )
        if unknown:
            msg = f"Connection() got unexpected keyword arguments: {', '.join(unknown)}"
            raise TypeError(msg)
        if vault is None:
            vault = os.environ.get(VAULT_ENV) or None
        if vault is None:
            raise InvalidValueError(
                name="vault",
                value=None,
                rule=f"the vault folder: pass it (wrdsvault.Connection('data/wrds')) or set "
                f"the environment variable {VAULT_ENV}",
            )
        given: object = snapshot  # untyped callers can pass anything; mypy cannot see that
        if given is not None and not isinstance(given, str):
            kind = type(given).__name__
            msg = f"snapshot must be a str (tag, id, 'latest' or date), not {kind}"
            raise TypeError(msg)
        self._warehouse: Warehouse | None = Warehouse(Path(os.fspath(vault)), create=False)
        try:
            self.snapshot: Snapshot = self._warehouse.snapshot(snapshot or "latest", verify=verify)
        except BaseException:
            self._warehouse.close()
            raise

    def __repr__(self) -> str:
        return f"wrdsvault.Connection(snapshot={self.snapshot.id!r})"

    # -- SQL ---------------------------------------------------------------------------------

    def raw_sql(
        self,
        sql: str,
        coerce_float: bool = True,
        date_cols: Sequence[str] | Mapping[str, Any] | None = None,
        index_col: str | Sequence[str] | None = None,
        params: Sequence[Any] | Mapping[str, Any] | None = None,
        chunksize: int | None = 500000,
        return_iter: bool = False,
        dtype: Any = None,
        dtype_backend: str | None = None,
    ) -> pd.DataFrame | Iterator[pd.DataFrame]:
        """Run one PostgreSQL SELECT on the snapshot, as ``wrds.Connection.raw_sql`` does.

        ``dtype_backend`` None means what the installed ``wrds`` uses: ``"numpy_nullable"``
        (``Int64``, ``Float64``, ``string`` columns) from the wrds release that added the
        argument, ``"numpy"`` (float64 for integers with NULLs, object for text) before it.

        The statement is translated to DuckDB (``%s``/``%(name)s`` placeholders bound, never
        pasted; ``'01/01/1960'``; bare ``at``), then checked by the sandbox, then run. The
        result has the columns, values and dtypes ``wrds`` gives for the same rows: the same
        arguments mean the same as in ``pandas.read_sql_query`` (``date_cols`` is its
        ``parse_dates``). ``chunksize`` with ``return_iter=True`` gives an iterator of frames;
        the rows are fetched at once (a vault is local), then cut into chunks.

        Raises:
            SqlDialectError: the statement uses PostgreSQL that has no DuckDB form.
            QueryRejectedError: not exactly one read-only SELECT.
            QueryError: DuckDB could not run it (unknown table or column, ...).
            MissingExtraError: sqlglot is not installed (``pip install 'wrdsvault[sql]'``).
        """
        if dtype_backend is None:
            dtype_backend = wrds_dtype_backend()
        if dtype_backend not in _DTYPE_BACKENDS:
            raise InvalidValueError(
                name="dtype_backend",
                value=dtype_backend,
                rule=f"one of {', '.join(map(repr, _DTYPE_BACKENDS))}, or None (as wrds)",
            )
        snap = self.snapshot
        # wrds always hands psycopg2 a parameter collection (SQLAlchemy passes an empty one), so
        # psycopg2 always reads %% as %: 'A%%' is how code written for wrds writes 'A%'.
        text, bound = snap._translate(sql, {} if params is None else params, "postgres")
        columns, rows = snap._run(text, bound, None, _fetch_rows)

        def frame(chunk: list[tuple[Any, ...]]) -> pd.DataFrame:
            return _wrap(chunk, columns, index_col, coerce_float, date_cols, dtype, dtype_backend)

        if chunksize is None:
            return frame(rows)
        if isinstance(chunksize, bool) or not isinstance(chunksize, int):
            msg = f"chunksize must be an int or None, not {type(chunksize).__name__}"
            raise TypeError(msg)
        if chunksize < 1:
            raise InvalidValueError(name="chunksize", value=chunksize, rule="a number >= 1")
        chunks = _chunks(rows, chunksize, frame)
        if return_iter:
            return chunks
        return _concat(chunks)

    def get_table(
        self,
        library: str,
        table: str,
        rows: int = -1,
        obs: int | None = None,
        offset: int = 0,
        columns: Sequence[str] | None = None,
        coerce_float: bool | None = None,
        index_col: str | Sequence[str] | None = None,
        date_cols: Sequence[str] | Mapping[str, Any] | None = None,
        chunksize: int | None = 500000,
        return_iter: bool = False,
        dtype_backend: str | None = None,
    ) -> pd.DataFrame | Iterator[pd.DataFrame]:
        """Read a table (or ``rows``/``obs`` rows of it from ``offset``), as ``wrds`` does.

        ``columns`` are column names (quoted, so ``at`` works). ``coerce_float=None`` means
        what the installed ``wrds`` does (wrds 3.5: True; wrds 3.1 passes None to pandas, so
        ``numeric`` columns stay ``Decimal`` objects). Rows come in the order the
        snapshot stores them (the vault's key order within each year); ``wrds`` gives
        PostgreSQL's storage order. Neither is promised without ``ORDER BY``: use `raw_sql`
        with one when the order matters.

        Raises:
            UnknownDatasetError: the snapshot has no such table.
            QueryError: a column the table does not have.
        """
        name = self._dataset(library, table)
        if coerce_float is None:
            coerce_float = wrds_default("get_table", "coerce_float")
        if obs is not None:
            rows = obs
        for label, value in (("rows", rows), ("offset", offset)):
            if isinstance(value, bool) or not isinstance(value, int):
                msg = f"{label} must be an int, not {type(value).__name__}"
                raise TypeError(msg)
        if columns is None:
            selected = "*"
        else:
            if isinstance(columns, str):
                columns = [columns]
            selected = ", ".join(_quote(str(c)) for c in columns)
        library, table = name.split(".", 1)
        sql = f"SELECT {selected} FROM {_quote(library)}.{_quote(table)}"
        if rows >= 0:
            sql += f" LIMIT {int(rows)}"
        if offset:
            sql += f" OFFSET {int(offset)}"
        return self.raw_sql(
            sql,
            coerce_float=coerce_float,
            index_col=index_col,
            date_cols=date_cols,
            chunksize=chunksize,
            return_iter=return_iter,
            dtype_backend=dtype_backend,
        )

    # -- catalog -----------------------------------------------------------------------------

    def list_libraries(self) -> list[str]:
        """The libraries the snapshot holds, sorted (``['comp', 'crsp', 'ff']``).

        ``wrds`` lists every schema the account may read, product schemas included
        (``crsp_a_stock``); a vault has only the libraries it synced.
        """
        return sorted({name.split(".", 1)[0] for name in self.snapshot.datasets})

    def list_tables(self, library: str) -> list[str]:
        """The tables of ``library`` in the snapshot, sorted.

        Raises:
            UnknownDatasetError: the snapshot holds nothing of ``library``.
        """
        given: object = library  # untyped callers can pass anything; mypy cannot see that
        if not isinstance(given, str):
            msg = f"library must be a str, not {type(given).__name__}"
            raise TypeError(msg)
        tables = sorted(
            name.split(".", 1)[1]
            for name in self.snapshot.datasets
            if name.split(".", 1)[0] == library
        )
        if not tables:
            raise UnknownDatasetError(
                dataset=library,
                known=self.list_libraries(),
                hint=f"snapshot {self.snapshot.id} holds no table of the library {library!r}",
            )
        return tables

    def describe_table(self, library: str, table: str) -> pd.DataFrame:
        """The columns of a table: ``name``, ``nullable``, ``type``, ``comment``, as ``wrds``.

        ``type`` is the SQLAlchemy type of the column's WRDS declared type (``NUMERIC(11, 5)``,
        ``VARCHAR(8)``), ``comment`` WRDS's label for it (kept from the source at sync time;
        None when the source gave none).

        Raises:
            UnknownDatasetError: the snapshot has no such table.
        """
        import pandas as pd

        entry = self.snapshot.dataset(self._dataset(library, table))
        records = [
            {
                "name": c.name,
                "nullable": c.nullable,
                "type": _sa_type(c),
                "comment": c.comment,
            }
            for c in entry.columns
        ]
        return pd.DataFrame.from_records(records, columns=["name", "nullable", "type", "comment"])

    def get_row_count(self, library: str, table: str) -> int:
        """The number of rows of a table in the snapshot (exact; ``wrds`` gives PostgreSQL's
        planner estimate).

        Raises:
            UnknownDatasetError: the snapshot has no such table.
        """
        return int(self.snapshot.dataset(self._dataset(library, table)).row_count)

    def _dataset(self, library: str, table: str) -> str:
        named: tuple[tuple[str, object], ...] = (("library", library), ("table", table))
        for label, value in named:
            if not isinstance(value, str):
                msg = f"{label} must be a str, not {type(value).__name__}"
                raise TypeError(msg)
        name = validate_dataset(f"{library}.{table}")
        self.snapshot.dataset(name)  # UnknownDatasetError names what the snapshot holds
        return name

    # -- life cycle --------------------------------------------------------------------------

    def close(self) -> None:
        """Close the snapshot (its DuckDB connection and reader lease) and the vault. Idempotent."""
        self.snapshot.close()
        if self._warehouse is not None:
            self._warehouse.close()
            self._warehouse = None

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@functools.cache
def wrds_default(method: str, argument: str) -> Any:
    """The default of ``argument`` of the installed ``wrds.Connection.<method>`` (None when it
    has no such argument). Read from its signature, so an upgrade of wrds is followed."""
    import inspect

    import wrds

    parameter = inspect.signature(getattr(wrds.Connection, method)).parameters.get(argument)
    if parameter is None or parameter.default is inspect.Parameter.empty:
        return None
    return parameter.default


def wrds_dtype_backend() -> str:
    """The ``dtype_backend`` the installed ``wrds`` passes to pandas by default.

    wrds 3.5 passes ``"numpy_nullable"``; wrds 3.1 passes none, so pandas' own default
    (``"numpy"``) applies.
    """
    default = wrds_default("raw_sql", "dtype_backend")
    return default if isinstance(default, str) else "numpy"


# -- pandas, exactly as read_sql_query ------------------------------------------------------------


def _wrap(
    rows: list[tuple[Any, ...]],
    columns: list[str],
    index_col: str | Sequence[str] | None,
    coerce_float: bool,
    parse_dates: Sequence[str] | Mapping[str, Any] | None,
    dtype: Any,
    dtype_backend: str,
) -> pd.DataFrame:
    """One frame from ``rows``, built by the routine ``pandas.read_sql_query`` uses.

    That routine is pandas' own (private) ``pandas.io.sql._wrap_result``: calling it is what
    makes every dtype (``Int64``, ``Float64``, dates as strings under ``numpy_nullable``, float64
    for integers with NULLs under ``numpy``) follow ``wrds`` on any pandas version.
    """
    from pandas.io import sql as pandas_sql

    wrap = getattr(pandas_sql, "_wrap_result")  # noqa: B009 - private, not in pandas-stubs
    frame: pd.DataFrame = wrap(
        rows,
        columns,
        index_col=index_col,
        coerce_float=coerce_float,
        parse_dates=parse_dates,
        dtype=dtype,
        dtype_backend=dtype_backend,
    )
    return frame


def _chunks(
    rows: list[tuple[Any, ...]],
    size: int,
    frame: Callable[[list[tuple[Any, ...]]], pd.DataFrame],
) -> Iterator[pd.DataFrame]:
    """Frames of ``size`` rows; one empty frame (with the columns) when there are no rows."""
    if not rows:
        yield frame([])
        return
    for start in range(0, len(rows), size):
        yield frame(rows[start : start + size])


def _concat(chunks: Iterator[pd.DataFrame]) -> pd.DataFrame:
    """Join the chunks as ``wrds.Connection.raw_sql`` does, step for step: onto an empty
    frame, one chunk at a time (so the index restarts at each chunk, and an empty result has
    the dtypes that gives)."""
    import warnings

    import pandas as pd

    full = pd.DataFrame()
    with warnings.catch_warnings():
        # pandas deprecates concatenating onto an empty frame; wrds does it, and so its result.
        warnings.simplefilter("ignore", FutureWarning)
        for chunk in chunks:
            full = pd.concat([full, chunk])
    return full


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _sa_type(column: ColumnSchema) -> Any:
    """The SQLAlchemy type ``wrds.describe_table`` shows for the column's declared type."""
    from sqlalchemy.dialects import postgresql as pg

    declared = (column.source_type or "").strip().lower()
    if not declared:
        return column.type.upper()
    base, _, args = declared.partition("(")
    numbers = [int(a) for a in args.rstrip(")").split(",") if a.strip().isdigit()]
    length = numbers[0] if numbers else None
    scale = numbers[1] if len(numbers) > 1 else None
    kinds: dict[str, Callable[[], Any]] = {
        "integer": pg.INTEGER,
        "smallint": pg.SMALLINT,
        "bigint": pg.BIGINT,
        "double precision": lambda: pg.DOUBLE_PRECISION(precision=53),
        "real": lambda: pg.REAL(precision=24),
        "date": pg.DATE,
        "text": pg.TEXT,
        "boolean": pg.BOOLEAN,
        "numeric": lambda: pg.NUMERIC(precision=length, scale=scale),
        "character varying": lambda: pg.VARCHAR(length=length),
        "varchar": lambda: pg.VARCHAR(length=length),
        "character": lambda: pg.CHAR(length=length),
        "char": lambda: pg.CHAR(length=length),
        "timestamp without time zone": pg.TIMESTAMP,
        "timestamp": pg.TIMESTAMP,
        "timestamp with time zone": lambda: pg.TIMESTAMP(timezone=True),
        "timestamptz": lambda: pg.TIMESTAMP(timezone=True),
        "time without time zone": pg.TIME,
        "time": pg.TIME,
        "interval": pg.INTERVAL,
    }
    make = kinds.get(base.strip())
    return make() if make is not None else declared.upper()
