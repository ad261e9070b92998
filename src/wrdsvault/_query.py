"""The sandboxed, pinned-manifest DuckDB connection behind `Snapshot.query`.

Two walls (docs/design/sandbox.md says why both are needed):

1. Statement allow-list: DuckDB's own parser splits the input; exactly one statement of type
   SELECT is accepted, and only that parsed statement's text runs. EXPLAIN (``EXPLAIN ANALYZE COPY``
   writes), PRAGMA, SET, COPY, ATTACH, EXPORT, INSTALL, LOAD, CALL, CREATE, DROP, ... are refused.
2. DuckDB settings, applied in the order that works: views first (built with the relation API,
   never from strings), then ``allowed_paths`` = exactly the pinned files, then
   ``enable_external_access = false``, then ``lock_configuration = true``. Extension autoload,
   autoinstall, community extensions and persistent secrets are off from the start.

A timer calls ``interrupt()`` on the query's own cursor when its time limit passes.
"""

from __future__ import annotations

import re
import shutil
import tempfile
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import duckdb

from wrdsvault.errors import QueryError, QueryRejectedError, QueryTimeoutError

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

_CONFIG: Final = {
    "autoload_known_extensions": False,
    "autoinstall_known_extensions": False,
    "allow_community_extensions": False,
    "allow_persistent_secrets": False,
}

Params = Sequence[Any] | Mapping[str, Any] | None


#: Longest SQL text accepted (characters); bounds parser time and memory.
MAX_SQL_CHARS: Final = 1_000_000


def _statement_type(stmt: Any) -> str:
    try:
        return str(stmt.type).rsplit(".", 1)[-1]
    except ValueError:  # a type the Python enum cannot name (UPDATE EXTENSIONS on DuckDB 2.0.1)
        return "UNKNOWN"


def _glob_escape(path: str) -> str:
    """Make DuckDB read ``path`` literally: '*', '?' and '[' are glob syntax in read_parquet."""
    return re.sub(r"([*?\[])", r"[\1]", path)


class PinnedConnection:
    """An in-memory DuckDB database whose only tables are views over a fixed list of files."""

    def __init__(
        self,
        views: Mapping[str, Sequence[str | Path]],
        *,
        union_by_name: frozenset[str] = frozenset(),
        threads: int | None = None,
        memory_limit: str | None = None,
        schemas: Mapping[str, pa.Schema] | None = None,
        unqueryable: Mapping[str, str] | None = None,
    ) -> None:
        """Build the views.

        Args:
            views: ``library.table`` -> the Parquet files of its view.
            schemas: the columns of a view without files (a dataset with no rows keeps them).
            unqueryable: datasets left out of the views -> what to do about it; a failed query
                that names one gets this advice appended.
        """
        self._tmp = tempfile.mkdtemp(prefix="wrdsvault-duckdb-")
        self._lock = threading.Lock()
        self._unqueryable = dict(unqueryable or {})
        try:
            self._con = duckdb.connect(":memory:", config=dict(_CONFIG))
            self._build(views, union_by_name, threads, memory_limit, schemas or {})
        except BaseException:
            shutil.rmtree(self._tmp, ignore_errors=True)
            raise

    def _build(
        self,
        views: Mapping[str, Sequence[str | Path]],
        union_by_name: frozenset[str],
        threads: int | None,
        memory_limit: str | None,
        schemas: Mapping[str, pa.Schema],
    ) -> None:
        con = self._con
        allowed: list[str] = []
        libraries = sorted({name.split(".", 1)[0] for name in views})
        for library in libraries:
            # Names were validated against ^[a-z][a-z0-9_]*$ upstream; quoting is a second guard.
            con.execute(f'CREATE SCHEMA "{library}"')
        for name, files in sorted(views.items()):
            library, table = name.split(".", 1)
            paths = [str(p) for p in files]
            allowed.extend(paths)
            escaped = [_glob_escape(p) for p in paths]
            allowed.extend(e for e, p in zip(escaped, paths, strict=True) if e != p)
            con.execute(f'USE memory."{library}"')
            if paths:
                rel = con.read_parquet(escaped, union_by_name=name in union_by_name)
            else:  # a dataset with no rows: keep the name and the columns, return nothing
                rel = _empty_relation(con, schemas.get(name))
            rel.create_view(table, replace=False)
        con.execute("USE memory.main")
        con.execute("SET temp_directory = $1", [self._tmp])
        if threads is not None:
            con.execute("SET threads = $1", [int(threads)])
        if memory_limit is not None:
            con.execute("SET memory_limit = $1", [str(memory_limit)])
        con.execute("SET allowed_paths = $1", [allowed])
        con.execute("SET enable_external_access = false")
        con.execute("SET lock_configuration = true")

    def check(self, sql: str) -> str:
        """Return the text of the one SELECT statement in ``sql``, or raise QueryRejectedError."""
        given: object = sql  # untyped callers can pass anything; mypy cannot see that
        if not isinstance(given, str):
            msg = f"sql must be a str, not {type(given).__name__}"
            raise TypeError(msg)
        if len(sql) > MAX_SQL_CHARS:
            raise QueryRejectedError(
                statement_type="TOO_LONG",
                reason=f"{len(sql):,} characters; at most {MAX_SQL_CHARS:,} are accepted",
            )
        try:
            with self._lock:
                statements = self._con.extract_statements(sql)
        except duckdb.Error as exc:
            raise QueryError(sql=sql, reason=str(exc)) from exc
        if len(statements) != 1:
            raise QueryRejectedError(
                statement_type="MULTIPLE" if statements else "EMPTY",
                reason=f"{len(statements)} statements given",
            )
        kind = _statement_type(statements[0])
        if kind != "SELECT":
            raise QueryRejectedError(
                statement_type=kind, reason=f"{kind} statements are not allowed"
            )
        return str(statements[0].query)

    @contextmanager
    def _relation(
        self, sql: str, params: Params, timeout_s: float | None
    ) -> Iterator[duckdb.DuckDBPyRelation]:
        text = self.check(sql)
        if timeout_s is not None and not timeout_s > 0:
            msg = f"timeout_s must be a positive number of seconds, not {timeout_s!r}"
            raise ValueError(msg)
        with self._lock:
            cur = self._con.cursor()
        timer = None
        if timeout_s is not None:
            timer = threading.Timer(timeout_s, cur.interrupt)
            timer.daemon = True
            timer.start()
        try:
            yield cur.sql(text, params=params) if params is not None else cur.sql(text)
        except duckdb.InterruptException as exc:
            raise QueryTimeoutError(timeout_s=timeout_s or 0.0) from exc
        except duckdb.Error as exc:
            raise QueryError(sql=text, reason=self._advise(str(exc), text)) from exc
        finally:
            if timer is not None:
                timer.cancel()
            cur.close()

    def _advise(self, reason: str, sql: str) -> str:
        """``reason``, plus the advice for each left-out dataset ``sql`` names."""
        notes = [
            note
            for name, note in sorted(self._unqueryable.items())
            if re.search(
                r'(?<![\w."])"?{}"?\s*\.\s*"?{}"?(?![\w"])'.format(*name.split(".", 1)),
                sql,
                re.IGNORECASE,
            )
        ]
        return "; ".join([reason, *notes])

    def df(
        self, sql: str, params: Params = None, *, timeout_s: float | None = None
    ) -> pd.DataFrame:
        with self._relation(sql, params, timeout_s) as rel:
            frame: pd.DataFrame = rel.df()  # DuckDB 2's relation types it as Any
            return frame

    def arrow(self, sql: str, params: Params = None, *, timeout_s: float | None = None) -> pa.Table:
        with self._relation(sql, params, timeout_s) as rel:
            return _arrow_table(rel)

    def lazy(self, sql: str, params: Params = None) -> LazyResult:
        return LazyResult(self, self.check(sql), params)

    def close(self) -> None:
        with self._lock:
            self._con.close()
        shutil.rmtree(self._tmp, ignore_errors=True)


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _empty_relation(
    con: duckdb.DuckDBPyConnection, schema: pa.Schema | None
) -> duckdb.DuckDBPyRelation:
    """No rows, with ``schema``'s columns typed as DuckDB reads them from Parquet."""
    import pyarrow as pa

    if schema is None or len(schema) == 0:
        return con.sql("SELECT NULL AS no_rows WHERE false")
    # DuckDB maps the Arrow types itself (the mapping a Parquet view of the same columns gets);
    # the empty Arrow table is only read for its types, never kept by a view.
    types = con.from_arrow(schema.empty_table()).types
    columns = ", ".join(
        f"NULL AS {_quote(field.name)}"
        if pa.types.is_null(field.type)
        else f"CAST(NULL AS {duck_type}) AS {_quote(field.name)}"
        for field, duck_type in zip(schema, types, strict=True)
    )
    return con.sql(f"SELECT {columns} WHERE false")


def _arrow_table(rel: duckdb.DuckDBPyRelation) -> pa.Table:
    # DuckDB 2.0 renamed fetch_arrow_table() to to_arrow_table(); support both (minimum 1.2).
    fetch = getattr(rel, "to_arrow_table", None) or rel.fetch_arrow_table
    table: pa.Table = fetch()
    return table


class LazyResult:
    """A validated query that runs when you ask for its rows (``.df()``, ``.arrow()``, ``.pl()``).

    Only result-fetching methods are exposed: a raw DuckDB relation would let code run arbitrary
    SQL on the sandboxed connection through ``relation.query()``.
    """

    def __init__(self, con: PinnedConnection, sql: str, params: Params) -> None:
        self._con = con
        self.sql = sql
        self._params = params

    def df(self, *, timeout_s: float | None = None) -> pd.DataFrame:
        """Run the query and return a pandas DataFrame."""
        return self._con.df(self.sql, self._params, timeout_s=timeout_s)

    def arrow(self, *, timeout_s: float | None = None) -> pa.Table:
        """Run the query and return a pyarrow Table."""
        return self._con.arrow(self.sql, self._params, timeout_s=timeout_s)

    def pl(self, *, timeout_s: float | None = None) -> Any:
        """Run the query and return a polars DataFrame (needs ``polars`` installed)."""
        try:
            import polars as pl
        except ImportError as exc:
            msg = "LazyResult.pl() needs polars: pip install polars"
            raise ImportError(msg) from exc
        return pl.from_arrow(self.arrow(timeout_s=timeout_s))

    def fetchall(self, *, timeout_s: float | None = None) -> list[tuple[Any, ...]]:
        """Run the query and return the rows as tuples."""
        with self._con._relation(self.sql, self._params, timeout_s) as rel:
            return rel.fetchall()

    def __repr__(self) -> str:
        return f"LazyResult({self.sql!r})"
