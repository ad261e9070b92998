"""PostgreSQL SQL on a snapshot (``dialect="postgres"``), the query hints, `wrdsvault.Connection`.

Real DuckDB on a real vault synced from SampleSource; the comparison with ``wrds`` itself is in
tests/sources/test_compat_replica.py (it needs PostgreSQL).
"""

from __future__ import annotations

import builtins
import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from pandas.testing import assert_frame_equal

import wrdsvault
from wrdsvault import (
    InvalidValueError,
    MissingExtraError,
    QueryError,
    QueryRejectedError,
    SqlDialectError,
    UnknownDatasetError,
)
from wrdsvault._pgsql import iso_date, translate
from wrdsvault.sources import SampleSource

pytest.importorskip("sqlglot")

DATASETS = ["crsp.msf", "comp.funda", "crsp.msenames", "crsp.ccmxpf_lnkhist"]


@pytest.fixture(scope="module")
def vault_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A vault with a few sample tables (module-wide; tests only read it)."""
    root = tmp_path_factory.mktemp("pg") / "vault"
    wh = wrdsvault.Warehouse(
        root, source=SampleSource(seed=0, years=range(2021, 2024), n_securities=30)
    )
    try:
        wh.sync(DATASETS)
    finally:
        wh.close()
    return root


@pytest.fixture
def snap(vault_path: Path) -> Iterator[wrdsvault.Snapshot]:
    """The latest snapshot of the module's vault."""
    wh = wrdsvault.Warehouse(vault_path, create=False)
    s = wh.snapshot()
    yield s
    s.close()
    wh.close()


def pg(snap: wrdsvault.Snapshot, sql: str, params: Any = None) -> pd.DataFrame:
    return snap.query(sql, params, dialect="postgres")


# -- translation ----------------------------------------------------------------------------------


def test_mdy_date_literals_select_the_same_rows_as_iso(snap: wrdsvault.Snapshot) -> None:
    """'01/01/2022' (WRDS's habit) selects what DATE '2022-01-01' selects; DuckDB alone fails."""
    iso = snap.query(
        "select permno, date from crsp.msf where date between DATE '2022-01-01' "
        "and DATE '2022-12-31' order by all"
    )
    mdy = pg(
        snap,
        "select permno, date from crsp.msf where date between '01/01/2022' and '12/31/2022' "
        "order by permno, date",
    )
    assert len(iso) > 0
    assert_frame_equal(iso, mdy)
    for form in ("'2022-01-01'::date", "date '2022-01-01'", "'January 1, 2022'::date"):
        n = pg(snap, f"select count(*) as n from crsp.msf where date >= {form}")["n"][0]
        assert n == (iso["date"] >= "2022-01-01").sum() + len(
            snap.query("select 1 from crsp.msf where date > DATE '2022-12-31'")
        )
    with pytest.raises(QueryError) as info:
        snap.query("select count(*) from crsp.msf where date >= '01/01/2022'")
    assert info.value.kind == "date"


def test_iso_date_reads_postgres_forms_and_leaves_others() -> None:
    """The date forms PostgreSQL (MDY) reads become ISO; text that is not a date stays."""
    assert iso_date("01/02/1960", loose=False) == "1960-01-02"
    assert iso_date("1/2/1960 13:45", loose=False) == "1960-01-02 13:45"
    assert iso_date("12-31-1999", loose=False) == "1999-12-31"
    assert iso_date("19600102", loose=False) is None  # a CUSIP-like string outside a cast
    assert iso_date("19600102", loose=True) == "1960-01-02"
    assert iso_date("02JAN1960", loose=True) == "1960-01-02"
    assert iso_date("13/01/1960", loose=False) is None  # no 13th month
    assert iso_date("IBM", loose=True) is None


def test_keyword_columns_casts_and_functions(snap: wrdsvault.Snapshot) -> None:
    """Bare `at`, ::casts, date_trunc, intervals, ILIKE, to_char, extract all run translated."""
    out = pg(
        snap,
        "select gvkey, datadate, at, at::int as at_int, "
        "date_trunc('month', datadate)::date as m, "
        "(datadate + interval '1 month' - interval '1 day')::date as e, "
        "to_char(datadate, 'YYYYMM') as ym, extract(year from datadate) as y "
        "from comp.funda where conm ilike '%' and at > 0 order by gvkey, datadate",
    )
    funda = snap.query('select gvkey, datadate, "at" from comp.funda where "at" > 0 order by all')
    assert list(out["at"]) == list(funda["at"])
    first = out.iloc[0]
    assert first["ym"] == first["datadate"].strftime("%Y%m")
    assert first["y"] == first["datadate"].year
    assert first["m"] == first["datadate"].replace(day=1)


def test_integer_division_stays_integer(snap: wrdsvault.Snapshot) -> None:
    """PostgreSQL's int / int truncates; translated, it does in DuckDB too (7/2 = 3, -7/2 = -3)."""
    out = pg(
        snap,
        "select 7/2 as a, -7/2 as b, permno/1000 as c, permno as p, 7.0/2 as d "
        "from crsp.msf limit 1",
    )
    assert (out["a"][0], out["b"][0], out["d"][0]) == (3, -3, 3.5)
    assert out["c"][0] == out["p"][0] // 1000


def test_psycopg2_parameters_are_bound(snap: wrdsvault.Snapshot) -> None:
    """%(name)s (a tuple for IN, an MDY date string) and %s are bound values, never text."""
    permnos = tuple(int(p) for p in snap.query("select distinct permno from crsp.msf")["permno"])
    some = permnos[:2]
    named = pg(
        snap,
        "select distinct permno from crsp.msf where permno in %(p)s and date >= %(d)s "
        "order by permno",
        {"p": some, "d": "06/30/2022"},
    )
    assert tuple(named["permno"]) == tuple(sorted(some))
    positional = pg(
        snap, "select count(*) as n from crsp.msf where permno = %s limit %s", [some[0], 5]
    )
    assert positional["n"][0] > 0
    evil = pg(
        snap,
        "select count(*) as n from crsp.msenames where comnam = %(x)s",
        {"x": "' or 1=1 --"},
    )
    assert evil["n"][0] == 0
    text, bound = translate("select '%s' as a, x from t where y = %s", [1])
    assert "'%s'" in text and bound == {"wrdsvault_p0": 1}


def test_limit_offset_and_dialect_on_every_entry(
    snap: wrdsvault.Snapshot, vault_path: Path
) -> None:
    """LIMIT/OFFSET; dialect="postgres" works on snap.query/arrow/sql/pl and wh.query/arrow/pl."""
    sql = "select permno, date from crsp.msf order by permno, date limit 5 offset 3"
    want = snap.query(sql)
    assert_frame_equal(pg(snap, sql), want)
    mdy = "select permno, date from crsp.msf where date > '12/31/2022' order by permno, date"
    assert snap.arrow(mdy, dialect="postgres").num_rows > 0
    assert len(snap.sql(mdy, dialect="postgres").df()) > 0
    with wrdsvault.Warehouse(vault_path, create=False) as wh:
        assert_frame_equal(wh.query(mdy, dialect="postgres"), pg(snap, mdy))
        assert wh.arrow(mdy, dialect="postgres").num_rows > 0
        if importlib.util.find_spec("polars") is not None:
            pl_rows = wh.pl(mdy, dialect="postgres").height
            assert pl_rows == snap.pl(mdy, dialect="postgres").height > 0
    with pytest.raises(InvalidValueError):
        snap.query("select 1", dialect="mysql")


def test_the_sandbox_judges_the_translated_statement(snap: wrdsvault.Snapshot) -> None:
    """Translation comes first: a refused statement is still refused, whatever its dialect."""
    for sql in (
        "select current_setting('temp_directory')",
        "copy (select 1) to '/tmp/x.csv'",
        "select 1; select 2",
        "select * from read_csv('/etc/passwd')",
    ):
        with pytest.raises((QueryRejectedError, QueryError)):
            pg(snap, sql)


def test_untranslatable_postgres_names_the_difference(snap: wrdsvault.Snapshot) -> None:
    """PostgreSQL the translator cannot handle: SqlDialectError saying so, with the fragment."""
    with pytest.raises(SqlDialectError) as info:
        pg(snap, "select permno from crsp.msf for update")
    err = info.value
    assert "PostgreSQL" in str(err) and "DuckDB" in str(err)
    assert "for update" in err.fragment.lower()
    assert isinstance(err, QueryError)
    with pytest.raises(SqlDialectError, match="2 values"):
        pg(snap, "select permno from crsp.msf where permno = %s", [1, 2])


def test_missing_sqlglot_names_the_extra(
    snap: wrdsvault.Snapshot, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without sqlglot, dialect="postgres" raises MissingExtraError naming 'wrdsvault[sql]'."""
    real_import = builtins.__import__

    def no_sqlglot(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "sqlglot" or name.startswith("sqlglot."):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    for mod in [m for m in sys.modules if m == "sqlglot" or m.startswith("sqlglot.")]:
        monkeypatch.delitem(sys.modules, mod)
    monkeypatch.setattr(builtins, "__import__", no_sqlglot)
    with pytest.raises(MissingExtraError, match=r"wrdsvault\[sql\]"):
        pg(snap, "select 1 as x")
    assert len(snap.query("select 1 as x")) == 1  # DuckDB SQL needs no extra


# -- hints ----------------------------------------------------------------------------------------


def test_query_errors_get_the_hint_that_fits(snap: wrdsvault.Snapshot) -> None:
    """Catalog errors get the table-name hint; date, keyword and syntax errors their own."""
    cases = {
        "select * from crsp.nope": "catalog",
        "select count(*) from crsp.msf where date >= '01/01/2022'": "date",
        "select gvkey, at, lt from comp.funda": "keyword",
        "select permno from crsp.msf where": "syntax",
    }
    for sql, kind in cases.items():
        with pytest.raises(QueryError) as info:
            snap.query(sql)
        err = info.value
        assert err.kind == kind, sql
        assert ("Tables are named as on WRDS" in str(err)) == (kind == "catalog"), sql
    with pytest.raises(QueryError) as info:
        snap.query("select gvkey, at, lt from comp.funda")
    assert info.value.words == ("at",)
    assert '"at"' in str(info.value)


# -- Connection -----------------------------------------------------------------------------------


def test_connection_reads_vault_from_environment(
    vault_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No vault given: $WRDSVAULT_VAULT; neither: InvalidValueError naming both ways."""
    with pytest.raises(InvalidValueError, match="WRDSVAULT_VAULT"):
        wrdsvault.Connection()
    monkeypatch.setenv("WRDSVAULT_VAULT", str(vault_path))
    with wrdsvault.Connection(wrds_username="someone", verbose=False) as db:
        assert db.list_libraries() == ["comp", "crsp"]
        assert db.list_tables("crsp") == ["ccmxpf_lnkhist", "msenames", "msf"]
        n = db.get_row_count("crsp", "msf")
        assert n == len(db.get_table("crsp", "msf")) > 0
    with pytest.raises(TypeError, match="nonsense"):
        wrdsvault.Connection(nonsense=1)


def test_connection_pins_a_snapshot_and_refuses_unknown_names(vault_path: Path) -> None:
    """snapshot= pins the id; unknown libraries or tables are UnknownDatasetError."""
    with wrdsvault.Warehouse(vault_path, create=False) as wh:
        sid = wh.snapshot().id
    with wrdsvault.Connection(vault_path, snapshot=sid) as db:
        assert db.snapshot.id == sid
        with pytest.raises(UnknownDatasetError):
            db.list_tables("optionm")
        with pytest.raises(UnknownDatasetError):
            db.describe_table("crsp", "dsf")
        with pytest.raises(InvalidValueError):
            db.raw_sql("select 1", dtype_backend="polars")
        frame = db.describe_table("comp", "funda")
        assert list(frame.columns) == ["name", "nullable", "type", "comment"]
        assert type(frame.set_index("name")["type"]["at"]).__name__ == "DOUBLE_PRECISION"
