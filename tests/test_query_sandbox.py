"""The query sandbox refuses every escape and leaves the vault byte-identical.

Two walls (docs/design/sandbox.md, ``src/wrdsvault/_query.py``): a statement allow-list (exactly one
SELECT, checked by DuckDB's own parser) raises `QueryRejectedError` naming the statement type; the
DuckDB settings (``allowed_paths`` = the pinned files, external access off, configuration locked)
make DuckDB itself refuse anything else at run time, surfacing as `QueryError`. A hostile corpus
goes through every public query entry point, then the vault's files are compared byte for byte.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import pytest

import wrdsvault
from _helpers.disk import copy_vault, entry_digests
from _helpers.proc import strip_env
from wrdsvault import (
    IntegrityError,
    LazyResult,
    QueryError,
    QueryRejectedError,
    QueryTimeoutError,
    Snapshot,
    Warehouse,
)
from wrdsvault._query import MAX_SELECT_BLOCKS
from wrdsvault.sources import SampleSource

DATASETS = ["crsp.msf", "comp.funda", "ff.factors_monthly"]
#: Small: three years, a handful of securities (the corpus needs files, not volume).
SOURCE_PARAMS = {"seed": 0, "years": range(2020, 2023), "n_securities": 15}
RUNAWAY = "select count(*) from range(10000000000) t(i) where i % 7 = 3"
PERMISSION = "Permission Error"
MB = 1 << 20


class Sandbox:
    """A vault synced at vintage 1 then vintage 2 (three datasets), both snapshots open."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.outside = base / "outside"
        self.outside.mkdir()
        (self.outside / "secret.txt").write_text("outside the vault\n")
        self.wh = Warehouse(base / "vault", source=SampleSource(**SOURCE_PARAMS, vintage=1))
        first = self.wh.sync(DATASETS)
        self.wh.source = SampleSource(**SOURCE_PARAMS, vintage=2)
        second = self.wh.sync(DATASETS)
        assert first.snapshot_id and second.snapshot_id, "both vintages must commit"
        self.v1: Snapshot = self.wh.snapshot(first.snapshot_id)
        self.snap: Snapshot = self.wh.snapshot("latest")
        assert self.snap.id == second.snapshot_id
        self.root = self.wh.root
        pinned_v1 = {p for d in DATASETS for p in self.v1.files(d)}
        pinned_v2 = {p for d in DATASETS for p in self.snap.files(d)}
        stale = sorted(pinned_v1 - pinned_v2)
        newer = sorted(pinned_v2 - pinned_v1)
        assert stale and newer, "vintage 2 must replace some partition files"
        self.stale, self.newer = stale[0], newer[0]
        self.pinned = self.snap.files("crsp.msf")[0]
        # Views are pinned: the stale file exists on disk but only v1 may read it.
        assert self.stale.is_file() and self.stale not in pinned_v2
        # Open every DuckDB connection (Warehouse.query's too) before taking the "before"
        # picture: opening a snapshot writes its reader lease under leases/, a query nothing.
        assert self.snap.query("select 1 as x")["x"][0] == 1
        assert self.v1.query("select 1 as x")["x"][0] == 1
        assert self.wh.query("select 1 as x")["x"][0] == 1
        self.fmt = {
            "root": str(self.root),
            "data": str(self.root / "data"),
            "pinned": str(self.pinned),
            "pinned_dir": str(self.pinned.parent),
            "stale": str(self.stale),
            "stale_name": self.stale.name,
            "manifest_v1": str(self.root / "snapshots" / f"{self.v1.id}.json"),
            "head": str(self.root / "HEAD"),
            "secret": str(self.outside / "secret.txt"),
        }

    def close(self) -> None:
        self.v1.close()
        self.snap.close()
        self.wh.close()


@pytest.fixture(scope="module")
def sbx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    """The shared vault (built once, with WRDSVAULT_* and PG* variables removed)."""
    with pytest.MonkeyPatch.context() as mp:
        strip_env(mp)
        sandbox = Sandbox(tmp_path_factory.mktemp("sandbox"))
    yield sandbox
    sandbox.close()


@pytest.fixture(scope="module")
def pristine(sbx: Sandbox) -> dict[str, str]:
    """The vault's parent folder (vault + a sibling folder) before any hostile query."""
    return entry_digests(sbx.base)


# -- the corpus -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One hostile input: ``kind`` is 'rejected' (allow-list) or 'error' (DuckDB at run time).

    ``expect`` is the statement type named in the rejection, or a text in DuckDB's reason.
    """

    id: str
    sql: str
    kind: str
    expect: str

    def text(self, fmt: dict[str, str]) -> str:
        return self.sql.format(**fmt) if "{" in self.sql else self.sql

    @property
    def big(self) -> bool:
        """Over 1 MB: parsing takes a second or two, so run it through one entry point only."""
        return len(self.sql) > MB

    @property
    def pinned_by_v1(self) -> bool:
        """It names a file the vintage-1 snapshot may legitimately read."""
        return "{stale" in self.sql or "{pinned" in self.sql


def rejected(id: str, sql: str, statement_type: str) -> Case:
    return Case(id, sql, "rejected", statement_type)


def refused(id: str, sql: str, reason: str = PERMISSION) -> Case:
    return Case(id, sql, "error", reason)


CORPUS = [
    # Writes: COPY, EXPORT, ATTACH (DuckDB's allowed_paths alone does NOT stop these inside data/).
    rejected("copy-to-data-dir", "COPY (SELECT * FROM crsp.msf) TO '{data}/evil.parquet'", "COPY"),
    rejected("copy-to-tmp-csv", "COPY (SELECT 1) TO '/tmp/wrdsvault-evil.csv'", "COPY"),
    rejected("copy-table-to-cwd", "COPY crsp.msf TO 'evil.csv'", "COPY"),
    rejected("copy-from", "COPY crsp.msf FROM '/etc/passwd'", "COPY"),
    rejected("export-database", "EXPORT DATABASE '{data}/export'", "EXPORT"),
    rejected("import-database", "IMPORT DATABASE '{data}'", "PRAGMA"),
    rejected("attach-in-vault", "ATTACH '{root}/x.duckdb' AS x", "ATTACH"),
    rejected("attach-memory", "ATTACH ':memory:' AS m", "ATTACH"),
    rejected("detach", "DETACH memory", "DETACH"),
    # Extensions and configuration.
    rejected("install-httpfs", "INSTALL httpfs", "LOAD"),
    rejected("load-httpfs", "LOAD httpfs", "LOAD"),
    rejected("force-install", "FORCE INSTALL httpfs", "LOAD"),
    rejected("set-external-access", "SET enable_external_access = true", "SET"),
    rejected("reset-external-access", "RESET enable_external_access", "SET"),
    rejected("set-allowed-paths", "SET allowed_paths = ['/']", "SET"),
    rejected("set-allowed-dirs", "SET allowed_directories = ['/', '{data}']", "SET"),
    rejected("unlock-config", "SET lock_configuration = false", "SET"),
    rejected("set-variable", "SET VARIABLE x = 1", "SET"),
    rejected("use", "USE crsp", "SET"),
    rejected("pragma", "PRAGMA enable_profiling", "PRAGMA"),
    rejected("pragma-list", "PRAGMA database_list", "PRAGMA"),
    rejected("explain", "EXPLAIN SELECT 1", "EXPLAIN"),
    rejected(
        "explain-analyze-copy", "EXPLAIN ANALYZE COPY (SELECT 1) TO '{data}/x.parquet'", "EXPLAIN"
    ),
    rejected("call", "CALL pragma_version()", "CALL"),
    rejected("call-logging", "CALL enable_logging(storage_path = '{data}')", "CALL"),
    rejected("checkpoint", "CHECKPOINT", "CALL"),
    # DDL and DML on the catalog.
    rejected("create-table", "CREATE TABLE t AS SELECT * FROM crsp.msf", "CREATE"),
    rejected("create-view", "CREATE VIEW v AS SELECT 1", "CREATE"),
    rejected("replace-view", "CREATE OR REPLACE VIEW crsp.msf AS SELECT 1 AS permno", "CREATE"),
    rejected("create-macro", "CREATE MACRO m(x) AS x + 1", "CREATE"),
    rejected("create-secret", "CREATE SECRET s (TYPE s3, KEY_ID 'a', SECRET 'b')", "CREATE"),
    rejected("create-schema", "CREATE SCHEMA evil", "CREATE"),
    rejected("drop-view", "DROP VIEW crsp.msf", "DROP"),
    rejected("alter-view", "ALTER VIEW crsp.msf RENAME TO x", "ALTER"),
    rejected("comment-on", "COMMENT ON VIEW crsp.msf IS 'x'", "ALTER"),
    rejected("insert", "INSERT INTO crsp.msf VALUES (1)", "INSERT"),
    rejected("update", "UPDATE crsp.msf SET ret = 0", "UPDATE"),
    rejected("delete", "DELETE FROM crsp.msf", "DELETE"),
    rejected("truncate", "TRUNCATE crsp.msf", "DELETE"),
    rejected(
        "merge",
        "MERGE INTO crsp.msf USING (SELECT 1 AS permno) s ON true WHEN MATCHED THEN DELETE",
        "MERGE_INTO",
    ),
    rejected("vacuum", "VACUUM", "VACUUM"),
    rejected("analyze", "ANALYZE", "VACUUM"),
    rejected("begin", "BEGIN TRANSACTION", "TRANSACTION"),
    rejected("commit", "COMMIT", "TRANSACTION"),
    rejected("rollback", "ROLLBACK", "TRANSACTION"),
    rejected("prepare", "PREPARE p AS SELECT 1", "PREPARE"),
    rejected("execute", "EXECUTE p", "EXECUTE"),
    rejected("deallocate", "DEALLOCATE p", "DROP"),
    # A PIVOT without an IN list expands to several statements (CREATE TYPE first): refused,
    # naming PIVOT; with an IN list it is one SELECT (see the positive controls).
    rejected("pivot", "PIVOT crsp.msf ON permno USING count(*)", "PIVOT"),
    rejected("pivot-subquery", "select * from (pivot crsp.msf on permno using count(*))", "PIVOT"),
    # The time zone is pinned to UTC: no statement may change it.
    rejected("set-timezone", "SET TimeZone = 'Asia/Tokyo'", "SET"),
    rejected("set-global-timezone", "SET GLOBAL TimeZone = 'Asia/Tokyo'", "SET"),
    rejected("reset-timezone", "RESET TimeZone", "SET"),
    rejected("set-calendar", "SET Calendar = 'japanese'", "SET"),
    # Settings hold host paths (spill folder, secret folder, allowed files): none is readable.
    rejected("temp-directory", "select current_setting('temp_directory') as d", "FUNCTION"),
    rejected("secret-directory", "select current_setting('secret_directory')", "FUNCTION"),
    rejected("setting-built-at-run-time", "select current_setting('temp_' || 'dir')", "FUNCTION"),
    rejected("setting-upper-case", "SELECT CURRENT_SETTING('TEMP_DIRECTORY')", "FUNCTION"),
    rejected("setting-qualified", "select main.current_setting('temp_directory')", "FUNCTION"),
    rejected("setting-in-cte", "with s as (select current_setting('x') v) from s", "FUNCTION"),
    rejected("settings-table", "select value from duckdb_settings()", "FUNCTION"),
    rejected("settings-from-first", "from duckdb_settings()", "FUNCTION"),
    rejected("temporary-files", "select * from duckdb_temporary_files()", "FUNCTION"),
    rejected("pg-settings", "select setting from pg_settings", "FUNCTION"),
    rejected("pg-catalog-settings", 'select * from pg_catalog."PG_SETTINGS"', "FUNCTION"),
    rejected("settings-in-exists", "select 1 where exists (from duckdb_settings())", "FUNCTION"),
    rejected("setting-method-call", "select 'temp_directory'.current_setting()", "FUNCTION"),
    rejected(
        "setting-in-lambda", "select list_transform([1], x -> current_setting('a'))", "FUNCTION"
    ),
    rejected("setting-in-describe", "DESCRIBE (select current_setting('a'))", "FUNCTION"),
    rejected(
        "query-fn-setting",
        "select * from query('select current_setting(''temp_directory'')')",
        "FUNCTION",
    ),
    # Planning cannot be interrupted: statements too big to plan are refused before it starts.
    rejected("union-10k", " union all ".join(f"select {i}" for i in range(10_000)), "TOO_COMPLEX"),
    rejected("values-union-2k", " union all ".join(["values (1), (2)"] * 2_000), "TOO_COMPLEX"),
    rejected(
        "cte-doubling-not-materialized",
        "with a0 as not materialized (select 1 as x), "
        + ", ".join(
            f"a{i} as not materialized (select * from a{i - 1} union all select * from a{i - 1})"
            for i in range(1, 21)
        )
        + " select count(*) from a20",
        "TOO_COMPLEX",
    ),
    rejected(
        "cte-chain-990-not-materialized",
        "with c0 as not materialized (select 1 as x), "
        + ", ".join(f"c{i} as not materialized (from c{i - 1})" for i in range(1, 990))
        + " from c989",
        "TOO_COMPLEX",
    ),
    rejected(
        "cte-join-doubling-not-materialized",
        "with a0 as not materialized (select 1 as x), "
        + ", ".join(
            f"a{i} as not materialized (select p.x from a{i - 1} p, a{i - 1} q)"
            for i in range(1, 21)
        )
        + " select count(*) from a20",
        "TOO_COMPLEX",
    ),
    # More than one statement, however disguised.
    rejected("multi", "select 1; copy (select 1) to '{data}/y.parquet'", "MULTIPLE"),
    rejected("multi-comment", "select 1 -- \n; drop view crsp.msf", "MULTIPLE"),
    rejected("multi-quoted-semicolon", "select 'a;' ; copy (select 1) to 'x.csv'", "MULTIPLE"),
    rejected("multi-nul", "select 1\x00; drop view crsp.msf", "MULTIPLE"),
    rejected("multi-1mb", "select 1;" * 120_000, "MULTIPLE"),
    rejected("copy-1mb", "COPY (select 1) TO '{data}/big.parquet' -- " + "x" * MB, "COPY"),
    rejected("empty", "", "EMPTY"),
    rejected("whitespace", "  \n\t  ", "EMPTY"),
    rejected("comment-only", "-- nothing here\n", "EMPTY"),
    rejected("semicolons-only", " ; ; ", "EMPTY"),
    # SELECTs that try to reach files: the second wall (DuckDB settings) refuses them.
    refused("read-csv-passwd", "select * from read_csv('/etc/passwd')"),
    refused("read-text-passwd", "select * from read_text('/etc/passwd')"),
    refused("read-blob-passwd", "select * from read_blob('/etc/passwd')"),
    refused("read-json-passwd", "select * from read_json('/etc/passwd')"),
    refused("sniff-csv-passwd", "select * from sniff_csv('/etc/passwd')"),
    refused("parquet-metadata-passwd", "select * from parquet_metadata('/etc/passwd')"),
    refused("proc-environ", "select * from read_text('/proc/self/environ')"),
    refused("file-url", "select * from read_text('file:///etc/passwd')"),
    refused("read-text-vault-json", "select * from read_text('{root}/vault.json')"),
    refused("read-blob-vault-json", "select * from read_blob('{root}/vault.json')"),
    refused("read-head", "select * from read_text('{head}')"),
    refused("read-other-manifest", "select * from read_text('{manifest_v1}')"),
    refused("read-outside-sibling", "select * from read_text('{secret}')"),
    refused("glob-etc", "select * from glob('/etc/*')"),
    refused("glob-vault", "select * from glob('{root}/*')"),
    refused("glob-data-recursive", "select * from glob('{data}/**')"),
    refused("read-stale-partition", "select * from read_parquet('{stale}')"),
    refused("read-partition-glob", "select * from read_parquet('{pinned_dir}/*.parquet')"),
    refused("read-pinned-and-stale", "select * from read_parquet(['{pinned}', '{stale}'])"),
    refused("dotdot-data", "select * from read_text('{data}/../vault.json')"),
    refused("dotdot-through-pinned", "select * from read_parquet('{pinned}/../{stale_name}')"),
    refused("dotdot-to-etc", "select * from read_text('{pinned}/../../../../../../../etc/passwd')"),
    rejected(
        "dotdot-temp-dir",
        "select * from read_text(current_setting('temp_directory') || '/../../etc/passwd')",
        "FUNCTION",
    ),
    refused("home", "select * from read_text('~/x')"),
    refused("http", "select * from read_parquet('http://example.com/x.parquet')"),
    refused("https", "select * from read_text('https://example.com/')"),
    refused("s3", "select * from read_parquet('s3://bucket/x.parquet')"),
    refused("extensions-dir", "select * from duckdb_extensions()"),
    # query() runs SQL from a string, out of the allow-list's sight: refused whatever it holds.
    rejected(
        "query-copy", "select * from query('copy (select 1) to ''{data}/q.parquet''')", "FUNCTION"
    ),
    rejected("query-attach", "select * from query('attach '':memory:'' as q')", "FUNCTION"),
    rejected("query-select", "select * from query('select 1')", "FUNCTION"),
    refused("getenv", "select getenv('HOME')", "getenv"),
    refused("enable-logging-fn", "select * from enable_logging()", "locked"),
    refused("unterminated-comment", "select 1 /* ; copy (select 1) to 'x.csv'", "Parser Error"),
    refused("nested-1mb", "select " + "(" * (MB // 2) + "1" + ")" * (MB // 2), "expression depth"),
]
CORPUS_IDS = [c.id for c in CORPUS]
assert len(set(CORPUS_IDS)) == len(CORPUS_IDS)


def run_case(sbx: Sandbox, case: Case, how: str) -> BaseException:
    """Run ``case`` through one public entry point; return the exception it raised."""
    sql = case.text(sbx.fmt)
    calls: dict[str, Any] = {
        "Snapshot.query": lambda: sbx.snap.query(sql),
        "Snapshot.arrow": lambda: sbx.snap.arrow(sql),
        "Snapshot.sql": lambda: sbx.snap.sql(sql).fetchall(),
        "Warehouse.query": lambda: sbx.wh.query(sql),
        "v1.query": lambda: sbx.v1.query(sql),
        "Warehouse.query_across": lambda: sbx.wh.query_across(
            {"old": sbx.v1.id, "new": sbx.snap.id}, across(sql)
        ),
    }
    expected: Any = QueryRejectedError if case.kind == "rejected" else QueryError
    if case.big:  # a size limit, if one is added, may refuse it first
        expected = (QueryRejectedError, QueryError)
    with pytest.raises(expected) as info:
        calls[how]()
    return info.value


_TABLE = re.compile(r"(?<![\w./'])(crsp|comp|ff)\.(?=[a-z])")


def across(sql: str) -> str:
    """``sql`` with every table named through the alias ``new`` (``new.crsp.msf``)."""
    return _TABLE.sub(r"new.\1.", sql)


def assert_refused(exc: BaseException, case: Case) -> None:
    """The exception is the one the case predicts, for the predicted reason.

    Inputs over 1 MB may instead be rejected for their size (see
    `test_sql_over_one_megabyte_is_rejected`), under whatever statement type that check names.
    """
    size_rejected = case.big and type(exc) is QueryRejectedError
    if size_rejected and exc.statement_type != case.expect:  # type: ignore[attr-defined]
        assert "query rejected (" in str(exc)
    elif case.kind == "rejected":
        assert type(exc) is QueryRejectedError
        assert exc.statement_type == case.expect  # type: ignore[attr-defined]
        assert f"query rejected ({case.expect})" in str(exc)
    else:
        assert type(exc) is QueryError
        assert case.expect in exc.reason, exc.reason  # type: ignore[attr-defined]


ENTRY_POINTS = [
    "Snapshot.query",
    "Snapshot.arrow",
    "Snapshot.sql",
    "Warehouse.query",
    "Warehouse.query_across",
]


@pytest.mark.parametrize("case", CORPUS, ids=CORPUS_IDS)
def test_hostile_input_is_refused(sbx: Sandbox, pristine: dict[str, str], case: Case) -> None:
    """Each hostile input is refused by every query entry point, for the expected reason."""
    for how in ENTRY_POINTS[:1] if case.big else ENTRY_POINTS:
        if how == "Warehouse.query_across" and case.pinned_by_v1:
            continue  # the alias "old" pins vintage 1's files: reading them is allowed
        assert_refused(run_case(sbx, case, how), case)


def test_corpus_size_and_both_walls_are_exercised() -> None:
    """The corpus holds about 50+ cases and exercises both walls."""
    kinds = [c.kind for c in CORPUS]
    assert len(CORPUS) >= 50
    assert kinds.count("rejected") >= 30 and kinds.count("error") >= 20


def test_files_outside_the_pinned_list_exist(sbx: Sandbox) -> None:
    """The files the corpus fails to read are really there (a refusal is not a 'not found')."""
    for key in ("stale", "manifest_v1", "head", "secret"):
        assert Path(sbx.fmt[key]).is_file(), key
    assert (sbx.root / "vault.json").is_file()


def test_older_snapshot_cannot_read_newer_files(sbx: Sandbox) -> None:
    """Pinning works both ways: the vintage-1 snapshot may not read a vintage-2 file."""
    with pytest.raises(QueryError, match=PERMISSION):
        sbx.v1.query(f"select count(*) from read_parquet('{sbx.newer}')")
    assert sbx.v1.query(f"select count(*) as n from read_parquet('{sbx.stale}')")["n"][0] > 0


def test_non_str_sql_is_a_type_error(sbx: Sandbox) -> None:
    """SQL that is not a str (bytes, None, a list) is a TypeError before DuckDB sees it."""
    for value in (b"select 1", None, ["select 1"], 1):
        with pytest.raises(TypeError):
            sbx.snap.query(value)  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            sbx.snap.sql(value)  # type: ignore[arg-type]


@pytest.mark.parametrize("sql", ["UPDATE EXTENSIONS", "UPDATE EXTENSIONS (httpfs)"])
def test_statement_type_unknown_to_python_is_rejected(sbx: Sandbox, sql: str) -> None:
    """A statement type the Python binding cannot name is rejected, not leaked as ValueError."""
    with pytest.raises(QueryRejectedError):
        sbx.snap.query(sql)


def test_sql_over_one_megabyte_is_rejected(sbx: Sandbox) -> None:
    """Any statement over 1 MB is rejected before parsing (bounds parser time and memory)."""
    with pytest.raises(QueryRejectedError):
        sbx.snap.query("select 1 as x -- " + "x" * MB)


def test_vault_is_byte_identical_after_the_corpus(
    sbx: Sandbox, pristine: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After the whole corpus (every entry point, both snapshots) no file changed or appeared."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    for case in CORPUS:
        ways = [*ENTRY_POINTS, "v1.query"]
        if case.pinned_by_v1:
            ways.remove("v1.query")
            ways.remove("Warehouse.query_across")
        for how in ways[:1] if case.big else ways:
            assert_refused(run_case(sbx, case, how), case)
    assert entry_digests(sbx.base) == pristine
    assert list(cwd.iterdir()) == []
    assert not Path("/tmp/wrdsvault-evil.csv").exists()  # noqa: S108 (the corpus's COPY target)
    # Both snapshots still answer with their own pinned data.
    assert sbx.snap.query("select count(*) as n from crsp.msf")["n"][0] == (
        sbx.snap.dataset("crsp.msf").row_count
    )
    assert sbx.v1.query("select count(*) as n from crsp.msf")["n"][0] == (
        sbx.v1.dataset("crsp.msf").row_count
    )


# -- positive controls ----------------------------------------------------------------------------


def test_plain_select_and_its_variants_work(sbx: Sandbox) -> None:
    """SELECT, WITH, VALUES, FROM-first, UNION, parentheses and UNPIVOT are one SELECT each."""
    rows = sbx.snap.dataset("crsp.msf").row_count
    q = sbx.snap.query
    assert q("select count(*) as n from crsp.msf")["n"][0] == rows
    assert q("with m as (select permno from crsp.msf) select count(*) as n from m")["n"][0] == rows
    assert list(q("values (1), (2)")["col0"]) == [1, 2]
    assert q("from crsp.msf select count(*) as n")["n"][0] == rows
    assert len(q("from ff.factors_monthly")) == sbx.snap.dataset("ff.factors_monthly").row_count
    assert list(q("select 1 as x union all select 2")["x"]) == [1, 2]
    assert q("(select 42 as x)")["x"][0] == 42
    assert len(q("unpivot (select 1 as a, 2 as b) on a, b into name k value v")) == 2
    funda = q('select count(*) as n from comp.funda where "at" is not null or "at" is null')
    assert funda["n"][0] == sbx.snap.dataset("comp.funda").row_count


def test_describe_summarize_and_show_are_selects(sbx: Sandbox) -> None:
    """DuckDB classifies DESCRIBE, SUMMARIZE and SHOW as SELECT: they run and only read."""
    columns = [c.name for c in sbx.snap.dataset("crsp.msf").columns]
    assert list(sbx.snap.query("DESCRIBE crsp.msf")["column_name"]) == columns
    assert list(sbx.snap.query("SUMMARIZE crsp.msf")["column_name"]) == columns
    tables = sbx.snap.query("SHOW ALL TABLES")
    assert sorted(tables["schema"] + "." + tables["name"]) == sorted(DATASETS)


def test_trailing_semicolons_and_comments_stay_one_statement(sbx: Sandbox) -> None:
    """'select 1;;' and comments hiding a ';' parse as one SELECT; only that SELECT runs."""
    assert sbx.snap.query("select 1 as x;;")["x"][0] == 1
    assert sbx.snap.query("select 1 as x /* ; drop view crsp.msf */")["x"][0] == 1
    assert sbx.snap.query("select $$; copy (select 1) to 'x.csv'$$ as x")["x"][0].startswith(";")
    assert sbx.snap.query("select count(*) as n from crsp.msf")["n"][0] > 0


def test_only_the_pinned_views_exist(sbx: Sandbox) -> None:
    """The connection holds exactly the snapshot's views: no tables, macros or secrets."""
    views = sbx.snap.query(
        "select schema_name || '.' || view_name as v from duckdb_views() where not internal"
    )
    assert sorted(views["v"]) == sorted(DATASETS)
    assert len(sbx.snap.query("select * from duckdb_tables()")) == 0
    assert len(sbx.snap.query("select * from duckdb_secrets()")) == 0


def test_second_wall_settings_are_in_force(sbx: Sandbox) -> None:
    """External access off, configuration locked, allowed paths = the pinned files, TZ = UTC."""
    # Settings are not readable from a snapshot query (they hold host paths): look through a
    # cursor of the snapshot's own DuckDB database instead.
    # A query that may read any view: the snapshot's database allows every pinned file (a
    # first query that names views allows only theirs: tests/test_lazy_views.py).
    sbx.snap.query("select count(*) from information_schema.tables")
    con = sbx.snap._acquire()
    try:
        cur = con._db.con.cursor()

        def setting(name: str) -> Any:
            return cur.execute("select current_setting($1)", [name]).fetchall()[0][0]

        assert setting("enable_external_access") in (False, "false")
        assert setting("lock_configuration") in (True, "true")
        for name in ("autoload_known_extensions", "autoinstall_known_extensions"):
            assert setting(name) in (False, "false")
        assert setting("allow_community_extensions") in (False, "false")
        assert setting("allow_persistent_secrets") in (False, "false")
        assert setting("TimeZone") == "UTC"
        assert setting("Calendar") == "gregorian"
        pinned = sorted(str(p) for d in DATASETS for p in sbx.snap.files(d))
        assert sorted(setting("allowed_paths")) == pinned
        for folder in setting("allowed_directories"):
            real = Path(folder).resolve()
            assert sbx.root not in real.parents and real != sbx.root, folder
        # The lock holds even for code that reaches DuckDB directly.
        for statement in ("SET TimeZone = 'Asia/Tokyo'", "SET GLOBAL TimeZone = 'Asia/Tokyo'"):
            with pytest.raises(duckdb.Error, match="locked"):
                cur.execute(statement)
        assert setting("TimeZone") == "UTC"
        cur.close()
    finally:
        con.release()


def test_parameters_are_values_not_sql(sbx: Sandbox) -> None:
    """$1, ? and $name bind values: a value holding SQL stays a string."""
    evil = "'; drop view crsp.msf; --"
    assert sbx.snap.query("select $1 as x", [evil])["x"][0] == evil
    assert sbx.snap.query("select ? as x, ? as y", [evil, 2]).iloc[0].tolist() == [evil, 2]
    assert sbx.snap.query("select $name as x", {"name": evil})["x"][0] == evil
    rows = sbx.snap.query(
        "select count(*) as n from crsp.msf where cast(permno as varchar) = $1", [evil]
    )
    assert rows["n"][0] == 0
    assert sbx.snap.sql("select $1 as x", [evil]).fetchall() == [(evil,)]
    assert sbx.snap.query("select count(*) as n from crsp.msf")["n"][0] > 0
    with pytest.raises(QueryError, match=PERMISSION):
        sbx.snap.query("select * from read_text($1)", ["/etc/passwd"])
    with pytest.raises(QueryError, match=PERMISSION):
        sbx.snap.query("select * from read_parquet($1)", [str(sbx.stale)])
    with pytest.raises(QueryError):
        sbx.snap.query("select ? as x", [object()])


def test_pinned_file_can_be_read_by_path(sbx: Sandbox) -> None:
    """A pinned file is on the allow-list: reading it by path gives the view's rows."""
    rows = len(sbx.snap.query(f"select * from read_parquet('{sbx.pinned}')"))
    first_year = sbx.snap.dataset("crsp.msf").partitions[0].row_count
    assert rows == first_year


def test_lazy_result_exposes_only_fetching(sbx: Sandbox) -> None:
    """snap.sql() validates now, runs later; offers .df/.arrow/.fetchall/.batches and .head (a
    cut of the same checked SELECT), no .query/.execute."""
    lazy = sbx.snap.sql("select count(*) as n from crsp.msf")
    assert isinstance(lazy, LazyResult)
    assert not isinstance(lazy, duckdb.DuckDBPyRelation)
    rows = sbx.snap.dataset("crsp.msf").row_count
    assert lazy.df()["n"][0] == rows
    assert lazy.arrow().column("n").to_pylist() == [rows]
    assert lazy.fetchall() == [(rows,)]
    for name in ("query", "execute", "sql_query", "create", "create_view", "to_parquet", "cursor"):
        assert not hasattr(lazy, name), name
    public = {n for n in dir(lazy) if not n.startswith("_")}
    assert public <= {"df", "arrow", "pl", "fetchall", "batches", "head", "sql"}
    assert lazy.head(1).fetchall() == [(rows,)]
    swapped = sbx.snap.sql("select 1 as x")
    swapped.sql = "COPY crsp.msf TO 'x.csv'"
    with pytest.raises((QueryRejectedError, QueryError)):  # head wraps it; the run checks again
        swapped.head(1).fetchall()
    with pytest.raises(QueryRejectedError):
        sbx.snap.sql("COPY crsp.msf TO 'x.csv'")


def test_lazy_result_revalidates_a_swapped_statement(sbx: Sandbox, tmp_path: Path) -> None:
    """Overwriting LazyResult.sql with a COPY does not bypass the allow-list."""
    lazy = sbx.snap.sql("select 1 as x")
    lazy.sql = f"COPY (select 1) TO '{sbx.root / 'data' / 'swap.parquet'}'"
    for fetch in (lazy.df, lazy.arrow, lazy.fetchall):
        with pytest.raises(QueryRejectedError):
            fetch()
    assert not (sbx.root / "data" / "swap.parquet").exists()


# -- timeout --------------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["query", "arrow", "sql"])
def test_runaway_query_is_interrupted(sbx: Sandbox, how: str) -> None:
    """A runaway SELECT with timeout_s=0.5 raises QueryTimeoutError fast; the next query works."""
    start = time.monotonic()
    with pytest.raises(QueryTimeoutError) as info:
        if how == "sql":
            sbx.snap.sql(RUNAWAY).fetchall(timeout_s=0.5)
        else:
            getattr(sbx.snap, how)(RUNAWAY, timeout_s=0.5)
    elapsed = time.monotonic() - start
    assert 0.4 <= elapsed < 5, elapsed
    assert info.value.timeout_s == 0.5
    assert isinstance(info.value, TimeoutError)
    assert sbx.snap.query("select count(*) as n from crsp.msf")["n"][0] == (
        sbx.snap.dataset("crsp.msf").row_count
    )


def test_vault_setting_sets_the_default_timeout(sbx: Sandbox) -> None:
    """VaultSettings.query_timeout_s applies to every query that passes no timeout_s."""
    wh = Warehouse(sbx.root, settings=wrdsvault.VaultSettings(query_timeout_s=0.5))
    try:
        start = time.monotonic()
        with pytest.raises(QueryTimeoutError):
            wh.query(RUNAWAY)
        assert time.monotonic() - start < 5
        assert wh.query("select 1 as x")["x"][0] == 1
    finally:
        wh.close()


def test_pivot_with_an_in_list_is_one_select(sbx: Sandbox) -> None:
    """PIVOT naming its values (the suggested alternative) runs; without them it is refused."""
    permnos = sorted(sbx.snap.query("select distinct permno from crsp.msf")["permno"])[:2]
    values = ", ".join(str(int(p)) for p in permnos)
    df = sbx.snap.query(
        f"PIVOT (select permno from crsp.msf) ON permno IN ({values}) USING count(*)"
    )
    assert len(df) == 1 and len(df.columns) == 2
    assert list(df.iloc[0]) == [
        sbx.snap.query("select count(*) from crsp.msf where permno = $1", [int(p)]).iloc[0, 0]
        for p in permnos
    ]
    with pytest.raises(QueryRejectedError) as info:
        sbx.snap.query("PIVOT crsp.msf ON permno USING count(*)")
    assert "PIVOT" in str(info.value) and "IN (" in str(info.value)


def test_statement_at_the_planning_limit_runs(sbx: Sandbox) -> None:
    """1,000 UNION ALL terms run; 1,001 are refused naming the limit; materialized CTEs pass."""
    at_limit = " union all ".join(f"select {i} as x" for i in range(MAX_SELECT_BLOCKS))
    assert len(sbx.snap.query(at_limit)) == MAX_SELECT_BLOCKS
    with pytest.raises(QueryRejectedError) as info:
        sbx.snap.query(at_limit + " union all select -1", timeout_s=1)
    assert info.value.statement_type == "TOO_COMPLEX"
    assert "1,001 SELECT blocks" in str(info.value) and "at most 1,000" in str(info.value)
    # DuckDB materializes a CTE used twice, so doubling chains plan once per CTE: accepted.
    doubling = (
        "with a0 as (select 1 as x), "
        + ", ".join(
            f"a{i} as (select * from a{i - 1} union all select * from a{i - 1})"
            for i in range(1, 16)
        )
        + " select count(*) as n from a15"
    )
    assert sbx.snap.query(doubling)["n"][0] == 2**15


@pytest.mark.parametrize("value", [-1, 0, -0.5, float("nan"), float("inf"), float("-inf")])
def test_bad_timeouts_are_refused_with_the_documented_error(sbx: Sandbox, value: float) -> None:
    """timeout_s <= 0, NaN or infinite raises InvalidValueError from every entry point."""
    calls = [
        lambda: sbx.snap.query("select 1", timeout_s=value),
        lambda: sbx.snap.arrow("select 1", timeout_s=value),
        lambda: sbx.snap.sql("select 1").df(timeout_s=value),
        lambda: sbx.snap.sql("select 1").fetchall(timeout_s=value),
        lambda: sbx.wh.query("select 1", timeout_s=value),
        lambda: wrdsvault.VaultSettings(query_timeout_s=value),
    ]
    for call in calls:
        with pytest.raises(wrdsvault.InvalidValueError) as info:
            call()
        assert "finite number of seconds > 0" in str(info.value)
    with pytest.raises(TypeError):
        sbx.snap.query("select 1", timeout_s="1")  # type: ignore[arg-type]


@pytest.mark.parametrize("raw", ["-1", "0", "nan", "inf", "abc"])
def test_bad_timeout_in_the_environment_or_vault_json(sbx: Sandbox, raw: str) -> None:
    """A bad WRDSVAULT_QUERY_TIMEOUT_S is InvalidValueError; in vault.json, VaultFormatError."""
    with pytest.raises(wrdsvault.InvalidValueError, match="WRDSVAULT_QUERY_TIMEOUT_S"):
        wrdsvault.VaultSettings().with_env({"WRDSVAULT_QUERY_TIMEOUT_S": raw})
    if raw != "abc":
        with pytest.raises(wrdsvault.VaultFormatError, match="query_timeout_s"):
            wrdsvault.VaultSettings.from_json({"query_timeout_s": float(raw)}, where="vault.json")


def duckdb_shows_memory_limit(value: str) -> str:
    """How DuckDB prints ``memory_limit`` once set to ``value`` (it rounds to binary units)."""
    con = duckdb.connect()
    try:
        con.execute("SET memory_limit = $1", [value])
        return str(con.execute("select current_setting('memory_limit')").fetchall()[0][0])
    finally:
        con.close()


def test_query_memory_and_threads_settings_reach_the_connection(
    sbx: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    """query_memory_limit and query_threads (vault.json or WRDSVAULT_*) apply to every query."""
    monkeypatch.setenv("WRDSVAULT_QUERY_MEMORY_LIMIT", "256MB")
    monkeypatch.setenv("WRDSVAULT_QUERY_THREADS", "1")
    with Warehouse(sbx.root) as wh:
        assert wh.settings.query_memory_limit == "256MB" and wh.settings.query_threads == 1
        for snap in (wh.snapshot(), wh.snapshot(sbx.v1.id)):
            with snap:
                con = snap._acquire()
                try:
                    cur = con._db.con.cursor()
                    limit, threads = cur.execute(
                        "select current_setting('memory_limit'), current_setting('threads')"
                    ).fetchall()[0]
                    cur.close()
                finally:
                    con.release()
            assert (limit, threads) == (duckdb_shows_memory_limit("256MB"), 1)
    for name, value in [
        ("query_memory_limit", "lots"),
        ("query_memory_limit", "-1GB"),
        ("query_threads", 0),
    ]:
        with pytest.raises(wrdsvault.InvalidValueError):
            wrdsvault.VaultSettings(**{name: value})
        with pytest.raises(wrdsvault.InvalidValueError):
            wrdsvault.VaultSettings().with_env({f"WRDSVAULT_{name.upper()}": str(value)})


# -- threads --------------------------------------------------------------------------------------

SLOW = "select count(*) as n from range(40000000) t(i) where i % 7 = 3"
SLOW_N = len(range(3, 40000000, 7))


def test_threads_query_one_snapshot_at_once(sbx: Sandbox) -> None:
    """Eight threads query one snapshot at the same time (a cursor each); every answer is right."""
    rows = sbx.snap.dataset("crsp.msf").row_count
    start = threading.Barrier(8)

    def work(i: int) -> list[int]:
        start.wait()
        return [
            int(sbx.snap.query("select count(*) + $1 as n from crsp.msf", [i])["n"][0])
            for _ in range(5)
        ]

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(work, range(8)))
    assert results == [[rows + i] * 5 for i in range(8)]


@pytest.mark.parametrize("closer", ["Snapshot.close", "Warehouse.close"])
def test_close_during_a_running_query_lets_it_finish(sbx: Sandbox, closer: str) -> None:
    """close() while another thread's query runs: the query answers, then the connection and
    its spill folder go away; the snapshot reopens on the next query."""
    wh = Warehouse(sbx.root)
    try:
        snap = wh.snapshot(sbx.snap.id)
        running = threading.Event()
        result: dict[str, Any] = {}

        def fetch(rel: duckdb.DuckDBPyRelation) -> Any:
            running.set()  # the query holds its lease and is about to run
            return rel.fetchall()

        def run() -> None:
            try:
                if closer == "Warehouse.close":
                    result["rows"] = wh._run_latest(SLOW, None, None, fetch)
                else:
                    result["rows"] = snap._run(SLOW, None, None, fetch)
            except BaseException as exc:  # reported below, with its type
                result["error"] = exc

        worker = threading.Thread(target=run)
        worker.start()
        running.wait(timeout=60)
        con = (wh._latest if closer == "Warehouse.close" else snap)._con
        assert con is not None
        tmp = Path(con._tmp)
        assert tmp.is_dir()
        if closer == "Warehouse.close":
            wh.close()
        else:
            snap.close()
        worker.join(timeout=120)
        assert "error" not in result, repr(result.get("error"))
        assert result["rows"] == [(SLOW_N,)]
        assert con.closed and not tmp.exists()
        assert snap.query("select count(*) as n from crsp.msf")["n"][0] == (
            snap.dataset("crsp.msf").row_count
        )
        snap.close()
    finally:
        wh.close()


# -- symlinks and awkward roots -------------------------------------------------------------------

_WATCHING: list[bool] = []
_OPENED: list[str] = []


def _audit(event: str, args: tuple[Any, ...]) -> None:
    # Records the paths Python opens while a symlink test watches (audit hooks cannot be removed;
    # this one does nothing unless a test is watching).
    if _WATCHING and event == "open" and args and isinstance(args[0], (str, bytes, os.PathLike)):
        _OPENED.append(os.fsdecode(args[0]))


sys.addaudithook(_audit)


LEVELS = ["file", "partition", "table", "library", "data"]


@pytest.mark.parametrize("level", LEVELS)
def test_symlink_in_a_pinned_path_is_refused(sbx: Sandbox, tmp_path: Path, level: str) -> None:
    """A pinned file or folder swapped for a symlink to a copy outside: IntegrityError on the
    first query that names its dataset (on open with verify=True), nothing read outside."""
    root = copy_vault(sbx.root, tmp_path / "vault")
    pinned = root / sbx.pinned.relative_to(sbx.root)
    victim = [pinned, *pinned.parents][LEVELS.index(level)]
    assert victim.parent.is_relative_to(root)
    outside = tmp_path / "outside" / victim.name
    outside.parent.mkdir()
    if victim.is_dir():
        shutil.copytree(victim, outside)
        shutil.rmtree(victim)
    else:
        shutil.copy2(victim, outside)
        victim.unlink()
    victim.symlink_to(outside)
    assert pinned.is_file()  # the path still "works" through the symlink
    library, table = pinned.relative_to(root).parts[1:3]
    wh = Warehouse(root)
    _OPENED.clear()
    _WATCHING.append(True)
    try:
        for verify in (False, True):
            with (
                pytest.raises(IntegrityError) as info,
                wh.snapshot(sbx.snap.id, verify=verify) as snap,
            ):
                assert not verify, "verify=True checks every file on open"
                snap.query(f"select count(*) from {library}.{table}")
            assert "symlink" in str(info.value)
            assert info.value.path == str(victim.relative_to(root))
    finally:
        _WATCHING.clear()
        wh.close()
    outside_real = outside.resolve()
    for opened in _OPENED:
        real = Path(os.path.realpath(opened))
        assert real != outside_real and outside_real not in real.parents, opened


def test_symlink_planted_before_the_first_query_is_refused(sbx: Sandbox, tmp_path: Path) -> None:
    """A pinned file swapped for a symlink after open but before the first query: IntegrityError."""
    root = copy_vault(sbx.root, tmp_path / "vault")
    with Warehouse(root) as wh:
        snap = wh.snapshot(sbx.snap.id)
        try:
            victim = snap.files("crsp.msf")[0]
            outside = tmp_path / "outside.parquet"
            shutil.copy2(snap.files("crsp.msf")[1], outside)  # another year's rows
            victim.unlink()
            victim.symlink_to(outside)
            with pytest.raises(IntegrityError):
                snap.query("select count(*) from crsp.msf")
        finally:
            snap.close()


def test_vault_root_reached_through_a_symlink_works(sbx: Sandbox, tmp_path: Path) -> None:
    """Warehouse(link-to-vault) resolves the root to its real path and answers queries."""
    real = copy_vault(sbx.root, tmp_path / "real" / "vault")
    link = tmp_path / "link"
    link.symlink_to(real)
    with Warehouse(link) as wh:
        assert wh.root == real.resolve()
        snap = wh.snapshot(sbx.snap.id, verify=True)
        try:
            for path in snap.files("crsp.msf"):
                assert real.resolve() in path.parents
            n = snap.query("select count(*) as n from crsp.msf")["n"][0]
            assert n == snap.dataset("crsp.msf").row_count
            with pytest.raises(QueryError, match=PERMISSION):
                snap.query(f"select * from read_text('{link / 'vault.json'}')")
        finally:
            snap.close()


@pytest.mark.parametrize(
    "name", ["it's a vault", 'a "quoted" vault; drop view crsp.msf; --', "v $1 %s {x}"]
)
def test_vault_root_with_quotes_and_spaces_works(sbx: Sandbox, tmp_path: Path, name: str) -> None:
    """Views are built without string interpolation: quotes, ';', '$1' in the root are harmless."""
    root = copy_vault(sbx.root, tmp_path / name / "vault")
    with Warehouse(root) as wh:
        snap = wh.snapshot(sbx.snap.id)
        try:
            assert "'" in str(snap.files("crsp.msf")[0]) or " " in str(snap.files("crsp.msf")[0])
            for dataset in DATASETS:
                n = snap.query(f"select count(*) as n from {dataset}")["n"][0]
                assert n == snap.dataset(dataset).row_count
            path = str(snap.files("crsp.msf")[0])
            by_param = snap.query("select count(*) as n from read_parquet($1)", [path])["n"][0]
            assert by_param == snap.dataset("crsp.msf").partitions[0].row_count
        finally:
            snap.close()


def test_dataset_names_with_quotes_never_reach_sql(sbx: Sandbox, tmp_path: Path) -> None:
    """A dataset name holding a quote or ';' is refused before any view or file exists."""
    root = copy_vault(sbx.root, tmp_path / "vault")
    before = entry_digests(root)
    with Warehouse(root, source=SampleSource(**SOURCE_PARAMS, vintage=1)) as wh:
        for name in ("crsp.m'sf", "crsp.msf; copy (select 1) to 'x.csv'", 'crsp."msf"'):
            with pytest.raises(wrdsvault.InvalidNameError):
                wh.sync(name)
            with pytest.raises(wrdsvault.InvalidNameError):
                wh.snapshot("latest").files(name)
    assert entry_digests(root) == before


@pytest.mark.parametrize(
    ("name", "sibling"),
    [
        pytest.param("v[ab]", None, id="brackets-alone"),
        pytest.param("v?x", None, id="question-alone"),
        pytest.param(
            "v[ab]",
            "va",
            id="brackets-sibling",
        ),
        pytest.param(
            "v?x",
            "vax",
            id="question-sibling",
        ),
        pytest.param(
            "v*",
            "vz",
            id="star-sibling",
        ),
    ],
)
def test_vault_root_with_glob_characters(
    sbx: Sandbox, tmp_path: Path, name: str, sibling: str | None
) -> None:
    """A root whose path holds glob characters answers from its own files only."""
    # HOLE (_query.py PinnedConnection._build): con.read_parquet(paths) treats each pinned path as
    # a glob pattern, so ".../v[ab]/data/..." matches the sibling vault "va" instead of itself;
    # allowed_paths then refuses the sibling's file and every query on the view fails (without
    # the second wall it would silently read the other vault's data).
    root = copy_vault(sbx.root, tmp_path / name)
    if sibling is not None:
        copy_vault(sbx.root, tmp_path / sibling)
    with Warehouse(root) as wh:
        snap = wh.snapshot(sbx.snap.id)
        try:
            n = snap.query("select count(*) as n from crsp.msf")["n"][0]
            assert n == snap.dataset("crsp.msf").row_count
        finally:
            snap.close()


# -- SQL across snapshots -------------------------------------------------------------------------


def test_each_alias_sees_only_its_own_snapshot(sbx: Sandbox) -> None:
    """In query_across, old.crsp.msf holds vintage 1's rows and new.crsp.msf vintage 2's."""
    got = sbx.wh.query_across(
        {"old": sbx.v1.id, "new": sbx.snap.id},
        "select (select count(*) from old.crsp.msf) as o, (select count(*) from new.crsp.msf) "
        "as n, (select count(*) from new.crsp.msf n join old.crsp.msf o using (permno, date) "
        "where o.ret is distinct from n.ret) as restated",
    )
    assert int(got["o"][0]) == sbx.v1.dataset("crsp.msf").row_count
    assert int(got["n"][0]) == sbx.snap.dataset("crsp.msf").row_count
    assert int(got["o"][0]) < int(got["n"][0])
    assert int(got["restated"][0]) > 0


def test_an_alias_cannot_read_files_no_alias_pins(sbx: Sandbox) -> None:
    """With only the latest snapshot aliased, a vintage-1 file (on disk) is refused by path."""
    with pytest.raises(QueryError, match=PERMISSION):
        sbx.wh.query_across(
            {"new": sbx.snap.id}, f"select count(*) from read_parquet('{sbx.stale}')"
        )
    with pytest.raises(QueryError, match="old"):  # no catalog "old" exists: nothing to reach
        sbx.wh.query_across({"new": sbx.snap.id}, "select count(*) from old.crsp.msf")
    with pytest.raises(QueryError, match=PERMISSION):
        sbx.wh.query_across(
            {"old": sbx.v1.id, "new": sbx.snap.id},
            f"select * from read_csv('{sbx.fmt['secret']}')",
        )


@pytest.mark.parametrize(
    "alias",
    [
        "main",
        "memory",
        "system",
        "temp",
        "pg_catalog",
        "information_schema",
        "select",
        "from",
        "crsp",  # a library of the snapshots: crsp.msf would be ambiguous
        "new\"; attach 'x' as y; --",
        "new.crsp",
        "New",
        "",
        "1st",
        "a" * 64,
    ],
)
def test_alias_names_are_validated(sbx: Sandbox, alias: str) -> None:
    """An alias must be a plain lower-case name that is no DuckDB reserved name or library."""
    with pytest.raises(wrdsvault.InvalidNameError) as info:
        sbx.wh.query_across({alias: sbx.snap.id}, "select 1")
    assert info.value.kind == "alias"


def test_query_across_without_aliases_or_with_bad_types(sbx: Sandbox) -> None:
    """No alias is an InvalidValueError; a non-dict, or a non-str ref, is a TypeError."""
    with pytest.raises(wrdsvault.InvalidValueError):
        sbx.wh.query_across({}, "select 1")
    with pytest.raises(TypeError):
        sbx.wh.query_across([("new", "latest")], "select 1")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        sbx.wh.query_across({"new": 1}, "select 1")  # type: ignore[dict-item]


def test_lazy_result_streams_batches_under_the_sandbox(sbx: Sandbox) -> None:
    """LazyResult.batches streams the rows; the time limit and the walls hold while it runs."""
    lazy = sbx.snap.sql("select * from crsp.msf order by permno, date")
    batches = list(lazy.batches(100))
    assert sum(b.num_rows for b in batches) == sbx.snap.dataset("crsp.msf").row_count
    assert all(b.num_rows <= 100 for b in batches) and len(batches) > 1
    with pytest.raises(QueryTimeoutError):
        list(sbx.snap.sql(RUNAWAY).batches(timeout_s=0.2))
    with pytest.raises(QueryError, match=PERMISSION):
        list(sbx.snap.sql(f"select * from read_parquet('{sbx.stale}')").batches())
    with pytest.raises(wrdsvault.InvalidValueError):
        list(sbx.snap.sql("select 1").batches(0))
