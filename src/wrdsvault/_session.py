"""Scratch sessions on a snapshot: temporary tables and views, several statements, in memory.

``with snap.session() as s:`` opens a private in-memory DuckDB database built exactly as a
snapshot's query connection is (`PinnedConnection`: views over the pinned files only, then
``allowed_paths``, external access off, configuration locked), and one cursor on it that every
statement of the session runs on. Temporary objects belong to that cursor, so nothing a session
creates is seen by a query, by another session, or by anything after the ``with`` block: closing
the session closes the database (and removes its spill folder).

The statement allow-list of a query is widened by exactly what scratch work needs, and no more:

* ``SELECT`` (checked as `Snapshot.query` checks it);
* ``CREATE [OR REPLACE] TEMP TABLE|VIEW [IF NOT EXISTS] name [(columns)] AS <SELECT>``, and
  ``CREATE TEMP TABLE name (column type, ...)`` (no ``DEFAULT``, ``CHECK`` or generated columns:
  they hold expressions the checks could not see);
* ``INSERT INTO name [(columns)] [BY NAME|BY POSITION] <SELECT or VALUES>``;
* ``DROP TABLE|VIEW [IF EXISTS] name``.

Names are single, unqualified identifiers, so a statement can reach only the session's temporary
schema, never a library schema holding the pinned views. Every embedded SELECT passes the query
checks (refused functions, planning limit). COPY, ATTACH, SET, PRAGMA, INSTALL/LOAD, EXPORT,
non-temporary CREATE, UPDATE, DELETE, ALTER, transactions ... are refused as in a query, and the
database settings refuse file access at run time whatever the statement.
"""

from __future__ import annotations

import functools
import re
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final, TypeVar

import duckdb

from wrdsvault._query import (
    _SELECT_NODE,
    MAX_SELECT_BLOCKS,
    MAX_SQL_CHARS,
    Params,
    PinnedConnection,
    _Deadline,
    _statement_type,
    check_params,
    check_timeout,
    fetch_arrow,
    fetch_df,
    query_error,
)
from wrdsvault.errors import QueryRejectedError, QueryTimeoutError

if TYPE_CHECKING:
    from contextlib import AbstractContextManager

    import pandas as pd
    import pyarrow as pa

    from wrdsvault.snapshot import Snapshot

__all__ = ["Session"]

T = TypeVar("T")

_WORD: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_KEYWORD: Final = duckdb.token_type.keyword
_IDENTIFIER: Final = duckdb.token_type.identifier
_COMMENT: Final = duckdb.token_type.comment

#: Keywords a column definition of ``CREATE TEMP TABLE t (...)`` may not hold: each introduces an
#: expression (a default, a check, a generated column) that no SELECT check would see.
_EXPRESSION_KEYWORDS: Final = frozenset(
    {"default", "check", "generated", "as", "references", "collate", "using"}
)
_ALLOWED: Final = "a session runs SELECT, CREATE TEMP TABLE/VIEW, INSERT INTO and DROP TABLE/VIEW"


class _Tokens:
    """The tokens of one statement (comments and the final ``;`` left out), as lower-case text
    with their kind and start offset, and a cursor over them."""

    def __init__(self, text: str) -> None:
        raw = duckdb.tokenize(text)
        ends = [start for start, _ in raw[1:]] + [len(text)]
        self.text = text
        self.items = [
            (text[start:end].strip(), kind, start)
            for (start, kind), end in zip(raw, ends, strict=True)
            if kind != _COMMENT
        ]
        while self.items and self.items[-1][0] == ";":
            self.items.pop()
        self.pos = 0

    def peek(self, *words: str) -> bool:
        """The next tokens are ``words`` (keywords or operators, any case)."""
        window = self.items[self.pos : self.pos + len(words)]
        return len(window) == len(words) and all(
            tok.lower() == word for (tok, _, _), word in zip(window, words, strict=True)
        )

    def take(self, *words: str) -> bool:
        """Consume ``words`` if they come next."""
        if self.peek(*words):
            self.pos += len(words)
            return True
        return False

    def name(self, what: str) -> str:
        """Consume one unqualified identifier (a temporary object's name)."""
        if self.pos < len(self.items):
            tok, kind, _ = self.items[self.pos]
            after = self.items[self.pos + 1][0] if self.pos + 1 < len(self.items) else ""
            # A plain word DuckDB calls a keyword (data, year, names) names a table as well.
            plain = kind == _KEYWORD and _WORD.fullmatch(tok) is not None
            if (kind == _IDENTIFIER or plain) and after != ".":
                self.pos += 1
                return tok
        raise QueryRejectedError(
            statement_type=what,
            reason="name the temporary table or view with one unqualified name (no library or "
            "schema: a session may not touch the snapshot's tables)",
        )

    def parenthesised(self) -> list[tuple[str, Any, int]] | None:
        """Consume a balanced ``( ... )`` if one comes next; return the tokens inside it."""
        if not self.peek("("):
            return None
        depth = 0
        for i in range(self.pos, len(self.items)):
            tok = self.items[i][0]
            depth += (tok == "(") - (tok == ")")
            if depth == 0:
                inside = self.items[self.pos + 1 : i]
                self.pos = i + 1
                return inside
        return None  # unbalanced: DuckDB's parser would not have split it off

    def rest(self) -> str:
        """The statement's text from the next token on (empty at the end)."""
        if self.pos >= len(self.items):
            return ""
        return self.text[self.items[self.pos][2] :]

    @property
    def done(self) -> bool:
        return self.pos >= len(self.items)


def _refuse(kind: str, reason: str) -> QueryRejectedError:
    return QueryRejectedError(statement_type=kind, reason=reason)


class Session:
    """A sandboxed scratch session on one snapshot. Get one from `Snapshot.session`.

    Use it in a ``with`` block (or call `close`): temporary tables and views live until then,
    in memory, seen by this session only. Not for use by several threads at once (calls are
    serialised).
    """

    def __init__(self, snapshot: Snapshot) -> None:
        self._snapshot = snapshot
        self._lock = threading.Lock()
        self._closed = False
        #: SELECT blocks each temporary view plans into wherever it is named (a view is inlined
        #: at every use, so the planning limit must count its body there, as for a NOT
        #: MATERIALIZED CTE).
        self._view_blocks: dict[str, int] = {}
        self._pending: dict[str, int | None] = {}
        # Keep the snapshot's own connection in use: its reader lease stays held (gc keeps every
        # pinned file) until the session ends, even if the snapshot is closed meanwhile.
        self._outer = snapshot._acquire()
        self._cursor_cm: AbstractContextManager[duckdb.DuckDBPyConnection] | None = None
        try:
            # Every view now: a session's names are also its own temporary tables, so which
            # views a statement reads cannot be told from its names alone.
            self._db: PinnedConnection = snapshot._pinned(lazy=False)
            try:
                self._cursor_cm = self._db._cursor()
                self._cur = self._cursor_cm.__enter__()
            except BaseException:
                self._db.close()
                raise
        except BaseException:
            self._outer.release()
            raise

    # -- life cycle ----------------------------------------------------------------------------

    def close(self) -> None:
        """Drop every temporary table and view and close the session's database. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                if self._cursor_cm is not None:
                    self._cursor_cm.__exit__(None, None, None)
                self._db.close()
            finally:
                self._outer.release()

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"Session(snapshot={self._snapshot.id!r}, {state})"

    # -- statements ----------------------------------------------------------------------------

    def execute(self, sql: str, params: Params = None, *, timeout_s: float | None = None) -> None:
        """Run one or more statements (``;``-separated), all or none.

        Every statement is checked before any runs; they then run in one transaction, so a
        failing statement leaves the session as it was before the call.

        Args:
            sql: SELECT, ``CREATE TEMP TABLE|VIEW``, ``INSERT INTO``, ``DROP TABLE|VIEW``
                statements (DuckDB dialect).
            params: values for ``?``/``$1`` placeholders; only with a single statement.
            timeout_s: interrupt the call after this many seconds (default: the snapshot's).

        Raises:
            QueryRejectedError: a statement a session does not run (COPY, ATTACH, SET, a
                CREATE that is not TEMP, a qualified name, ...); nothing ran.
            QueryError: DuckDB could not run a statement (syntax, unknown table, a file
                outside the snapshot); nothing the call did is kept.
            QueryTimeoutError: it ran past ``timeout_s``; nothing the call did is kept.
        """
        check_params(params)
        limit = self._snapshot._timeout(timeout_s)
        with self._lock:
            cur = self._open_cursor()
            self._pending = {}
            texts = self._check_script(cur, sql)
            if params is not None and len(texts) != 1:
                msg = "params= needs exactly one statement; run the statements one at a time"
                raise TypeError(msg)
            cur.begin()
            try:
                for text in texts:
                    self._guarded(cur, text, limit, functools.partial(_execute, cur, text, params))
            except BaseException:
                cur.rollback()
                raise
            cur.commit()
            for name, blocks in self._pending.items():
                if blocks is None:
                    self._view_blocks.pop(name, None)
                else:
                    self._view_blocks[name] = blocks

    def query(
        self, sql: str, params: Params = None, *, timeout_s: float | None = None
    ) -> pd.DataFrame:
        """Run one SELECT (over the snapshot's tables and this session's temporary ones) and
        return a pandas DataFrame; as `Snapshot.query`."""
        return self._select(sql, params, timeout_s, fetch_df)

    def arrow(self, sql: str, params: Params = None, *, timeout_s: float | None = None) -> pa.Table:
        """Like `query`, returning a pyarrow Table."""
        return self._select(sql, params, timeout_s, fetch_arrow)

    def pl(self, sql: str, params: Params = None, *, timeout_s: float | None = None) -> Any:
        """Like `query`, returning a polars DataFrame (the extra ``polars``)."""
        from wrdsvault._polars import from_arrow

        return from_arrow(self.arrow(sql, params, timeout_s=timeout_s))

    # -- internals -----------------------------------------------------------------------------

    def _open_cursor(self) -> duckdb.DuckDBPyConnection:
        if self._closed:
            raise _refuse(
                "CLOSED",
                "the session is closed and its temporary tables are gone; open a new one with "
                "snapshot.session()",
            )
        return self._cur

    def _select(
        self,
        sql: str,
        params: Params,
        timeout_s: float | None,
        fetch: Callable[[duckdb.DuckDBPyRelation], T],
    ) -> T:
        check_params(params)
        limit = self._snapshot._timeout(timeout_s)
        with self._lock:
            cur = self._open_cursor()
            self._pending = {}
            text = self._check_select(cur, sql)

            def run() -> T:
                rel = cur.sql(text, params=params) if params is not None else cur.sql(text)
                return fetch(rel)

            return self._guarded(cur, text, limit, run)

    def _guarded(
        self,
        cur: duckdb.DuckDBPyConnection,
        text: str,
        limit: float | None,
        run: Callable[[], T],
    ) -> T:
        """``run()`` under the time limit, DuckDB's errors turned into the query errors."""
        with _Deadline(cur, check_timeout(limit)):
            try:
                return run()
            except duckdb.InterruptException as exc:
                raise QueryTimeoutError(timeout_s=limit or 0.0) from exc
            except duckdb.Error as exc:
                reason = self._db._advise(str(exc), text)
                raise query_error(cur, exc, text, reason) from exc

    def _check_script(self, cur: duckdb.DuckDBPyConnection, sql: str) -> list[str]:
        """The text of each statement of ``sql``, each checked; QueryRejectedError otherwise."""
        given: object = sql
        if not isinstance(given, str):
            msg = f"sql must be a str, not {type(given).__name__}"
            raise TypeError(msg)
        if len(sql) > MAX_SQL_CHARS:
            raise _refuse("TOO_LONG", f"{len(sql):,} characters; at most {MAX_SQL_CHARS:,}")
        try:
            statements = cur.extract_statements(sql)
        except duckdb.Error as exc:
            raise query_error(cur, exc, sql, str(exc)) from exc
        if not statements:
            raise _refuse("EMPTY", "no statement given")
        texts = []
        for stmt in statements:
            kind = _statement_type(stmt)
            text = str(stmt.query)
            if kind == "CREATE":
                self._check_create(cur, _Tokens(text))
            elif kind == "INSERT":
                self._check_insert(cur, _Tokens(text))
            elif kind == "DROP":
                self._check_drop(_Tokens(text))
            else:  # a SELECT passes as in a query; anything else is refused as a query refuses it
                self._check_select(cur, text)
            texts.append(text)
        return texts

    def _check_body(self, cur: duckdb.DuckDBPyConnection, kind: str, body: str) -> int:
        """``body`` (what follows AS, or an INSERT's rows) is one SELECT passing the checks;
        return the SELECT blocks it plans into."""
        if not body.strip():
            raise _refuse(kind, "the statement needs a SELECT (or VALUES) to take its rows from")
        return self._blocks(cur, self._db._check(cur, body))

    def _check_select(self, cur: duckdb.DuckDBPyConnection, sql: str) -> str:
        """The one SELECT of ``sql``, checked as a query's, temporary views counted inlined."""
        text = self._db._check(cur, sql)
        self._blocks(cur, text)
        return text

    def _blocks(self, cur: duckdb.DuckDBPyConnection, text: str) -> int:
        """SELECT blocks ``text`` plans into, each temporary view it names counted with its
        body; refuse it above the planning limit (as `check_shape` does for one query)."""
        ast, tables = cur.execute(
            "SELECT j::VARCHAR, json_extract_string(j, '$..table_name')"
            " FROM (SELECT json_serialize_sql($1)::JSON AS j)",
            [text],
        ).fetchall()[0]
        known = {**self._view_blocks, **self._pending}
        blocks = str(ast).count(_SELECT_NODE)
        for ref in tables or []:
            blocks += known.get(str(ref).lower()) or 0
            if blocks > MAX_SELECT_BLOCKS:
                raise _refuse(
                    "TOO_COMPLEX",
                    f"over {MAX_SELECT_BLOCKS:,} SELECT blocks once the temporary views it names "
                    "are expanded (a view is planned again at every use); planning cannot be "
                    "interrupted. Materialise a view as a TEMP TABLE instead",
                )
        return blocks

    def _check_create(self, cur: duckdb.DuckDBPyConnection, t: _Tokens) -> None:
        t.take("create")
        t.take("or", "replace")
        if not (t.take("temp") or t.take("temporary")):
            raise _refuse(
                "CREATE",
                "a session creates only temporary tables and views (CREATE TEMP TABLE name AS "
                f"SELECT ..., CREATE TEMP VIEW name AS SELECT ...); {_ALLOWED}",
            )
        if t.take("view"):
            is_table = False
        elif t.take("table"):
            is_table = True
        else:
            raise _refuse("CREATE", f"only TEMP TABLE and TEMP VIEW can be created; {_ALLOWED}")
        t.take("if", "not", "exists")
        name = _unquote(t.name("CREATE"))
        columns = t.parenthesised()
        if t.take("as"):
            if not _names_only(columns):
                raise _refuse("CREATE", "the column list before AS holds only column names")
            blocks = self._check_body(cur, "CREATE", t.rest())
            self._pending[name] = None if is_table else blocks
            return
        if not is_table or columns is None or not t.done:
            raise _refuse(
                "CREATE", "expected CREATE TEMP TABLE|VIEW name [(columns)] AS SELECT ..."
            )
        self._pending[name] = None
        bad = sorted({tok.lower() for tok, k, _ in columns if k == _KEYWORD} & _EXPRESSION_KEYWORDS)
        if bad:
            raise _refuse(
                "CREATE",
                f"column definitions with {', '.join(w.upper() for w in bad)} are not allowed in "
                "a session (they hold expressions); give names and types only, then INSERT",
            )

    def _check_drop(self, t: _Tokens) -> None:
        t.take("drop")
        if not (t.take("table") or t.take("view")):
            raise _refuse("DROP", "a session drops only its temporary tables and views")
        t.take("if", "exists")
        name = _unquote(t.name("DROP"))
        if not t.done:
            raise _refuse("DROP", "expected DROP TABLE|VIEW [IF EXISTS] name")
        self._pending[name] = None

    def _check_insert(self, cur: duckdb.DuckDBPyConnection, t: _Tokens) -> None:
        t.take("insert")
        if not t.take("into"):
            raise _refuse("INSERT", "expected INSERT INTO name [(columns)] SELECT ... | VALUES ...")
        t.name("INSERT")
        columns = t.parenthesised()
        if not _names_only(columns):
            raise _refuse("INSERT", "the column list holds only column names")
        t.take("by", "name") or t.take("by", "position")
        self._check_body(cur, "INSERT", t.rest())


def _unquote(name: str) -> str:
    """A name as DuckDB's catalog compares it: unquoted, case-folded."""
    if len(name) >= 2 and name[0] == name[-1] == '"':
        name = name[1:-1].replace('""', '"')
    return name.lower()


def _execute(cur: duckdb.DuckDBPyConnection, text: str, params: Params) -> None:
    if params is None:
        cur.execute(text)
    else:
        cur.execute(text, params)


def _names_only(columns: list[tuple[str, Any, int]] | None) -> bool:
    """A column list (or none) of plain column names."""
    return columns is None or all(k == _IDENTIFIER or tok == "," for tok, k, _ in columns)
