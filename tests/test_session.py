"""Scratch sessions (``snap.session()``) and polars results (``snap.pl``).

A session widens the query allow-list by temporary tables and views only: the hostile corpus of
the query sandbox goes through ``s.query`` and ``s.execute`` (and inside CREATE TEMP TABLE ... AS)
and is refused for the same reasons; the vault stays byte-identical. Temporary objects are seen
by their session only and are gone after it.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Iterator

import pyarrow as pa
import pytest

from _helpers.disk import entry_digests
from test_query_sandbox import (
    CORPUS,
    CORPUS_IDS,
    RUNAWAY,
    Case,
    Sandbox,
    assert_refused,
    pristine,  # noqa: F401 - a fixture
    sbx,  # noqa: F401 - a fixture
)
from wrdsvault import QueryError, QueryRejectedError, QueryTimeoutError, Snapshot
from wrdsvault._query import MAX_SELECT_BLOCKS
from wrdsvault._session import Session


@pytest.fixture(scope="module")
def session(sbx: Sandbox) -> Iterator[Session]:  # noqa: F811 - the imported fixture
    """One session on the latest snapshot, shared by the corpus tests."""
    with sbx.snap.session() as s:
        yield s


def _expect(case: Case) -> type[Exception] | tuple[type[Exception], ...]:
    if case.big:
        return (QueryRejectedError, QueryError)
    return QueryRejectedError if case.kind == "rejected" else QueryError


@pytest.mark.parametrize("case", CORPUS, ids=CORPUS_IDS)
def test_hostile_input_is_refused_in_a_session(
    sbx: Sandbox,  # noqa: F811
    pristine: dict[str, str],  # noqa: F811
    session: Session,
    case: Case,
) -> None:
    """Each hostile input is refused by s.query and s.execute for the reason a query gets."""
    sql = case.text(sbx.fmt)
    with pytest.raises(_expect(case)) as info:
        session.query(sql)
    assert_refused(info.value, case)
    if case.big:
        return  # parsing 1 MB twice more adds seconds and nothing new
    with pytest.raises(_expect(case)) as info:
        session.execute(sql)
    if case.expect == "MULTIPLE":  # a session runs several statements: the bad one is named
        assert type(info.value) is QueryRejectedError
        assert info.value.statement_type not in ("SELECT", "MULTIPLE")
    else:
        assert_refused(info.value, case)


@pytest.mark.parametrize(
    "case",
    [c for c in CORPUS if not c.big and c.sql.lower().startswith(("select", "from", "with"))],
    ids=lambda c: c.id,
)
def test_hostile_select_inside_create_and_insert_is_refused(
    sbx: Sandbox,  # noqa: F811
    pristine: dict[str, str],  # noqa: F811
    session: Session,
    case: Case,
) -> None:
    """A hostile SELECT as the body of CREATE TEMP TABLE/VIEW ... AS or INSERT INTO is refused
    as it is on its own, and leaves no table behind."""
    sql = case.text(sbx.fmt)
    session.execute("create or replace temp table sink as select 1 as x where false")
    for wrapped in (
        f"create temp table evil as {sql}",
        f"create temp view evil as {sql}",
        f"insert into sink {sql}"
        if ";" in sql
        else f"insert into sink select count(*) from ({sql})",
    ):
        try:
            session.execute(wrapped)
        except QueryRejectedError as exc:
            assert case.kind == "rejected"
            if case.expect == "MULTIPLE":  # the statement after the first is named
                assert exc.statement_type not in ("SELECT", "MULTIPLE")
            else:
                assert exc.statement_type == case.expect
        except QueryError as exc:
            if case.kind == "error":  # DuckDB refuses it at run time
                assert case.expect in exc.reason
            else:  # DuckDB's parser refuses it first (a PIVOT without IN inside a view)
                assert "Parser Error" in exc.reason
        else:  # a view is not run when created (sniff_csv): it is refused when it is used
            assert wrapped.startswith("create temp view") and case.kind == "error", wrapped
            with pytest.raises(QueryError) as info:
                session.query("select * from evil")
            assert case.expect in info.value.reason
            session.execute("drop view evil")
        with pytest.raises(QueryError, match="does not exist"):
            session.query("select * from evil")
    assert session.query("select count(*) as n from sink")["n"][0] == 0


@pytest.mark.parametrize(
    "sql",
    [
        "create table t as select 1 as x",  # not TEMP: would outlive the statement's scope
        "create or replace view crsp.msf as select 1 as permno",
        "create temp table crsp.msf as select 1 as permno",  # qualified: a library schema
        'create temp table "memory"."main"."t" as select 1',
        "create temp table t (a integer default 1)",
        "create temp table t (a integer check (a > 0))",
        "create temp table t (a integer, b integer generated always as (a + 1))",
        "create temp macro m(x) as x + 1",
        "create temp sequence s",
        "insert into crsp.msf values (1)",
        "insert into t default values",
        "update t set x = 1",
        "delete from t",
        "alter table t rename to u",
        "drop view crsp.msf",
        "drop schema crsp cascade",
        "begin transaction",
        "select 1; set threads = 1",
        "select 1; attach ':memory:' as m",
    ],
)
def test_statements_outside_the_session_allow_list_are_refused(session: Session, sql: str) -> None:
    """Only unqualified TEMP tables and views, INSERT INTO them and DROP of them pass."""
    with pytest.raises((QueryRejectedError, QueryError)):
        session.execute(sql)


def test_vault_is_byte_identical_after_the_session_corpus(
    sbx: Sandbox,  # noqa: F811
    pristine: dict[str, str],  # noqa: F811
    session: Session,
) -> None:
    """After every hostile statement (this module's tests run first), not a byte changed."""
    assert entry_digests(sbx.base) == pristine


def test_temp_tables_views_and_inserts_work_and_stay_private(sbx: Sandbox) -> None:  # noqa: F811
    """Several statements, CREATE TEMP TABLE AS, CREATE TEMP VIEW, INSERT: the session sees
    them; another session, the snapshot's queries and anything after the block do not."""
    expected = sbx.snap.query("select count(distinct permno) as n from crsp.msf")["n"][0]
    with sbx.snap.session() as s:
        s.execute(
            """
            create temp table firms as select permno, avg(ret) as r from crsp.msf group by 1;
            create temp view winners as select * from firms where r > 0;
            insert into firms values (-1, 1.0);
            insert into firms (permno, r) select -2, 2.0;
            create temp table plain (a integer, b varchar);
            """
        )
        s.execute("insert into plain values ($1, $2)", [7, "x"])
        s.execute("create temp table data as select 1 as year; insert into data values (2)")
        assert s.query("select sum(year) as n from data")["n"][0] == 3  # keywords as names
        assert s.query("select count(*) as n from firms")["n"][0] == expected + 2
        assert s.arrow("select * from winners where permno < 0").num_rows == 2
        assert s.query("select * from plain").to_dict("records") == [{"a": 7, "b": "x"}]
        with sbx.snap.session() as other:
            for name in ("firms", "winners", "plain"):
                with pytest.raises(QueryError, match="does not exist"):
                    other.query(f"select * from {name}")
        with pytest.raises(QueryError, match="does not exist"):
            sbx.snap.query("select * from firms")
        s.execute("drop view winners; drop table plain")
        with pytest.raises(QueryError, match="does not exist"):
            s.query("select * from winners")
    with pytest.raises(QueryRejectedError, match="closed"):
        s.query("select * from firms")
    with sbx.snap.session() as again, pytest.raises(QueryError, match="does not exist"):
        again.query("select * from firms")


def test_a_session_reads_its_pinned_snapshot(sbx: Sandbox) -> None:  # noqa: F811
    """A session on the older snapshot reads that snapshot's rows, not the latest one's."""
    sql = "select sum(ret) as s, count(*) as n from crsp.msf"
    old, new = sbx.v1.query(sql), sbx.snap.query(sql)
    assert old.to_dict("records") != new.to_dict("records")
    with sbx.v1.session() as s:
        s.execute(f"create temp table t as {sql}")
        assert s.query("select * from t").to_dict("records") == old.to_dict("records")
        with pytest.raises(QueryError, match="Permission Error"):
            s.execute(f"create temp table newer as select * from read_parquet('{sbx.newer}')")


def test_a_failing_script_changes_nothing(sbx: Sandbox) -> None:  # noqa: F811
    """Statements of one execute() run all or none: a failure undoes the ones before it."""
    with sbx.snap.session() as s:
        s.execute("create temp table kept as select 1 as x")
        with pytest.raises(QueryError, match="nosuch"):
            s.execute(
                "insert into kept values (2); create temp table gone as select 1; from nosuch"
            )
        assert s.query("select x from kept")["x"].tolist() == [1]
        with pytest.raises(QueryError, match="does not exist"):
            s.query("select * from gone")
        with pytest.raises(QueryRejectedError, match="COPY"):  # checked before anything runs
            s.execute("insert into kept values (3); copy kept to 'x.csv'")
        assert s.query("select x from kept")["x"].tolist() == [1]


def test_planning_limit_counts_temporary_views_where_they_are_used(
    sbx: Sandbox,  # noqa: F811
) -> None:
    """A temporary view is planned again at every use: its blocks count there, so views
    cannot stack past the planning limit; a TEMP TABLE (materialised) counts once."""
    half = MAX_SELECT_BLOCKS // 2 + 10
    body = " union all ".join(f"select {i} as x" for i in range(half))
    with sbx.snap.session() as s:
        s.execute(f"create temp view v as {body}")
        assert s.query("select count(*) as n from v")["n"][0] == half
        for sql in (
            "select count(*) from v a, v b",
            "create temp view w as select * from v union all select * from v",
            "insert into never select * from v union all select * from v",
        ):
            with pytest.raises(QueryRejectedError) as err:
                s.execute(sql)
            assert err.value.statement_type == "TOO_COMPLEX"
        s.execute(f"create temp table m as {body}")
        assert s.query("select count(*) as n from m a, m b")["n"][0] == half * half


def test_runaway_statement_in_a_session_is_interrupted(sbx: Sandbox) -> None:  # noqa: F811
    """A statement past its time limit raises QueryTimeoutError; the session stays usable."""
    with sbx.snap.session() as s:
        with pytest.raises(QueryTimeoutError):
            s.execute(f"create temp table slow as {RUNAWAY}", timeout_s=0.3)
        with pytest.raises(QueryTimeoutError):
            s.query(RUNAWAY, timeout_s=0.3)
        assert s.query("select 42 as x")["x"][0] == 42


def test_session_keeps_the_snapshot_leased_until_it_ends(sbx: Sandbox) -> None:  # noqa: F811
    """Closing the snapshot while a session runs keeps its reader lease until the session ends."""
    snap: Snapshot = sbx.wh.snapshot(sbx.snap.id)
    s = snap.session()
    snap.close()
    assert snap._lease is None  # handed over: released when the last user ends
    leases = list((sbx.root / "leases").iterdir())
    s.execute("create temp table t as select count(*) as n from crsp.msf")
    assert s.query("select n from t")["n"][0] > 0
    s.close()
    assert len(list((sbx.root / "leases").iterdir())) == len(leases) - 1


# -- polars ----------------------------------------------------------------------------------


def test_pl_returns_the_rows_of_arrow_as_a_polars_frame(sbx: Sandbox) -> None:  # noqa: F811
    """snap.pl, wh.pl, LazyResult.pl and Session.pl give the Arrow result as polars."""
    pl = pytest.importorskip("polars")
    sql = "select permno, date, ret, null::bigint as missing from crsp.msf order by 1, 2"
    table = sbx.snap.arrow(sql)
    frames = [sbx.snap.pl(sql), sbx.snap.sql(sql).pl(), sbx.wh.pl(sql)]
    with sbx.snap.session() as s:
        frames.append(s.pl(sql))
    for frame in frames:
        assert isinstance(frame, pl.DataFrame)
        assert frame.to_arrow().cast(table.schema).equals(table)
        assert frame.schema["missing"] == pl.Int64  # integers with NULLs stay integers


def test_pl_shares_the_arrow_buffers(sbx: Sandbox) -> None:  # noqa: F811
    """polars takes the Arrow columns without copying them (a numeric column's data buffer
    is the same memory)."""
    pl = pytest.importorskip("polars")
    from wrdsvault._polars import from_arrow

    table = pa.table({"x": pa.array(range(1000), type=pa.int64())})
    frame = from_arrow(table)
    assert isinstance(frame, pl.DataFrame)
    ours = table.column("x").chunk(0).buffers()[1].address
    theirs = frame.to_arrow().column("x").chunk(0).buffers()[1].address
    assert ours == theirs


BLOCK_POLARS = textwrap.dedent(
    """
    import sys

    class NoPolars:
        def find_spec(self, name, path=None, target=None):
            if name == "polars" or name.startswith("polars."):
                raise ImportError("polars is blocked for this test")
            return None

    sys.meta_path.insert(0, NoPolars())
    import wrdsvault
    assert "polars" not in sys.modules
    wh = wrdsvault.Warehouse(sys.argv[1])
    snap = wh.snapshot()
    with snap.session() as s:
        calls = [
            lambda: snap.pl("select 1"),
            lambda: wh.pl("select 1"),
            lambda: snap.sql("select 1").pl(),
            lambda: s.pl("select 1"),
        ]
        for call in calls:
            try:
                call()
            except wrdsvault.MissingExtraError as exc:
                assert isinstance(exc, ImportError)
                assert (exc.module, exc.extra) == ("polars", "polars")
                print(exc)
            else:
                raise SystemExit("no MissingExtraError")
    print(snap.query("select 7 as x")["x"][0])
    """
)


def test_pl_without_polars_names_the_extra(sbx: Sandbox) -> None:  # noqa: F811
    """With polars not importable, every .pl() raises MissingExtraError (an ImportError) whose
    message says pip install 'wrdsvault[polars]'; queries still work."""
    proc = subprocess.run(
        [sys.executable, "-c", BLOCK_POLARS, str(sbx.root)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == 5
    assert all("pip install 'wrdsvault[polars]'" in line for line in lines[:4])
    assert lines[4] == "7"


def test_integer_columns_with_nulls_are_nullable_integers(sbx: Sandbox) -> None:  # noqa: F811
    """snap.query keeps integers with NULLs exact (pandas Int32/Int64 and pd.NA, not float64
    and NaN); without NULLs they are plain int32/int64 (docs/query.md)."""
    import pandas as pd

    sql = "select * from (values (1::INTEGER, 10001::BIGINT), (NULL, NULL)) t(a, b)"
    df = sbx.snap.query(sql)
    assert (str(df.dtypes["a"]), str(df.dtypes["b"])) == ("Int32", "Int64")
    assert df["b"][0] == 10001 and df["b"][1] is pd.NA
    plain = sbx.snap.query("select 1::INTEGER as a, (2**60)::BIGINT as b")
    assert (str(plain.dtypes["a"]), str(plain.dtypes["b"])) == ("int32", "int64")
    assert plain["b"][0] == 2**60  # exact: float64 would round it
