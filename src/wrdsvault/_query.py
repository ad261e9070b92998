"""The sandboxed, pinned-manifest DuckDB connection behind `Snapshot.query`.

Two walls (docs/design/sandbox.md says why both are needed):

1. Statement allow-list: DuckDB's own parser splits the input; exactly one statement of type
   SELECT is accepted, and only that parsed statement's text runs. EXPLAIN (``EXPLAIN ANALYZE COPY``
   writes), PRAGMA, SET, COPY, ATTACH, EXPORT, INSTALL, LOAD, CALL, CREATE, DROP, ... are refused.
   The parsed statement is then measured (`check_shape`): its planning cost is bounded, and the
   functions that read settings (host paths) or run SQL from a string are refused. A connection
   remembers what the checks found for the texts they passed (`PinnedConnection._checked`).
2. DuckDB settings, applied in the order that works: ``allowed_paths`` = exactly the pinned files
   (a lazy connection's first database: those of the views its first query reads), then
   ``enable_external_access = false``, then ``lock_configuration = true``, all before any query
   runs; views are built with the relation API, never from strings. Extension autoload,
   autoinstall, community extensions and persistent secrets are off from the start; the time zone
   is UTC whatever the host's ``TZ``.

Every query runs on its own cursor (DuckDB's way to share one database between threads); a timer
calls ``interrupt()`` on that cursor when the query's time limit passes. Closing a connection
while queries run on it is deferred until the last of them ends.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, TypeVar

import duckdb

from wrdsvault.errors import (
    InvalidValueError,
    QueryError,
    QueryRejectedError,
    QueryTimeoutError,
)
from wrdsvault.settings import check_timeout as check_timeout  # there: settings need no DuckDB

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

T = TypeVar("T")

_CONFIG: Final = {
    "autoload_known_extensions": False,
    "autoinstall_known_extensions": False,
    "allow_community_extensions": False,
    "allow_persistent_secrets": False,
}

Params = Sequence[Any] | Mapping[str, Any] | None


#: Longest SQL text accepted (characters); bounds parser time and memory.
MAX_SQL_CHARS: Final = 1_000_000

#: Distinct SQL texts whose checks a connection remembers (`PinnedConnection`): a query run again
#: skips the parse, the parse-tree walk and the search for the views it names (~1 ms each time).
CHECK_CACHE_SIZE: Final = 256
#: Longest SQL text remembered (characters), so the cache holds a few MB at most.
CHECK_CACHE_MAX_CHARS: Final = 16_384

#: Most SELECT blocks one statement may plan: each UNION/EXCEPT/INTERSECT term, subquery, VALUES
#: list and CTE body counts, and a ``NOT MATERIALIZED`` CTE counts again at every use (DuckDB
#: inlines it there). Planning is not interruptible and grows faster than linearly with this
#: number (4,000 UNION ALL terms plan in ~1 s, 10,000 in ~10 s), so a time limit cannot bound it.
MAX_SELECT_BLOCKS: Final = 1_000

#: Functions a sandboxed query may not call: the first three reveal settings that hold host paths
#: (the spill folder, the secret folder, the allowed files) or the spill files; ``query`` runs SQL
#: from a string, which no allow-list check would see.
REFUSED_FUNCTIONS: Final = frozenset(
    {"current_setting", "duckdb_settings", "duckdb_temporary_files", "query"}
)
#: Built-in views a sandboxed query may not read: ``pg_catalog.pg_settings`` lists the settings.
REFUSED_VIEWS: Final = frozenset({"pg_settings"})

_SELECT_NODE: Final = '"type":"SELECT_NODE"'
_NEVER: Final = '"materialized":"CTE_MATERIALIZE_NEVER"'


def connect(config: Mapping[str, Any] | None = None) -> duckdb.DuckDBPyConnection:
    """A new in-memory DuckDB whose every cursor computes in UTC, whatever the host's ``TZ``.

    ``TimeZone`` decides what ``year()``, ``date_trunc`` or a cast do with a ``timestamptz`` and
    how one converts to pandas; DuckDB takes it from the process environment unless told. It is
    set GLOBAL (a plain SET only reaches this one connection, not its cursors) and cannot be a
    connect-time option (ICU registers it after the config is read).
    """
    con = duckdb.connect(":memory:", config=dict(config or {}))
    try:
        con.execute("SET GLOBAL TimeZone = 'UTC'")
        con.execute("SET GLOBAL Calendar = 'gregorian'")
    except BaseException:
        con.close()
        raise
    return con


def check_params(params: object) -> None:
    """Refuse ``params`` that are not None, a list/tuple of values or a mapping (TypeError)."""
    if params is None or isinstance(params, Mapping):
        return
    if isinstance(params, (str, bytes, bytearray)) or not isinstance(params, Sequence):
        msg = (
            "params must be a list or tuple of values (for ? or $1 placeholders), a dict (for "
            f"$name placeholders) or None, not {type(params).__name__}"
        )
        raise TypeError(msg)


def _statement_type(stmt: Any) -> str:
    try:
        return str(stmt.type).rsplit(".", 1)[-1]
    except ValueError:  # a type the Python enum cannot name (UPDATE EXTENSIONS on DuckDB 2.0.1)
        return "UNKNOWN"


def _glob_escape(path: str) -> str:
    """Make DuckDB read ``path`` literally: '*', '?' and '[' are glob syntax in read_parquet."""
    if "*" not in path and "?" not in path and "[" not in path:
        return path  # the usual case (content-addressed names), without a regex per file
    return re.sub(r"([*?\[])", r"[\1]", path)


_PIVOT: Final = re.compile(r"(?:un)?pivot\b", re.IGNORECASE)


def _is_pivot(sql: str) -> bool:
    """``sql`` holds the keyword PIVOT or UNPIVOT (not inside a string or a comment)."""
    try:
        tokens = duckdb.tokenize(sql)
    except duckdb.Error:  # pragma: no cover - the statement was just parsed
        return False
    keyword = duckdb.token_type.keyword
    return any(kind == keyword and _PIVOT.match(sql, start) for start, kind in tokens)


class _Database:
    """One in-memory DuckDB database behind a `PinnedConnection`.

    A lazy connection starts with one whose ``allowed_paths`` is set by its first query and
    replaces it at most once (see `PinnedConnection`); the replaced one closes when its last
    cursor does.
    """

    __slots__ = ("allowed", "con", "locked", "pending", "retired", "tmp", "users")

    def __init__(self, con: duckdb.DuckDBPyConnection, tmp: str, views: Mapping[str, list[str]]):
        self.con = con
        self.tmp = tmp
        #: The views whose files ``allowed_paths`` lists (None: every view's), once locked.
        self.allowed: frozenset[str] | None = None
        self.locked = False
        self.pending = dict(views)  # views not built on this database yet
        self.users = 0  # cursors open on it
        self.retired = False


class PinnedConnection:
    """An in-memory DuckDB database whose only tables are views over a fixed list of files.

    Safe to share between threads: each query runs on its own cursor. `close` while queries run
    defers the real close (and the removal of the spill folder) to the end of the last one.

    With ``lazy=True`` a view is built when the first query names it, after ``check`` passed for
    it: opening a snapshot of 100 datasets and counting one reads one dataset's footers, not 100.
    The database's ``allowed_paths`` then lists the files of the views the first query reads
    (it is locked with the rest of the configuration before that query runs): the first query
    of a snapshot of 6,000 files does not pay for DuckDB canonicalizing all of them. The first
    query that needs a view outside that set gets a new database that allows every pinned file
    (the first is closed once its running queries end), so this happens at most once. A query
    that could reach a file without naming a view (a table function such as ``read_parquet``,
    ``DESCRIBE``/``SHOW``, a replacement scan such as ``FROM 'file.parquet'``, or any name that
    is neither a view nor a CTE) needs every view: it first checks and builds all of them, so no
    query ever reads a file whose checks have not passed on its database.

    Until its first query is checked a lazy database is not locked; it only parses (the checks
    run DuckDB's parser on the text given as a parameter) and never runs a query's SQL.
    """

    def __init__(
        self,
        views: Mapping[str, Sequence[str | Path]],
        *,
        union_by_name: frozenset[str] = frozenset(),
        threads: int | None = None,
        memory_limit: str | None = None,
        schemas: Mapping[str, pa.Schema] | None = None,
        unqueryable: Mapping[str, str] | None = None,
        check: Callable[[str], None] | None = None,
        lazy: bool = False,
        snapshot_id: str | None = None,
    ) -> None:
        """Build the views (``lazy``: only the settings; each view on first use).

        Args:
            views: ``library.table`` (or ``alias.library.table``: a catalog per alias) -> the
                Parquet files of its view.
            schemas: the columns of a view without files (a dataset with no rows keeps them).
            unqueryable: datasets left out of the views -> what to do about it; a failed query
                that names one gets this advice appended.
            check: called with a view's name right before the view is built; raises (an
                `IntegrityError`) to refuse its files.
            lazy: build each view when a query first needs it.
            snapshot_id: named by the `IntegrityError` raised when DuckDB cannot read a footer.

        Raises:
            IntegrityError: (not lazy) ``check`` refused a view's files, or DuckDB could not read
                one of them.
        """
        self._tmp = tempfile.mkdtemp(prefix="wrdsvault-duckdb-")
        self._lock = threading.Lock()
        self._views_lock = threading.Lock()  # one database decision or view build at a time
        self._check_files = check
        self._snapshot_id = snapshot_id
        self._union_by_name = union_by_name
        self._schemas = dict(schemas or {})
        self._views = {name: [str(p) for p in files] for name, files in views.items()}
        self._names = frozenset(views)
        self._threads = threads
        self._memory_limit = memory_limit
        # SQL text -> (the SELECT's text, the views it names or None): checks that passed.
        self._checks: dict[str, tuple[str, frozenset[str] | None]] = {}
        self._checks_lock = threading.Lock()
        self._unqueryable = dict(unqueryable or {})
        self._active = 0
        self._closing = False
        self._on_close: list[Callable[[], None]] = []
        self._retired: list[_Database] = []  # replaced, with cursors still open
        self.closed = False
        try:
            self._db = self._new_database()
            if not lazy:
                self._lock_database(self._db, None)
                self._build_views(self._db, list(self._views))
        except BaseException:
            with self._lock:
                self._closing = True
                self._shutdown()
            raise

    def _new_database(self) -> _Database:
        """A database with the catalogs, schemas and resource settings, not yet locked."""
        tmp = tempfile.mkdtemp(prefix="db-", dir=self._tmp)  # spill files: one folder each
        try:
            con = connect(_CONFIG)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        try:
            # Names were validated against ^[a-z][a-z0-9_]*$ upstream; quoting is a second guard.
            for catalog in sorted({_place(name)[0] for name in self._views} - {"memory"}):
                con.execute(f"ATTACH ':memory:' AS {_quote(catalog)}")
            for catalog, library in sorted({_place(name)[:2] for name in self._views}):
                con.execute(f"CREATE SCHEMA {_quote(catalog)}.{_quote(library)}")
            con.execute("SET temp_directory = $1", [tmp])
            if self._threads is not None:
                con.execute("SET threads = $1", [int(self._threads)])
            if self._memory_limit is not None:
                con.execute("SET memory_limit = $1", [str(self._memory_limit)])
        except BaseException:
            con.close()
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return _Database(con, tmp, self._views)

    def _lock_database(self, db: _Database, names: frozenset[str] | None) -> None:
        """Allow the files of the views ``names`` (None: every view's), then lock ``db``.

        DuckDB resolves each allowed path when it is set (a symlink becomes its target), so the
        list is read back: a pinned path that did not stay itself (a symlink planted on the way
        since the files were listed) refuses the database (`IntegrityError`).
        """
        from wrdsvault.errors import IntegrityError

        plain: list[str] = []
        allowed: list[str] = []
        for name in sorted(self._views if names is None else names):
            paths = self._views[name]
            plain.extend(paths)
            allowed.extend(paths)
            escaped = [_glob_escape(p) for p in paths]
            allowed.extend(e for e, p in zip(escaped, paths, strict=True) if e != p)
        with self._lock:
            cur = db.con.cursor()  # the settings are global: a cursor sets them for all
        try:
            cur.execute("SET allowed_paths = $1", [allowed])
            kept = set(cur.execute("SELECT current_setting('allowed_paths')").fetchall()[0][0])
            moved = [p for p in plain if p not in kept]
            if moved:
                if self._check_files is not None:  # its own words first: which file, and why
                    for name in sorted(self._views if names is None else names):
                        if any(p in moved for p in self._views[name]):
                            self._check_files(name)
                raise IntegrityError(
                    path=moved[0],
                    problem="DuckDB resolved it to another path (a symlink on the way?); "
                    "run `wrdsvault verify` and `wrdsvault doctor`",
                    snapshot_id=self._snapshot_id,
                )
            cur.execute("SET enable_external_access = false")
            cur.execute("SET lock_configuration = true")
        finally:
            cur.close()
        db.allowed = names
        db.locked = True

    def _build_views(self, db: _Database, names: Sequence[str]) -> None:
        """Check and build the views ``names`` not built on ``db`` yet (on a cursor of its own,
        whose ``USE`` no query sees). Called with ``_views_lock`` held (or before any query).

        Raises:
            IntegrityError: ``check`` refused a view's files, or DuckDB cannot read them.
        """
        from wrdsvault.errors import IntegrityError

        todo = [name for name in sorted(names) if name in db.pending]
        if not todo:
            return
        with self._lock:
            con = db.con.cursor()
        try:
            for name in todo:
                paths = db.pending[name]
                if self._check_files is not None:
                    self._check_files(name)
                catalog, library, table = _place(name)
                con.execute(f"USE {_quote(catalog)}.{_quote(library)}")
                try:
                    if paths:
                        rel = con.read_parquet(
                            [_glob_escape(p) for p in paths],
                            union_by_name=name in self._union_by_name,
                        )
                    else:  # a dataset with no rows: keep the name and the columns
                        rel = _empty_relation(con, self._schemas.get(name))
                    rel.create_view(table, replace=False)
                except duckdb.Error as exc:  # a damaged footer fails when the view is built
                    raise IntegrityError(
                        path=f"a pinned Parquet file of {name}",
                        problem=f"DuckDB cannot read it ({str(exc).splitlines()[0]})",
                        snapshot_id=self._snapshot_id,
                    ) from exc
                del db.pending[name]
        finally:
            con.close()

    def _prepare(self, names: frozenset[str] | None) -> _Database:
        """The database to run a checked SELECT on, with the views it reads built: ``names``
        (what `_checked` found), or every view if it cannot be told (None). The database is
        counted in use: hand it to `_leave` when done."""
        with self._lock:  # the usual case: nothing to decide or build
            db = self._db
            if db.locked and (
                (names is None and db.allowed is None and not db.pending)
                or (
                    names is not None
                    and (db.allowed is None or names <= db.allowed)
                    and not any(n in db.pending for n in names)
                )
            ):
                db.users += 1
                return db
        with self._views_lock:
            db = self._db
            if not db.locked:  # the first query decides which files this database allows
                try:
                    self._lock_database(db, names)
                except BaseException:
                    # Half-locked (settings that can no longer change): start again next time.
                    self._replace(self._new_database())
                    raise
            elif db.allowed is not None and (names is None or not names <= db.allowed):
                # A view the first database does not allow: one that allows every file.
                new = self._new_database()
                try:
                    self._lock_database(new, None)
                except BaseException:
                    self._close_database(new)
                    raise
                self._replace(new)
                db = new
            self._build_views(db, list(self._views if names is None else names))
            with self._lock:
                db.users += 1
            return db

    def _replace(self, new: _Database) -> None:
        """Make ``new`` the database for new queries; the old one closes with its last use."""
        with self._lock:
            self._db, old = new, self._db
            old.retired = True
            self._retired.append(old)
            if not old.users:
                self._retired.remove(old)
                self._close_database(old)

    def _leave(self, db: _Database) -> None:
        """One use of ``db`` ended; a replaced database closes with its last use."""
        with self._lock:
            db.users -= 1
            if db.retired and db.users == 0 and db in self._retired:
                self._retired.remove(db)
                self._close_database(db)

    @staticmethod
    def _close_database(db: _Database) -> None:
        try:
            db.con.close()
        finally:
            shutil.rmtree(db.tmp, ignore_errors=True)

    # -- life cycle ----------------------------------------------------------------------------

    def acquire(self) -> bool:
        """Count one more user of the connection; False once `close` was called."""
        with self._lock:
            if self._closing:
                return False
            self._active += 1
            return True

    def _hold(self) -> None:
        """Count one more use from inside (a query or check): unlike `acquire`, also while a
        `close` waits for running queries, so a query whose caller acquired the connection
        runs to its end even if `close` came in between. Raises once the database is closed."""
        with self._lock:
            if self.closed:
                msg = "the connection is closed"
                raise RuntimeError(msg)  # callers lease through Snapshot, which never gets here
            self._active += 1

    def release(self) -> None:
        """End one use; the last use after `close` closes the database for real."""
        with self._lock:
            self._active -= 1
            if self._closing and self._active == 0:
                self._shutdown()

    def close(self) -> None:
        """Close now if idle, else when the last running query ends. Idempotent."""
        with self._lock:
            self._closing = True
            if self._active == 0:
                self._shutdown()

    def when_closed(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` once the database is closed for real (now, if it already is)."""
        with self._lock:
            if not self.closed:
                self._on_close.append(callback)
                return
        callback()

    def _shutdown(self) -> None:
        # Called with self._lock held, once no query uses the connection.
        if self.closed:
            return
        self.closed = True
        db = getattr(self, "_db", None)
        for each in [*self._retired, *([db] if db is not None else [])]:
            each.con.close()
        self._retired.clear()
        shutil.rmtree(self._tmp, ignore_errors=True)
        callbacks, self._on_close = self._on_close, []
        for callback in callbacks:
            callback()

    @contextmanager
    def _cursor(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A cursor on the current database (checks; a session's one non-lazy database)."""
        self._hold()
        try:
            with self._current_cursor() as (cur, _):
                yield cur
        finally:
            self.release()

    @contextmanager
    def _current_cursor(self) -> Iterator[tuple[duckdb.DuckDBPyConnection, _Database]]:
        """A cursor on the current database and that database, for a caller that holds a use
        (`acquire`)."""
        with self._lock:
            db = self._db
            cur = db.con.cursor()
            db.users += 1
        try:
            yield cur, db
        finally:
            cur.close()
            self._leave(db)

    @contextmanager
    def _running(self, sql: str) -> Iterator[tuple[duckdb.DuckDBPyConnection, str]]:
        """Check ``sql``; yield a cursor on a database that allows and has built the views it
        reads, and the text of its one SELECT."""
        self._hold()
        try:
            with self._current_cursor() as (cur, checked_on):
                text, names = self._checked(cur, sql)
                db = self._prepare(names)
                try:
                    if db is checked_on:
                        yield cur, text  # checked and run on one cursor, as before
                    else:  # the database was replaced meanwhile: run on the new one
                        with self._lock:
                            run_cur = db.con.cursor()
                        try:
                            yield run_cur, text
                        finally:
                            run_cur.close()
                finally:
                    self._leave(db)
        finally:
            self.release()

    # -- checks --------------------------------------------------------------------------------

    def check(self, sql: str) -> str:
        """Return the text of the one SELECT statement in ``sql``, or raise QueryRejectedError."""
        with self._cursor() as cur:
            return self._check(cur, sql)

    def _check(self, cur: duckdb.DuckDBPyConnection, sql: str) -> str:
        """The text of the one SELECT in ``sql`` (QueryRejectedError if there is not one)."""
        return self._checked(cur, sql)[0]

    def _checked(
        self, cur: duckdb.DuckDBPyConnection, sql: str
    ) -> tuple[str, frozenset[str] | None]:
        """The text of the one SELECT in ``sql`` and the views it names (`referenced_views`).

        The outcome of checks that passed is remembered per SQL text (`CHECK_CACHE_SIZE` texts
        of up to `CHECK_CACHE_MAX_CHARS`): it depends on the text alone (DuckDB's parser, the
        fixed list of views), never on data or on what ran before, so a query run again is not
        parsed again. A refused text is checked (and refused) every time.
        """
        given: object = sql  # untyped callers can pass anything; mypy cannot see that
        if not isinstance(given, str):
            msg = f"sql must be a str, not {type(given).__name__}"
            raise TypeError(msg)
        with self._checks_lock:
            known = self._checks.get(sql)
        if known is not None:
            return known
        if len(sql) > MAX_SQL_CHARS:
            raise QueryRejectedError(
                statement_type="TOO_LONG",
                reason=f"{len(sql):,} characters; at most {MAX_SQL_CHARS:,} are accepted",
            )
        try:
            statements = cur.extract_statements(sql)
        except duckdb.Error as exc:
            raise query_error(cur, exc, sql, str(exc)) from exc
        if len(statements) != 1:
            raise QueryRejectedError(
                statement_type="MULTIPLE" if statements else "EMPTY",
                reason=f"{len(statements)} statements given",
            )
        kind = _statement_type(statements[0])
        if kind == "MULTI" and _is_pivot(sql):
            raise QueryRejectedError(
                statement_type="PIVOT",
                reason="a PIVOT without an IN list runs as several statements (it first creates "
                "a type holding the distinct values); name the values instead, e.g. "
                "PIVOT t ON col IN ('a', 'b') USING sum(x), or aggregate with a filter: "
                "sum(x) FILTER (WHERE col = 'a')",
            )
        if kind != "SELECT":
            raise QueryRejectedError(
                statement_type=kind, reason=f"{kind} statements are not allowed"
            )
        text = str(statements[0].query)
        checked = (text, referenced_views(*check_shape(cur, text), self._names))
        if len(sql) > CHECK_CACHE_MAX_CHARS:
            return checked
        with self._checks_lock:
            if len(self._checks) >= CHECK_CACHE_SIZE:
                del self._checks[next(iter(self._checks))]  # the oldest
            self._checks[sql] = checked
        return checked

    # -- running -------------------------------------------------------------------------------

    def run(
        self,
        sql: str,
        params: Params,
        timeout_s: float | None,
        fetch: Callable[[duckdb.DuckDBPyRelation], T],
    ) -> T:
        """Check ``sql``, run it on a new cursor and return ``fetch(relation)``."""
        limit = check_timeout(timeout_s)
        check_params(params)
        with self._running(sql) as (cur, text), _Deadline(cur, limit):
            try:
                rel = cur.sql(text, params=params) if params is not None else cur.sql(text)
                return fetch(rel)
            except duckdb.InterruptException as exc:
                raise QueryTimeoutError(timeout_s=limit or 0.0) from exc
            except duckdb.Error as exc:
                reason = self._advise(str(exc), text)
                raise query_error(cur, exc, text, reason) from exc

    def stream(
        self, sql: str, params: Params, timeout_s: float | None, batch_rows: int
    ) -> Iterator[pa.RecordBatch]:
        """Check ``sql``, run it on a new cursor and yield its rows as Arrow record batches.

        The cursor (and so the connection) stays in use until the generator is exhausted or
        closed; the time limit covers the whole iteration.
        """
        import pyarrow as pa

        limit = check_timeout(timeout_s)
        check_params(params)
        if isinstance(batch_rows, bool) or not isinstance(batch_rows, int):
            msg = f"batch_rows must be an int, not {type(batch_rows).__name__}"
            raise TypeError(msg)
        if batch_rows < 1:
            raise InvalidValueError(name="batch_rows", value=batch_rows, rule="a number >= 1")
        with self._running(sql) as (cur, text), _Deadline(cur, limit) as deadline:
            try:
                rel = cur.sql(text, params=params) if params is not None else cur.sql(text)
                reader = rel.to_arrow_reader(batch_rows)
                while True:
                    try:
                        batch = reader.read_next_batch()
                    except StopIteration:
                        return
                    yield batch
            except (duckdb.Error, pa.ArrowException) as exc:
                if deadline.interrupted or isinstance(exc, duckdb.InterruptException):
                    raise QueryTimeoutError(timeout_s=limit or 0.0) from exc
                reason = self._advise(str(exc), text)
                raise query_error(cur, exc, text, reason) from exc

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


_BARE_WORD: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def query_error(
    cur: duckdb.DuckDBPyConnection, exc: BaseException, sql: str, reason: str
) -> QueryError:
    """The `QueryError` for DuckDB's ``exc``, with the advice that fits the failure.

    A catalog error gets the advice on table names; a conversion error about a date, the date
    forms; a parser error in a statement that uses a column named like a DuckDB keyword (``at``),
    the advice to quote it; another parser error, the pointer to ``dialect="postgres"``.
    """
    text = str(exc)
    if isinstance(exc, duckdb.CatalogException):
        return QueryError(sql=sql, reason=reason, kind="catalog")
    if isinstance(exc, duckdb.ConversionException) and re.search(
        r"\b(date|timestamp|time)\b", text, re.IGNORECASE
    ):
        return QueryError(sql=sql, reason=reason, kind="date")
    if isinstance(exc, duckdb.ParserException):
        words = _keyword_columns(cur, sql)
        if words:
            return QueryError(sql=sql, reason=reason, kind="keyword", words=words)
        return QueryError(sql=sql, reason=reason, kind="syntax")
    return QueryError(sql=sql, reason=reason)


def _keyword_columns(cur: duckdb.DuckDBPyConnection, sql: str) -> tuple[str, ...]:
    """Column names of the snapshot that DuckDB reads as keywords and ``sql`` uses unquoted."""
    from wrdsvault._pgsql import duckdb_keywords

    try:
        tokens = duckdb.tokenize(sql)
        rows = cur.execute("SELECT DISTINCT lower(column_name) FROM duckdb_columns()").fetchall()
    except duckdb.Error:  # pragma: no cover - the advice is a best effort
        return ()
    columns = {str(r[0]) for r in rows} & duckdb_keywords()
    used: list[str] = []
    for start, kind in tokens:
        if kind in (duckdb.token_type.string_const, duckdb.token_type.comment):
            continue
        match = _BARE_WORD.match(sql, start)
        if match and match[0].lower() in columns and match[0].lower() not in used:
            used.append(match[0].lower())
    return tuple(used)


class _Deadline:
    """Interrupt ``cur`` once ``limit_s`` seconds pass, unless the block ended first.

    ``interrupted`` says whether the timer fired (an interrupt can surface as an Arrow error
    while batches stream, not only as DuckDB's InterruptException).
    """

    def __init__(self, cur: duckdb.DuckDBPyConnection, limit_s: float | None) -> None:
        self._cur = cur
        self._guard = threading.Lock()
        self._finished = False
        self.interrupted = False
        self._timer: threading.Timer | None = None
        if limit_s is not None:
            self._timer = threading.Timer(limit_s, self._interrupt)
            self._timer.daemon = True

    def _interrupt(self) -> None:
        with self._guard:
            if not self._finished:
                self.interrupted = True
                self._cur.interrupt()

    def __enter__(self) -> _Deadline:
        if self._timer is not None:
            self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        with self._guard:
            self._finished = True
        if self._timer is not None:
            self._timer.cancel()


def _place(name: str) -> tuple[str, str, str]:
    """(catalog, schema, table) of a view name: ``library.table`` lives in the default catalog
    ``memory``; ``alias.library.table`` in an in-memory catalog of its own (`query_across`)."""
    parts = name.split(".")
    if len(parts) == 3:
        return parts[0], parts[1], parts[2]
    library, table = name.split(".", 1)
    return "memory", library, table


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


def check_shape(cur: duckdb.DuckDBPyConnection, text: str) -> tuple[str, frozenset[str]]:
    """Refuse a SELECT whose plan would be too big, or that calls a refused function.

    Works on DuckDB's own parse tree (``json_serialize_sql``), walked inside DuckDB (its JSON
    reader is not recursive; a Python one fails on a 400-term sum). Returns the tree (JSON text)
    and the names of the statement's CTEs, for `referenced_views`.
    """
    ast, error, functions, tables, ctes = cur.execute(
        "SELECT j::VARCHAR, coalesce(json_extract(j, '$.error')::BOOLEAN, false),"
        " json_extract_string(j, '$..function_name'), json_extract_string(j, '$..table_name'),"
        " json_extract_string(j, '$..cte_map.map[*].key')"
        " FROM (SELECT json_serialize_sql($1)::JSON AS j)",
        [text],
    ).fetchall()[0]
    functions, tables = functions or [], tables or []
    if error:  # every SELECT tried serializes; one that does not cannot be checked: refused
        raise QueryRejectedError(
            statement_type="UNCHECKABLE",
            reason="DuckDB cannot describe this SELECT's parse tree, so the sandbox cannot check "
            f"it ({json.loads(ast).get('error_message', 'no reason given')})",
        )
    refused = sorted({f.lower() for f in functions if f} & REFUSED_FUNCTIONS)
    refused += sorted({t.lower() for t in tables if t} & REFUSED_VIEWS)
    if refused:
        raise QueryRejectedError(
            statement_type="FUNCTION",
            reason=f"{', '.join(refused)} may not be used in a snapshot query (settings hold "
            "host paths; query() runs SQL from a string). The time zone is always UTC; "
            "docs/query.md lists the settings in force",
        )
    blocks = ast.count(_SELECT_NODE)
    if blocks <= MAX_SELECT_BLOCKS and _NEVER in ast:
        blocks += _inlined_blocks(cur, ast, tables)
    if blocks > MAX_SELECT_BLOCKS:
        raise QueryRejectedError(
            statement_type="TOO_COMPLEX",
            reason=f"{blocks:,} SELECT blocks (UNION/EXCEPT/INTERSECT terms, subqueries, VALUES "
            f"and CTE bodies; a NOT MATERIALIZED CTE counts at every use); at most "
            f"{MAX_SELECT_BLOCKS:,} are accepted because planning cannot be interrupted. "
            "Put the values in a VALUES list or a parameter, or use a MATERIALIZED CTE",
        )
    return ast, frozenset(str(c).lower() for c in ctes or [] if c)


#: Kinds of table reference that read only what they name (a view, or nothing of the vault).
_PLAIN_REFS: Final = frozenset(
    {"BASE_TABLE", "SUBQUERY", "JOIN", "EMPTY", "EXPRESSION_LIST", "PIVOT"}
)
#: Every table reference of a parse tree starts so (``"alias"`` follows ``"type"`` only in
#: table references; expressions have a ``"class"`` first, query nodes no alias).
_REF: Final = re.compile(r'\{"type":"([A-Z_]+)","alias":')
_JSON_STR: Final = r'"((?:[^"\\]|\\.)*)"'
_KIND: Final = re.compile(r'"type":"([A-Z_]+)"')
#: Table reference kinds that read what no view name says (a belt to `_PLAIN_REFS`' braces).
_READS_ANYTHING: Final = frozenset(
    {"TABLE_FUNCTION", "SHOW_REF", "COLUMN_DATA", "DELIM_GET", "BOUND_TABLE_REF"}
)
#: A BASE_TABLE's own names, the first of each after its "type" (in this order).
#: A table name that DuckDB can only ever resolve to a CTE, view or table, never to a file: a name
#: with a dot or a slash, quoted, may be a replacement scan of a path where no CTE of that name is
#: in scope (a CTE is only visible in its own WITH's query), so such a name is never taken for a
#: CTE of the statement.
_PLAIN_NAME: Final = re.compile(r"[a-z_][a-z0-9_$]*")
_BASE_NAMES: Final = re.compile(
    rf'"schema_name":{_JSON_STR},"table_name":{_JSON_STR},.*?"catalog_name":{_JSON_STR}', re.S
)


def referenced_views(
    ast: str, ctes: frozenset[str], views: frozenset[str]
) -> frozenset[str] | None:
    """The ``views`` a checked SELECT names, from its parse tree; None if it may read more.

    ``ast`` and ``ctes`` are what `check_shape` returned. None (the caller builds every view
    first) for a table function (``read_parquet``, ``duckdb_tables()``, ``query_table``),
    ``DESCRIBE``/``SHOW``/``SUMMARIZE``, a table reference of a kind not known here, and any
    table name that is neither one of ``views`` nor a CTE (``information_schema.tables``, a file
    path in ``FROM``, a typo). A name counts as a CTE only if it is a plain identifier: the
    tree does not say which CTEs are in scope where, and a quoted path that a CTE elsewhere in
    the statement shadows would be read as a file. Reads the tree text: JSON strings escape
    their quotes, so ``{"type":"...","alias":`` only ever starts a real table reference.
    """
    kinds = set(_KIND.findall(ast))
    if kinds & _READS_ANYTHING or ast.count('"type":"BASE_TABLE"') != len(
        re.findall(r'\{"type":"BASE_TABLE","alias":', ast)
    ):
        return None  # also if a DuckDB release serialized table references differently
    found: set[str] = set()
    for ref in _REF.finditer(ast):
        kind = ref.group(1)
        if kind not in _PLAIN_REFS:
            return None
        if kind != "BASE_TABLE":
            continue
        names = _BASE_NAMES.search(ast, ref.end())
        if names is None:  # pragma: no cover - every BASE_TABLE carries the three names
            return None
        schema, table, catalog = (json.loads(f'"{n}"').lower() for n in names.groups())
        if not catalog and not schema and table in ctes and _PLAIN_NAME.fullmatch(table):
            continue
        name = f"{schema}.{table}" if catalog in ("", "memory") else f"{catalog}.{schema}.{table}"
        if not schema or name not in views:
            return None
        found.add(name)
    return frozenset(found)


def _inlined_blocks(cur: duckdb.DuckDBPyConnection, ast: str, tables: Sequence[str]) -> int:
    """The extra SELECT blocks planned because NOT MATERIALIZED CTEs are inlined at each use."""
    rows = cur.execute(
        "SELECT e->>'$.key', e->>'$.value.materialized', (e->'$.value.query_node')::VARCHAR,"
        " json_extract_string(e->'$.value.query_node', '$..table_name')"
        " FROM (SELECT unnest(json_extract($1::JSON, '$..cte_map.map[*]')) AS e)",
        [ast],
    ).fetchall()
    bodies: dict[str, tuple[int, list[str]]] = {}
    for name, materialized, body, refs in rows:
        if materialized == "CTE_MATERIALIZE_NEVER" and name is not None:
            blocks = (body or "").count(_SELECT_NODE)
            old = bodies.get(name)
            if old is None or blocks > old[0]:  # the same name in two scopes: the larger
                bodies[name] = (blocks, list(refs or []))
    # Weights without recursion (a chain may be 1,000 CTEs long): settle each CTE once the CTEs
    # it uses are settled; saturating at the limit keeps the numbers small. A CTE's use of
    # itself (recursive) is planned once; names left in a cycle (the same name in two scopes)
    # count their own blocks only.
    cap = MAX_SELECT_BLOCKS + 1
    weights: dict[str, int] = {}
    pending = {n: [r for r in refs if r in bodies and r != n] for n, (_, refs) in bodies.items()}
    while pending:
        settled = [n for n, deps in pending.items() if all(d in weights for d in deps)]
        if not settled:
            weights.update((n, min(bodies[n][0], cap)) for n in pending)
            break
        for n in settled:
            weights[n] = min(cap, bodies[n][0] + sum(weights[d] for d in pending.pop(n)))

    extra = 0
    for ref in tables:
        if ref in bodies:
            extra += weights[ref]
            if extra > MAX_SELECT_BLOCKS:
                break
    return extra


# -- fetching -------------------------------------------------------------------------------------


def fetch_df(rel: duckdb.DuckDBPyRelation) -> pd.DataFrame:
    frame: pd.DataFrame = rel.df()  # DuckDB 2's relation types it as Any
    return frame


def fetch_arrow(rel: duckdb.DuckDBPyRelation) -> pa.Table:
    table: pa.Table = rel.to_arrow_table()  # DuckDB 2.0 name (the declared minimum)
    return table


def fetch_rows(rel: duckdb.DuckDBPyRelation) -> list[tuple[Any, ...]]:
    return rel.fetchall()


class Rendered:
    """A result as DuckDB prints it: column names, types, rows of exact text (None = NULL).

    ``form="text"`` casts every value to VARCHAR (DuckDB's own text form: exact for every type:
    nanoseconds, intervals with months, HUGEINT, DECIMAL, NaN); ``form="json"`` gives each value
    as a JSON text (``to_json``; NaN and infinities as the strings "NaN", "Infinity",
    "-Infinity", since JSON has no such numbers).
    """

    def __init__(self, columns: list[str], types: list[str], rows: list[tuple[Any, ...]]) -> None:
        self.columns = columns
        self.types = types
        self.rows = rows


_NON_FINITE: Final = re.compile(r'("(?:[^"\\]|\\.)*")|(-?Infinity|NaN)')


def _json_finite(text: str) -> str:
    return _NON_FINITE.sub(lambda m: m.group(1) or f'"{m.group(2)}"', text)


def render(form: str) -> Callable[[duckdb.DuckDBPyRelation], Rendered]:
    """A fetch function returning a `Rendered` result (``form``: "text" or "json")."""
    expression = {"text": "columns(*)::VARCHAR", "json": "to_json(columns(*))"}[form]

    def fetch(rel: duckdb.DuckDBPyRelation) -> Rendered:
        types = [str(t) for t in rel.types]
        shown = rel.project(expression)
        rows = shown.fetchall()
        if form == "json":
            rows = [tuple(None if v is None else _json_finite(str(v)) for v in r) for r in rows]
        return Rendered(list(shown.columns), types, rows)

    return fetch


class LazyResult:
    """A validated query that runs when you ask for its rows (``.df()``, ``.arrow()``, ``.pl()``,
    ``.batches()`` to stream).

    Only result-fetching methods are exposed: a raw DuckDB relation would let code run arbitrary
    SQL on the sandboxed connection through ``relation.query()``.
    """

    def __init__(self, runner: Any, sql: str, params: Params) -> None:
        self._runner = runner
        self.sql = sql
        self._params = params

    def _run(self, timeout_s: float | None, fetch: Callable[[duckdb.DuckDBPyRelation], T]) -> T:
        result: T = self._runner._run(self.sql, self._params, timeout_s, fetch)
        return result

    def head(self, n: int | None) -> LazyResult:
        """The same query cut to its first ``n`` rows (``None``: all of them)."""
        if n is None:
            return self
        if isinstance(n, bool) or not isinstance(n, int):
            msg = f"n must be an int or None, not {type(n).__name__}"
            raise TypeError(msg)
        if n < 0:
            raise InvalidValueError(name="n", value=n, rule="a number of rows >= 0")
        return LazyResult(self._runner, f"SELECT * FROM ({self.sql}) LIMIT {n}", self._params)

    def df(self, *, timeout_s: float | None = None) -> pd.DataFrame:
        """Run the query and return a pandas DataFrame."""
        return self._run(timeout_s, fetch_df)

    def arrow(self, *, timeout_s: float | None = None) -> pa.Table:
        """Run the query and return a pyarrow Table."""
        return self._run(timeout_s, fetch_arrow)

    def pl(self, *, timeout_s: float | None = None) -> Any:
        """Run the query and return a polars DataFrame (the extra ``polars``; else
        `MissingExtraError`)."""
        from wrdsvault._polars import from_arrow, require_polars

        require_polars()
        return from_arrow(self.arrow(timeout_s=timeout_s))

    def batches(
        self, batch_rows: int = 131_072, *, timeout_s: float | None = None
    ) -> Iterator[pa.RecordBatch]:
        """Run the query and yield its rows as pyarrow record batches of at most ``batch_rows``.

        Streams: rows are produced as they are consumed, so a result larger than memory can be
        written out batch by batch. The connection stays in use until the iteration ends (or
        the generator is closed); ``timeout_s`` limits the whole iteration.
        """
        stream: Iterator[pa.RecordBatch] = self._runner._stream(
            self.sql, self._params, timeout_s, batch_rows
        )
        return stream

    def fetchall(self, *, timeout_s: float | None = None) -> list[tuple[Any, ...]]:
        """Run the query and return the rows as tuples."""
        return self._run(timeout_s, fetch_rows)

    def __repr__(self) -> str:
        return f"LazyResult({self.sql!r})"
