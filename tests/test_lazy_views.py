"""Datasets are checked and get their DuckDB view when a query first names them, not on open.

A query that could reach a file without naming a view (a table function, DESCRIBE, a path, a
catalog listing) builds every view first, so every file it might read has passed its checks.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest

import wrdsvault
from wrdsvault._query import check_shape, referenced_views
from wrdsvault.sources import SampleSource

DATASETS = ("crsp.msf", "comp.funda", "ff.factors_monthly")


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A vault with three datasets, synced once for the module."""
    root = tmp_path_factory.mktemp("lazy") / "vault"
    source = SampleSource(seed=0, years=range(2021, 2023), n_securities=20)
    with wrdsvault.Warehouse(root, source=source) as wh:
        wh.sync(list(DATASETS))
    return root


@pytest.fixture
def damaged(template: Path, tmp_path: Path) -> Iterator[tuple[wrdsvault.Warehouse, Path]]:
    """A copy of the vault whose ff.factors_monthly lost a byte of one file: (vault, file)."""
    import shutil

    root = tmp_path / "vault"
    shutil.copytree(template, root, symlinks=True)
    wh = wrdsvault.Warehouse(root, create=False)
    victim = wh.snapshot().files("ff.factors_monthly")[0]
    victim.write_bytes(victim.read_bytes()[:-1])
    yield wh, victim
    wh.close()


def test_opening_a_snapshot_looks_at_no_data_file(
    damaged: tuple[wrdsvault.Warehouse, Path],
) -> None:
    """A damaged dataset does not stop the snapshot from opening or the others from answering."""
    wh, _ = damaged
    with wh.snapshot() as snap:
        assert snap.arrow("select count(*) as n from crsp.msf")["n"][0].as_py() > 0
        joined = snap.arrow(
            "with f as (select gvkey from comp.funda) "
            "select count(*) as n from crsp.msf, (select count(*) from f)"
        )
        assert joined.num_rows == 1
        con = snap._con
        assert con is not None
        assert set(con._db.pending) == {"ff.factors_monthly"}  # only what the queries named


@pytest.mark.parametrize(
    "sql",
    [
        "select count(*) from ff.factors_monthly",
        "select * from crsp.msf where exists (select 1 from ff.factors_monthly)",
        "select count(*) from duckdb_tables()",
        "select count(*) from information_schema.tables",
        "describe crsp.msf",
        "select count(*) from read_parquet($1)",
        "select count(*) from query_table('crsp.msf')",
    ],
    ids=["named", "subquery", "catalog-function", "information-schema", "describe", "path", "qt"],
)
def test_a_query_that_may_reach_the_damaged_dataset_is_refused(
    damaged: tuple[wrdsvault.Warehouse, Path], sql: str
) -> None:
    """Naming the damaged dataset, or anything that is not a plain view, checks every dataset."""
    wh, victim = damaged
    params = [str(victim)] if "$1" in sql else None
    with wh.snapshot() as snap:
        assert snap.arrow("select count(*) as n from comp.funda").num_rows == 1
        with pytest.raises(wrdsvault.IntegrityError, match="size") as info:
            snap.arrow(sql, params)
        assert info.value.path == str(victim.relative_to(wh.root))
        with pytest.raises(wrdsvault.IntegrityError):  # and again: no view was half-built
            snap.arrow("select count(*) from ff.factors_monthly")
        assert snap.arrow("select count(*) as n from crsp.msf").num_rows == 1


def test_a_view_built_late_is_sandboxed_like_the_first(template: Path) -> None:
    """After views were built lazily, SQL still cannot read outside the pinned files or SET."""
    outside = template.parent / "outside.csv"
    outside.write_text("a\n1\n")
    with wrdsvault.Warehouse(template, create=False) as wh, wh.snapshot() as snap:
        assert snap.arrow("select count(*) as n from crsp.msf").num_rows == 1  # one view
        with pytest.raises(wrdsvault.QueryError, match=r"(?i)permission|access"):
            snap.arrow("select * from read_csv($1)", [str(outside)])  # builds the rest first
        con = snap._con
        assert con is not None and not con._db.pending
        assert snap.arrow("select count(*) as n from comp.funda").num_rows == 1
        with pytest.raises(wrdsvault.QueryError, match=r"(?i)permission|access"):
            snap.arrow("select * from read_csv($1)", [str(outside)])
        with pytest.raises(wrdsvault.QueryRejectedError):
            snap.arrow("set enable_external_access = true")


def test_describe_and_listings_still_see_every_dataset(template: Path) -> None:
    """Catalog queries see all datasets even though no query named them yet."""
    with wrdsvault.Warehouse(template, create=False) as wh, wh.snapshot() as snap:
        tables = snap.arrow(
            "select schema_name || '.' || view_name as name from duckdb_views() "
            "where not internal order by name"
        )
        assert tables["name"].to_pylist() == sorted(DATASETS)
        assert "permno" in snap.arrow("describe crsp.msf")["column_name"].to_pylist()


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("select * from crsp.msf", {"crsp.msf"}),
        ('select * from "CRSP".MSF a join comp.funda b on true', {"crsp.msf", "comp.funda"}),
        ("select * from memory.crsp.msf", {"crsp.msf"}),
        ("select (select count(*) from comp.funda)", {"comp.funda"}),
        ("with t as (select * from crsp.msf) select * from t", {"crsp.msf"}),
        ("with msf as (select 1) select * from msf", set()),
        ("with recursive r(n) as (select 1 union all select n + 1 from r) select * from r", set()),
        ("select * from (values (1)) v(x)", set()),
        ("select 1", set()),
        ("select * from msf", None),
        ("select * from crsp.dsf", None),
        ("from 'data/crsp/msf/2021/x.parquet'", None),
        ("select * from read_parquet('x')", None),
        ("select * from range(3)", None),
        ("show tables", None),
        ("summarize crsp.msf", None),
        ("select * from pg_catalog.pg_tables", None),
        ("""select '{"type":"BASE_TABLE","alias":' as s from crsp.msf""", {"crsp.msf"}),
        ('select * from crsp.msf as "{""type"":""TABLE_FUNCTION"",""alias"":"', {"crsp.msf"}),
        ('select * from crsp.msf t("catalog_name", b)', {"crsp.msf"}),
        ("select * from crsp.msf tablesample 10%", {"crsp.msf"}),
        # A CTE is in scope only in its own WITH's query: elsewhere a quoted path is a file.
        ('select * from (with "x.parquet" as (select 1) select 1) t, "x.parquet"', None),
        ('with "data/x" as (select 1) select * from "data/x"', None),
        ('with "Msf" as (select 1) select * from "Msf"', set()),  # a plain name: the CTE
        ("select * from crsp.msf, comp.funda, crsp.msf m2", {"crsp.msf", "comp.funda"}),
    ],
)
def test_referenced_views_names_what_a_query_reads(sql: str, expected: set[str] | None) -> None:
    """The views a SELECT names, from DuckDB's parse tree; None when it may read anything."""
    views = frozenset({"crsp.msf", "comp.funda"})
    with duckdb.connect() as con:
        shape = check_shape(con, sql)
    assert referenced_views(*shape, views) == (None if expected is None else frozenset(expected))


def test_the_first_query_allows_only_the_files_it_reads(template: Path) -> None:
    """A fresh snapshot's database allows the files of the views its first query reads; the
    first query that needs another view gets a database that allows every pinned file (once),
    and a query still streaming from the first database keeps its rows."""
    import pyarrow as pa

    def allowed_paths(con: duckdb.DuckDBPyConnection) -> list[str]:
        cur = con.cursor()
        try:
            return sorted(cur.execute("select current_setting('allowed_paths')").fetchall()[0][0])
        finally:
            cur.close()

    with wrdsvault.Warehouse(template, create=False) as wh, wh.snapshot() as snap:
        msf = snap.sql("select * from crsp.msf order by permno, date")
        expected = msf.arrow()
        pinned = snap._con
        assert pinned is not None
        first = pinned._db
        assert first.locked and first.allowed == frozenset({"crsp.msf"})
        assert allowed_paths(first.con) == sorted(str(p) for p in snap.files("crsp.msf"))

        stream = msf.batches(batch_rows=7)  # holds a cursor on the first database
        head = next(stream)
        funda = snap.arrow("select count(*) as n from comp.funda")["n"][0].as_py()
        assert funda == snap.dataset("comp.funda").row_count
        second = pinned._db
        assert second is not first and second.allowed is None and first.retired
        every = sorted(str(p) for name in DATASETS for p in snap.files(name))
        assert allowed_paths(second.con) == every
        assert pa.Table.from_batches([head, *stream]).equals(expected)
        assert first not in pinned._retired  # closed with its last cursor
        with pytest.raises(duckdb.Error):
            first.con.execute("select 1")

        assert snap.arrow("select count(*) as n from ff.factors_monthly").num_rows == 1
        assert pinned._db is second  # replaced at most once
        assert snap.arrow("select count(*) as n from crsp.msf")["n"][0].as_py() == len(expected)


def test_a_first_query_that_reads_no_view_allows_no_file(template: Path) -> None:
    """``select 1`` first: the database allows nothing; the next query that names a view gets
    one that allows every pinned file."""
    with wrdsvault.Warehouse(template, create=False) as wh, wh.snapshot() as snap:
        assert snap.arrow("select 1 as x")["x"][0].as_py() == 1
        pinned = snap._con
        assert pinned is not None and pinned._db.allowed == frozenset()
        with pytest.raises(wrdsvault.QueryError, match=r"(?i)permission|access"):
            snap.arrow("select * from read_parquet($1)", [str(snap.files("crsp.msf")[0])[:-8]])
        assert pinned._db.allowed is None  # a table function: every view, every file
        assert snap.arrow("select count(*) as n from crsp.msf")["n"][0].as_py() > 0


def test_a_path_shadowed_by_a_cte_elsewhere_is_not_read_unchecked(
    damaged: tuple[wrdsvault.Warehouse, Path],
) -> None:
    """A quoted file path named like a CTE of another scope is a file, not the CTE: the query
    may read anything, so every dataset is checked first (the damaged one refuses)."""
    wh, victim = damaged
    quoted = '"' + str(victim).replace('"', '""') + '"'
    with wh.snapshot() as snap:
        assert snap.arrow("select count(*) as n from comp.funda").num_rows == 1
        for sql in (
            f"select count(*) from (with {quoted} as (select 1) select 1) t, {quoted}",
            f"with {quoted} as (select * from {quoted}) select count(*) from {quoted}",
        ):
            with pytest.raises(wrdsvault.IntegrityError):
                snap.arrow(sql)


def test_a_symlink_planted_before_the_first_query_refuses_the_database(
    template: Path, tmp_path: Path
) -> None:
    """DuckDB resolves allowed paths when they are set: a pinned file turned into a symlink
    after the snapshot opened is caught when the database would be locked, before any view,
    and the database is replaced by a fresh one (its settings half-set)."""
    import shutil

    root = tmp_path / "vault"
    shutil.copytree(template, root, symlinks=True)
    outside = tmp_path / "outside.parquet"
    with wrdsvault.Warehouse(root, create=False) as wh, wh.snapshot() as snap:
        victim = snap.files("crsp.msf")[0]
        shutil.copyfile(victim, outside)
        victim.unlink()
        victim.symlink_to(outside)
        with pytest.raises(wrdsvault.IntegrityError, match="symlink") as info:
            snap.arrow("select count(*) as n from crsp.msf")
        assert info.value.path == str(victim.relative_to(root))
        assert snap._con is not None and not snap._con._db.locked  # refused before the lock
        # comp.funda's files are intact: a query naming only it answers.
        assert snap.arrow("select count(*) as n from comp.funda").num_rows == 1


def test_threads_naming_datasets_at_once_each_get_their_view(template: Path) -> None:
    """Twelve threads' first queries over three datasets, at once: every count is right."""
    import threading

    with wrdsvault.Warehouse(template, create=False) as wh, wh.snapshot() as snap:
        expected = {name: snap.dataset(name).row_count for name in DATASETS}
        start = threading.Barrier(12)
        got: list[tuple[str, int]] = []
        errors: list[BaseException] = []

        def count(name: str) -> None:
            start.wait(timeout=60)
            try:
                table = snap.arrow(f"select count(*) as n from {name}")
                got.append((name, table["n"][0].as_py()))
            except BaseException as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=count, args=(DATASETS[i % 3],)) for i in range(12)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        assert errors == []
        assert sorted(got) == sorted(
            (DATASETS[i % 3], expected[DATASETS[i % 3]]) for i in range(12)
        )


def test_an_altered_manifest_entry_fails_only_the_queries_that_use_it(
    template: Path, tmp_path: Path
) -> None:
    """A manifest whose ff.factors_monthly entry was pointed at a crsp.msf file, with the
    fingerprint recomputed: the snapshot opens and crsp.msf answers, but no query of
    ff.factors_monthly (nor one that may reach it) reads that file, and eager readers refuse."""
    import shutil

    import attrs

    from wrdsvault.errors import VaultFormatError
    from wrdsvault.manifest import Manifest

    root = tmp_path / "vault"
    shutil.copytree(template, root, symlinks=True)
    sid = (root / "HEAD").read_text().strip()
    path = root / "snapshots" / f"{sid}.json"
    m = Manifest.from_json(path.read_bytes(), where=str(path))
    msf_file = m.datasets["crsp.msf"].partitions[0]
    ff = m.datasets["ff.factors_monthly"]
    altered = attrs.evolve(ff.partitions[0], path=msf_file.path)
    datasets = dict(m.datasets)
    datasets["ff.factors_monthly"] = attrs.evolve(ff, partitions=(altered, *ff.partitions[1:]))
    path.write_bytes(attrs.evolve(m, datasets=datasets).to_json())

    with wrdsvault.Warehouse(root, create=False) as wh, wh.snapshot() as snap:
        assert snap.arrow("select count(*) as n from crsp.msf")["n"][0].as_py() > 0
        for sql, params in (
            ("select count(*) from ff.factors_monthly", None),
            ("select count(*) from duckdb_tables()", None),
            ("select count(*) from read_parquet($1)", [str(root / msf_file.path)]),
        ):
            with pytest.raises(VaultFormatError, match="does not follow"):
                snap.arrow(sql, params)
        with pytest.raises(VaultFormatError, match="does not follow"):
            snap.files("ff.factors_monthly")
        with pytest.raises(VaultFormatError, match="does not follow"):
            wh.snapshots()  # listing every snapshot builds every entry
        assert snap.arrow("select count(*) as n from comp.funda")["n"][0].as_py() > 0


def test_a_query_whose_caller_holds_the_connection_survives_a_close(template: Path) -> None:
    """close() between a caller's acquire and its query (wh.query moving to a newer snapshot
    in another thread): the query runs to its end, then the database closes."""
    from wrdsvault._query import fetch_rows

    with wrdsvault.Warehouse(template, create=False) as wh, wh.snapshot() as snap:
        con = snap._acquire()
        try:
            con.close()
            assert not con.closed  # waits for the use it handed out
            assert con.run("select count(*) from crsp.msf", None, None, fetch_rows)[0][0] > 0
        finally:
            con.release()
        assert con.closed
        assert not con.acquire()  # a closed connection hands out no new use
        with pytest.raises(RuntimeError, match="closed"):
            con.run("select 1", None, None, fetch_rows)
