"""WrdsSource against a real PostgreSQL laid out like WRDS, through the real ``wrds`` client.

No mocks: every test talks to the session's PostgreSQL server (``pgserver``), in a database
built by `WrdsReplica` from `SampleSource` (both type profiles), and syncs into a real vault.
Faults are real too: backends are killed with ``pg_terminate_backend`` and tables are locked
from a second connection.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import math
import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg2
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from _helpers.disk import file_paths
from _helpers.sources import Wrapping
from wrdsvault import Progress, Warehouse
from wrdsvault.datasets import BUILTIN_SPECS, DatasetSpec, builtin_spec
from wrdsvault.errors import SourceError, SyncError, UnknownDatasetError
from wrdsvault.sources import SampleSource, WrdsSource
from wrdsvault.sources.base import COMMENT_KEY, SOURCE_TYPE_KEY
from wrdsvault.sources.wrds import arrow_type, connect, parse_comment
from wrdsvault.testing import REPLICA_PASSWORD, REPLICA_USER, WrdsReplica

pytestmark = pytest.mark.postgres

MakeReplica = Callable[..., AbstractContextManager[WrdsReplica]]
DATASETS = SampleSource().datasets
EXTREME_DAY = dt.date(2022, 6, 15)


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def short_type(formatted: str) -> str:
    """WRDS's spelling of a format_type() result, as SampleSource declares it."""
    out = re.sub(r"^character varying", "varchar", formatted)
    return re.sub(r"^character(?=\(|$)", "char", out)


def pg_table(rep: WrdsReplica, dataset: str) -> tuple[list[tuple[str, str]], list[tuple[Any, ...]]]:
    """Columns (name, declared type) and rows of a table, read independently with psycopg2."""
    library, table = dataset.split(".")
    with contextlib.closing(psycopg2.connect(rep.dsn)) as con, con.cursor() as cur:
        cur.execute(
            "SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a "
            "WHERE a.attrelid = to_regclass(%s) AND a.attnum > 0 AND NOT a.attisdropped "
            "ORDER BY a.attnum",
            (f"{library}.{table}",),
        )
        columns = [(name, short_type(t)) for name, t in cur.fetchall()]
        cur.execute(f'SELECT * FROM "{library}"."{table}"')
        rows = cur.fetchall()
    return columns, rows


def canon(value: Any, typ: pa.DataType) -> tuple[str, Any]:
    """A value as (python type, comparable value); PostgreSQL's unbounded numeric -> float."""
    if value is None:
        return ("null", None)
    if pa.types.is_floating(typ) and isinstance(value, Decimal):
        value = float(value)
    if isinstance(value, float):
        if math.isnan(value):
            return ("float", "nan")
        if value == 0.0:
            return ("float", "-0" if math.copysign(1.0, value) < 0 else "+0")
    return (type(value).__name__, value)


def assert_same_table(rep: WrdsReplica, wh: Warehouse, dataset: str) -> int:
    """PostgreSQL and the vault hold the same columns, types and values (NULLs included)."""
    columns, pg_rows = pg_table(rep, dataset)
    snap = wh.snapshot()
    entry = snap.dataset(dataset)
    assert [(c.name, c.source_type) for c in entry.columns] == columns
    expected = pa.schema(
        [pa.field(n, arrow_type(t), metadata={SOURCE_TYPE_KEY: t.encode()}) for n, t in columns]
    )
    assert [c.type for c in entry.columns] == [str(f.type) for f in expected]
    for path in snap.files(dataset):
        assert pq.read_schema(path).equals(expected, check_metadata=True)
    names = [n for n, _ in columns]
    select = ", ".join(f'"{n}"' for n in names)
    got = snap.arrow(f"SELECT {select} FROM {dataset}").to_pylist()
    types = [f.type for f in expected]
    want_rows = sorted(
        (tuple(canon(v, t) for v, t in zip(r, types, strict=True)) for r in pg_rows), key=repr
    )
    got_rows = sorted(
        (tuple(canon(r[n], t) for n, t in zip(names, types, strict=True)) for r in got), key=repr
    )
    assert len(got_rows) == len(want_rows) == entry.row_count
    assert got_rows == want_rows
    return len(want_rows)


def statements_since(rep: WrdsReplica, offset: int) -> str:
    """The server log written since ``offset`` (statements are logged where enabled)."""
    with rep.server.log_path.open("rb") as f:
        f.seek(offset)
        return f.read().decode(errors="replace")


def log_statements(rep: WrdsReplica) -> int:
    """Log every statement of new sessions in this database; return the log's current size."""
    rep.execute(f"ALTER DATABASE {rep.dbname} SET log_statement = 'all'")
    return rep.server.log_path.stat().st_size


def insert_extremes(rep: WrdsReplica, profile: str) -> None:
    """Rows at the edges of the declared types, plus '' vs NULL and awkward text."""
    if profile == "2025":
        big, small = Decimal("999999.99999"), Decimal("-999999.99999")
        dsf = [
            ("", 2147483647, -2147483648, 0, 32767, None, small, big, Decimal("-0.00001"),
             Decimal("123456789012345.5"), Decimal("9999.999999"), None, Decimal("0.00001"),
             Decimal(0), Decimal("1E-20"), None, big, None, Decimal("-9999.999999")),
            (None, 2147483646, 1, None, -32768, 0, None, None, Decimal("-12.50000"), None,
             None, None, None, Decimal("1E+15"), None, None, None, 0, None),
        ]  # fmt: skip
    else:
        inf, nan = float("inf"), float("nan")
        dsf = [
            ("", 2147483647.0, -2147483648.0, 0.0, 32767.0, None, -1.7976931348623157e308,
             1.7976931348623157e308, nan, 5e-324, inf, -0.0, 0.1 + 0.2, 0.0, 1e-300, None,
             -inf, None, -1.5),
            (None, 2147483646.0, 1.0, None, -32768.0, 0.0, None, None, -12.5, None, None, None,
             None, 1e15, None, None, None, 0.0, None),
        ]  # fmt: skip
    cols = (
        "cusip, permno, permco, issuno, hexcd, hsiccd, bidlo, askhi, prc, vol, ret, bid, "
        "ask, shrout, cfacpr, cfacshr, openprc, numtrd, retx"
    )
    for row in dsf:
        rep.execute(
            f"INSERT INTO crsp_a_stock.dsf (date, {cols}) VALUES (%s{', %s' * len(row)})",
            [EXTREME_DAY, *row],
        )
    fyear = 2022 if profile == "2025" else 2022.0
    for gvkey, tic, conm in (
        ("000042", "", 'Leading "Zeros", Inc.\nsecond line'),
        ("000043", None, ""),
    ):
        rep.execute(
            "INSERT INTO comp_na_daily_all.funda (gvkey, datadate, fyear, indfmt, consol, "
            "popsrc, datafmt, tic, conm, \"at\") VALUES (%s, %s, %s, 'INDL', 'C', 'D', 'STD', "
            "%s, %s, NULL)",
            [gvkey, EXTREME_DAY, fyear, tic, conm],
        )
    rep.execute("ANALYZE")


@pytest.fixture(scope="module", params=["2025", "sas"])
def loaded(request: pytest.FixtureRequest, make_replica: MakeReplica) -> Iterator[WrdsReplica]:
    """A replica of every SampleSource dataset (one per type profile), with extreme rows."""
    with make_replica(profile=request.param) as rep:
        insert_extremes(rep, request.param)
        yield rep


class KillAfterFirstBatch(Wrapping):
    """A source that hands on WrdsSource's rows and kills the COPY backend after one batch."""

    def __init__(self, inner: WrdsSource, rep: WrdsReplica) -> None:
        super().__init__(inner)
        self.rep = rep
        self.killed = 0

    def read_partition(
        self, spec: DatasetSpec, year: int | None, *, batch_rows: int = 131_072
    ) -> Iterator[pa.RecordBatch]:
        batches = self.inner.read_partition(spec, year, batch_rows=batch_rows)
        first = next(batches)
        rows = self.rep.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s "
            "AND query LIKE 'COPY (%%' AND state = 'active' AND backend_type = 'client backend'",
            [self.rep.dbname],
        )
        self.killed += len(rows)
        yield first
        yield from batches


def make_big_table(rep: WrdsReplica, rows: int = 300_000) -> None:
    """A non-WRDS table of ~70 MB of CSV in one year: more than the COPY pipeline buffers."""
    rep.execute("CREATE SCHEMA big_all")
    rep.execute("CREATE SCHEMA big")
    rep.execute(
        "CREATE TABLE big_all.t AS SELECT g AS id, DATE '2022-01-01' + (g %% 365) AS d, "
        "repeat(md5(g::text), 6) AS pad FROM generate_series(1, %s) AS g",
        [rows],
    )
    rep.execute("CREATE VIEW big.t AS SELECT * FROM big_all.t")
    rep.execute("ANALYZE big_all.t")


# --------------------------------------------------------------------------------------------
# Types and comments (no server needed, but cheap)
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("declared", "expected"),
    [
        ("smallint", pa.int16()),
        ("integer", pa.int32()),
        ("bigint", pa.int64()),
        ("double precision", pa.float64()),
        ("real", pa.float32()),
        ("numeric(11,5)", pa.decimal128(11, 5)),
        ("numeric(38,0)", pa.decimal128(38, 0)),
        ("numeric(50,10)", pa.float64()),
        ("numeric", pa.float64()),
        ("varchar(8)", pa.string()),
        ("char(1)", pa.string()),
        ("text", pa.string()),
        ("date", pa.date32()),
        ("time without time zone", pa.time64("us")),
        ("timestamp(3) without time zone", pa.timestamp("us")),
        ("timestamp with time zone", pa.timestamp("us", tz="UTC")),
        ("boolean", pa.bool_()),
        ("jsonb", None),
    ],
)
def test_declared_types_map_explicitly(declared: str, expected: pa.DataType | None) -> None:
    """Every declared PostgreSQL type maps to one Arrow type (None: kept as text)."""
    assert arrow_type(declared) == expected


def test_comment_formats() -> None:
    """Both WRDS comment formats parse; anything else is unknown."""
    assert parse_comment("Daily Stock - Securities (Updated 2025-02-08)") == "2025-02-08"
    assert parse_comment("Last modified: 06/14/2024 02:40:46") == "06/14/2024 02:40:46"
    assert parse_comment("Daily Stock - Securities") is None
    assert parse_comment(None) is None


# --------------------------------------------------------------------------------------------
# Full sync: value for value, type for type
# --------------------------------------------------------------------------------------------


def test_full_sync_equals_postgres_value_for_value(loaded: WrdsReplica, vault_dir: Path) -> None:
    """Every dataset syncs; the vault equals PostgreSQL in columns, types, values and NULLs."""
    with Warehouse(vault_dir, source=loaded.source()) as wh:
        report = wh.sync(DATASETS)
        assert report.committed
        for name in DATASETS:
            assert report[name].status == "added"
            assert assert_same_table(loaded, wh, name) > 0
        snap = wh.snapshot()
        funda = snap.arrow(
            "SELECT gvkey, tic, conm FROM comp.funda WHERE gvkey IN ('000042', '000043') "
            "ORDER BY gvkey"
        ).to_pylist()
        dsf = snap.arrow(
            "SELECT cusip, permno, prc, askhi FROM crsp.dsf WHERE permno >= 2147483646 "
            "ORDER BY permno"
        ).to_pylist()
    assert funda == [
        {"gvkey": "000042", "tic": "", "conm": 'Leading "Zeros", Inc.\nsecond line'},
        {"gvkey": "000043", "tic": None, "conm": ""},
    ]
    assert [r["cusip"] for r in dsf] == [None, ""]
    if isinstance(dsf[0]["prc"], Decimal):  # profile 2025: numeric(11,5)
        assert dsf[0]["prc"] == Decimal("-12.50000")
        assert dsf[1]["askhi"] == Decimal("999999.99999")
    else:  # profile sas: double precision
        assert dsf[0]["prc"] == -12.5
        assert math.isnan(dsf[1]["prc"])
        assert dsf[1]["askhi"] == 1.7976931348623157e308


def test_replica_sync_is_byte_identical_to_sample_source(
    make_replica: MakeReplica, replica_sample: dict[str, Any], tmp_path: Path
) -> None:
    """Mirrored through PostgreSQL, the Parquet files equal those written from SampleSource."""
    names = ["crsp.msf", "crsp.ccmxpf_lnkhist", "ff.factors_monthly", "comp.funda"]
    sample = SampleSource(**replica_sample, profile="sas")
    with (
        make_replica(datasets=names, profile="sas") as rep,
        Warehouse(tmp_path / "a", source=rep.source()) as a,
        Warehouse(tmp_path / "b", source=sample) as b,
    ):
        a.sync(names)
        b.sync(names)
        for name in names:
            got, want = a.snapshot().dataset(name), b.snapshot().dataset(name)
            assert got.columns == want.columns
            assert [p.sha256 for p in got.partitions] == [p.sha256 for p in want.partitions]


def test_replica_column_comments_are_the_source_labels(
    loaded: WrdsReplica, replica_sample: dict[str, Any]
) -> None:
    """The replica's view columns carry SampleSource's labels (WRDS's), as describe_table
    shows them on WRDS, for every column of every table."""
    sample = SampleSource(**replica_sample)
    rows = loaded.execute(
        """SELECT n.nspname || '.' || c.relname, a.attname, col_description(c.oid, a.attnum)
           FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
           JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0
           WHERE c.relkind = 'v' AND n.nspname IN ('crsp', 'comp', 'ff')"""
    )
    got = {(table, column): comment for table, column, comment in rows}
    want = {
        (name, f.name): f.metadata[COMMENT_KEY].decode()
        for name in sample.datasets
        for f in sample.describe(BUILTIN_SPECS[name]).schema
    }
    assert got == want
    assert got["comp.funda", "at"] == "Assets - Total"


def test_describe_reads_comment_estimate_and_declared_types(loaded: WrdsReplica) -> None:
    """describe(): WRDS's types from the catalog, the comment as marker, a planner estimate."""
    source = loaded.source()
    try:
        msf = source.describe(BUILTIN_SPECS["crsp.msf"])
        funda = source.describe(BUILTIN_SPECS["comp.funda"])
        link = source.describe(BUILTIN_SPECS["crsp.ccmxpf_lnkhist"])
        count = loaded.execute("SELECT count(*) FROM crsp.msf")[0][0]
    finally:
        source.close()
    assert msf.comment == msf.change_marker
    assert msf.change_marker is not None
    assert parse_comment(msf.change_marker) == "2023-12-12"
    assert funda.change_marker == "Last modified: 12/12/2023 02:40:46"
    assert link.comment is None
    assert link.change_marker is None
    assert msf.row_estimate is not None
    assert abs(msf.row_estimate - count) <= count * 0.1
    declared = [(f.name, f.metadata[SOURCE_TYPE_KEY].decode()) for f in msf.schema]
    assert declared == pg_table(loaded, "crsp.msf")[0]


def test_describe_costs_two_round_trips(make_replica: MakeReplica) -> None:
    """describe() sends two statements (table, privileges, comment and columns; the planner's
    estimate): a sync describes a table three times, each statement a network round trip."""
    with make_replica(datasets=["crsp.msf"]) as rep:
        log_statements(rep)
        source = rep.source()
        try:
            source.db  # noqa: B018 - log in first: the login's own statements are not counted
            offset = rep.server.log_path.stat().st_size
            info = source.describe(BUILTIN_SPECS["crsp.msf"])
            log = statements_since(rep, offset)
        finally:
            source.close()
        expected = pg_table(rep, "crsp.msf")[0]
    assert [(f.name, f.metadata[SOURCE_TYPE_KEY].decode()) for f in info.schema] == expected
    assert log.count("statement: ") == 2, log
    assert "information_schema.columns" in log and "EXPLAIN" in log


# --------------------------------------------------------------------------------------------
# Change detection
# --------------------------------------------------------------------------------------------


def test_unchanged_resync_is_skipped_without_reading(
    make_replica: MakeReplica, vault_dir: Path
) -> None:
    """Same table comment: no new snapshot, and no COPY or row hash reaches the server."""
    with make_replica(datasets=["crsp.msf"]) as rep:
        with Warehouse(vault_dir, source=rep.source()) as wh:
            first = wh.sync("crsp.msf")
        offset = log_statements(rep)
        with Warehouse(vault_dir, source=rep.source()) as wh:
            again = wh.sync("crsp.msf")
            assert [s.snapshot_id for s in wh.snapshots()] == [first.snapshot_id]
        log = statements_since(rep, offset)
    assert not again.committed
    assert again["crsp.msf"].status == "unchanged"
    assert "obj_description" in log  # statements of the new session are logged ...
    assert "COPY (" not in log  # ... and none of them read rows
    assert "hash_record_extended" not in log


def test_bumped_comment_rewrites_exactly_the_changed_year(
    make_replica: MakeReplica, vault_dir: Path
) -> None:
    """Rows updated in 2022 and the comment bumped: only 2022 is read and rewritten."""
    new_comment = "Monthly Stock - Securities (Updated 2024-02-08)"
    with (
        make_replica(datasets=["crsp.msf"]) as rep,
        Warehouse(vault_dir, source=rep.source()) as wh,
    ):
        wh.sync("crsp.msf")
        before = wh.snapshot().dataset("crsp.msf")
        rep.execute(
            "UPDATE crsp_a_stock.msf SET ret = ret + 0.000001 WHERE date >= '2022-01-01' AND "
            "date < '2023-01-01' AND ret IS NOT NULL AND permno = (SELECT min(permno) FROM "
            "crsp_a_stock.msf)"
        )
        rep.execute(f"COMMENT ON VIEW crsp.msf IS '{new_comment}'")
        offset = log_statements(rep)
        wh.source.close()  # reconnect: the new session logs its statements
        report = wh.sync("crsp.msf")
        log = statements_since(rep, offset)
        result = report["crsp.msf"]
        assert result.status == "updated"
        assert result.years_written == (2022,)
        assert result.years_reused == (2021, 2023)
        after = wh.snapshot().dataset("crsp.msf")
        assert after.comment == after.change_marker == new_comment
        assert before.partition(2021) == after.partition(2021)
        assert before.partition(2022).sha256 != after.partition(2022).sha256
        assert log.count("COPY (") == 1
        assert "'2022-01-01'" in log
        assert_same_table(rep, wh, "crsp.msf")


def test_data_changed_under_same_comment_needs_full(
    make_replica: MakeReplica, vault_dir: Path
) -> None:
    """WRDS's comment is the contract: a silent change is skipped until full=True reads it."""
    with (
        make_replica(datasets=["ff.factors_monthly"]) as rep,
        Warehouse(vault_dir, source=rep.source()) as wh,
    ):
        wh.sync("ff.factors_monthly")
        rep.execute("UPDATE ff_all.factors_monthly SET smb = 0.5 WHERE date = '2021-03-01'")
        skipped = wh.sync("ff.factors_monthly")
        assert skipped["ff.factors_monthly"].status == "unchanged"
        assert not skipped.committed
        old = "SELECT smb FROM ff.factors_monthly WHERE date = DATE '2021-03-01'"
        assert wh.snapshot().arrow(old).to_pylist() != [{"smb": 0.5}]
        forced = wh.sync("ff.factors_monthly", full=True)
        assert forced["ff.factors_monthly"].years_written == (2021,)
        assert forced["ff.factors_monthly"].years_reused == (2022, 2023)
        assert wh.snapshot().arrow(old).to_pylist() == [{"smb": 0.5}]


def test_table_without_comment_compares_content(make_replica: MakeReplica, vault_dir: Path) -> None:
    """No comment (or one WRDS never writes): marker None, so every sync compares content."""
    with (
        make_replica(datasets=["crsp.ccmxpf_lnkhist", "ff.factors_daily"]) as rep,
        Warehouse(vault_dir, source=rep.source()) as wh,
    ):
        rep.execute("COMMENT ON VIEW ff.factors_daily IS 'Fama-French daily factors'")
        first = wh.sync(["crsp.ccmxpf_lnkhist", "ff.factors_daily"])
        assert first["crsp.ccmxpf_lnkhist"].change_marker is None
        assert first["ff.factors_daily"].change_marker is None
        assert wh.snapshot().dataset("ff.factors_daily").comment == "Fama-French daily factors"
        same = wh.sync(["crsp.ccmxpf_lnkhist", "ff.factors_daily"])
        assert not same.committed
        assert same["crsp.ccmxpf_lnkhist"].years_reused == (None,)
        rep.execute(
            "UPDATE crsp_a_ccm.ccmxpf_lnkhist SET linkprim = 'J' WHERE gvkey = "
            "(SELECT min(gvkey) FROM crsp_a_ccm.ccmxpf_lnkhist)"
        )
        changed = wh.sync(["crsp.ccmxpf_lnkhist", "ff.factors_daily"])
        assert changed["crsp.ccmxpf_lnkhist"].years_written == (None,)
        assert changed["ff.factors_daily"].status == "unchanged"
        assert_same_table(rep, wh, "crsp.ccmxpf_lnkhist")
        # Without per-year markers the vault reads each year and compares SHA-256.
        with Warehouse(vault_dir, source=rep.source(year_markers=False)) as plain:
            again = plain.sync("ff.factors_daily")
        result = again["ff.factors_daily"]
        assert result.years_reused == (2021, 2022, 2023)
        assert result.years_written == ()
        assert result.status == "recorded"  # the same files, now with markers None


# --------------------------------------------------------------------------------------------
# Faults
# --------------------------------------------------------------------------------------------


def test_connection_killed_mid_partition_commits_nothing(
    make_replica: MakeReplica, vault_dir: Path
) -> None:
    """A COPY killed after batches were handed on fails retryably; the old snapshot stays."""
    with make_replica(datasets=["ff.factors_monthly"]) as rep:
        make_big_table(rep)
        with Warehouse(vault_dir, source=rep.source()) as wh:
            wh.sync("ff.factors_monthly")
        before_files = file_paths(vault_dir / "data", "*.parquet")
        killer = KillAfterFirstBatch(rep.source(retry_backoff_s=0.01), rep)
        with Warehouse(vault_dir, source=killer) as wh:
            before_ids = [s.snapshot_id for s in wh.snapshots()]
            with pytest.raises(SourceError) as caught:
                wh.sync("big.t", date_column="d")
            assert killer.killed == 1
            assert caught.value.retryable
            assert "never resumed halfway" in str(caught.value)
            assert [s.snapshot_id for s in wh.snapshots()] == before_ids
            assert wh.snapshot().datasets == ("ff.factors_monthly",)
            assert file_paths(vault_dir / "data", "*.parquet") == before_files
            assert not any((vault_dir / "tmp").glob("*/*"))
            # The same source reconnects; without the killer the next sync succeeds.
            killer.read_partition = killer.inner.read_partition  # type: ignore[method-assign]
            report = wh.sync("big.t", date_column="d")
            assert report["big.t"].rows_written == 300_000


class KillYear(KillAfterFirstBatch):
    """Kills the COPY backend after the first batch of one year only."""

    def __init__(self, inner: WrdsSource, rep: WrdsReplica, year: int) -> None:
        super().__init__(inner, rep)
        self.year = year
        self.read: list[int | None] = []

    def read_partition(
        self, spec: DatasetSpec, year: int | None, *, batch_rows: int = 131_072
    ) -> Iterator[pa.RecordBatch]:
        self.read.append(year)
        if year == self.year:
            return super().read_partition(spec, year, batch_rows=batch_rows)
        return self.inner.read_partition(spec, year, batch_rows=batch_rows)


def test_sync_interrupted_by_a_dropped_connection_resumes(
    make_replica: MakeReplica, vault_dir: Path
) -> None:
    """2020-2021 staged, the backend killed mid-2022: the retry reads only 2022 (and a year
    changed meanwhile), resumes the rest, and ends equal to PostgreSQL."""
    with make_replica(datasets=["ff.factors_monthly"]) as rep:
        rep.execute("CREATE SCHEMA big_all")
        rep.execute("CREATE SCHEMA big")
        rep.execute(
            "CREATE TABLE big_all.t AS SELECT g AS id, DATE '2019-01-01' + (g % 1461) AS d, "
            "repeat(md5(g::text), 6) AS pad FROM generate_series(1, 1200000) AS g"
        )
        rep.execute("CREATE VIEW big.t AS SELECT * FROM big_all.t")
        killer = KillYear(rep.source(retry_backoff_s=0.01), rep, 2022)
        with Warehouse(vault_dir, source=killer) as wh:
            with pytest.raises(SourceError, match="never resumed halfway"):
                wh.sync("big.t", date_column="d")
            assert killer.killed == 1
            assert wh.snapshots() == []
        assert killer.read == [2019, 2020, 2021, 2022]
        rep.execute("UPDATE big_all.t SET pad = 'changed' WHERE id = 7")  # a 2019 row
        offset = log_statements(rep)
        with Warehouse(vault_dir, source=rep.source()) as wh:
            report = wh.sync("big.t", date_column="d")
            log = statements_since(rep, offset)
            result = report["big.t"]
            assert result.years_written == (2019, 2020, 2021, 2022)
            assert result.years_resumed == (2020, 2021)
            assert log.count("COPY (") == 2  # 2019 (changed) and 2022 (never finished)
            assert "'2022-01-01'" in log and "'2019-01-01'" in log
            assert "'2020-01-01' AND" not in log
            assert wh.snapshot().arrow("SELECT pad FROM big.t WHERE id = 7").to_pylist() == [
                {"pad": "changed"}
            ]
            assert wh.snapshot().arrow("SELECT count(*) AS n FROM big.t").to_pylist() == [
                {"n": 1_200_000}
            ]
        assert not (vault_dir / "tmp" / "resume").exists()


def test_table_updated_during_the_sync_is_not_committed(
    make_replica: MakeReplica, vault_dir: Path
) -> None:
    """WRDS replaces a table while its years are being read: nothing is committed, the retry
    resumes the years whose checkpointed rows are current and records the new vintage."""
    new_comment = "Monthly Stock - Securities (Updated 2026-02-08)"

    def update_midway(event: Progress) -> None:
        if event.year == 2022 and not event.done and event.rows_read == 0:
            rep.execute(
                "UPDATE crsp_a_stock.msf SET ret = 0.5 WHERE date >= '2023-01-01' AND permno = "
                "(SELECT min(permno) FROM crsp_a_stock.msf)"
            )
            rep.execute(f"COMMENT ON VIEW crsp.msf IS '{new_comment}'")

    # One stream: 2023 is read after the update (in parallel it may be read before or after).
    with (
        make_replica(datasets=["crsp.msf"]) as rep,
        Warehouse(vault_dir, source=rep.source(streams=1)) as wh,
    ):
        with pytest.raises(SyncError, match="updated while it was being read"):
            wh.sync("crsp.msf", progress=update_midway)
        assert wh.snapshots() == []
        report = wh.sync("crsp.msf")
        result = report["crsp.msf"]
        assert result.change_marker == new_comment
        # One stream reads its years with one COPY (WrdsSource.read_partitions), which began
        # before the update: 2023's checkpoint holds the old rows and the marker computed from
        # them, which no longer matches, so 2023 is read again; 2021 and 2022 are resumed.
        assert result.years_resumed == (2021, 2022)
        assert result.years_written == (2021, 2022, 2023)
        assert_same_table(rep, wh, "crsp.msf")


def test_years_hint_hashes_only_the_years_synced(
    make_replica: MakeReplica, vault_dir: Path
) -> None:
    """sync(years=[2022]) counts and hashes 2022 only, not the whole table."""
    with make_replica(datasets=["crsp.dsf"]) as rep:
        source = rep.source()
        spec = builtin_spec("crsp.dsf")
        every = {p.year: p for p in source.partitions(spec)}
        some = source.partitions(spec, years=[2021, 2023])
        assert [p.year for p in some] == [2021, 2023]
        assert all(p == every[p.year] for p in some)
        assert source.partitions(spec, years=[1900]) == []
        source.close()
        offset = log_statements(rep)
        with Warehouse(vault_dir, source=rep.source()) as wh:
            report = wh.sync("crsp.dsf", years=[2022])
        log = statements_since(rep, offset)
        assert report["crsp.dsf"].years_written == (2022,)
        hashing = [line for line in log.splitlines() if "hash_record_extended" in line]
        assert len(hashing) == 1
        assert "'2022-01-01'" in hashing[0] and "'2023-01-01'" in hashing[0]


def test_connection_lost_before_first_batch_is_retried(
    make_replica: MakeReplica, vault_dir: Path
) -> None:
    """A COPY killed while waiting for a lock is retried on a new connection; the sync succeeds."""
    with make_replica(datasets=["ff.factors_monthly"]) as rep:
        make_big_table(rep, rows=20_000)
        source = rep.source(retry_backoff_s=0.01)
        spec = DatasetSpec(name="big.t", partition_column="d")
        source.describe(spec)
        source.partitions(spec)
        locker = psycopg2.connect(rep.dsn)
        watcher = psycopg2.connect(rep.dsn)
        watcher.autocommit = True
        killed: list[int] = []

        def kill_waiting_copy() -> None:
            deadline = time.monotonic() + 20
            with watcher.cursor() as cur:
                while time.monotonic() < deadline and not killed:
                    cur.execute(
                        "SELECT pid FROM pg_stat_activity WHERE datname = %s AND query LIKE "
                        "'COPY (%%' AND wait_event_type = 'Lock' AND "
                        "backend_type = 'client backend'",
                        [rep.dbname],
                    )
                    for (pid,) in cur.fetchall():
                        cur.execute("SELECT pg_terminate_backend(%s)", [pid])
                        killed.append(pid)
                    time.sleep(0.01)  # the poll interval of the deadline loop above
            locker.commit()  # release the lock: the retry may proceed

        with locker.cursor() as cur:
            cur.execute("LOCK TABLE big_all.t IN ACCESS EXCLUSIVE MODE")
        thread = threading.Thread(target=kill_waiting_copy)
        thread.start()
        try:
            rows = sum(b.num_rows for b in source.read_partition(spec, 2022))
        finally:
            thread.join()
            locker.close()
            watcher.close()
            source.close()
        assert len(killed) == 1
        assert rows == 20_000


def test_consumer_stopping_early_cancels_the_copy(make_replica: MakeReplica) -> None:
    """Closing the iterator mid-year cancels the COPY; the connection stays usable."""
    with make_replica(datasets=["ff.factors_monthly"]) as rep:
        make_big_table(rep)
        source = rep.source()
        spec = DatasetSpec(name="big.t", partition_column="d")
        try:
            batches = source.read_partition(spec, 2022, batch_rows=1000)
            first = next(batches)
            batches.close()
            assert first.num_rows == 1000
            assert first.schema.names == ["id", "d", "pad"]
            active = rep.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'COPY (%%' AND "
                "state = 'active'"
            )
            assert active == [(0,)]
            assert [p.row_count for p in source.partitions(spec)] == [300_000]
        finally:
            source.close()


def test_not_subscribed_library_is_a_clear_error(loaded: WrdsReplica, vault_dir: Path) -> None:
    """A library without USAGE for the account: SourceError naming the library, no password."""
    source = loaded.source(user=REPLICA_USER)
    with Warehouse(vault_dir, source=source) as wh:
        with pytest.raises(SourceError, match="not subscribed") as caught:
            wh.sync("secret.t", date_column="d")
        assert "'secret'" in str(caught.value)
        assert REPLICA_PASSWORD not in str(caught.value)
        assert not caught.value.retryable
        assert wh.sync("ff.factors_monthly").committed  # the account reads what it has


def test_sas_only_library_is_a_clear_error(loaded: WrdsReplica, vault_dir: Path) -> None:
    """TAQ lives only in SAS on the WRDS Cloud: say so, instead of 'no such library'."""
    with Warehouse(vault_dir, source=loaded.source()) as wh:
        with pytest.raises(SourceError, match="only as SAS data sets") as caught:
            wh.sync("taqmsec.ctm_20200102", date_column="date")
        assert not caught.value.retryable
        assert "TAQ" in str(caught.value)
    assert not vault_dir.exists()  # refused before the vault was created


def test_wrong_password_fails_once_without_prompt(
    loaded: WrdsReplica, capsys: pytest.CaptureFixture[str]
) -> None:
    """A refused login is a SourceError that points at ~/.pgpass and never tries WRDS's host."""
    kwargs = {**loaded.connect_kwargs(user=REPLICA_USER), "wrds_password": "Wrong-Secret-1"}
    source = WrdsSource(**kwargs)
    with pytest.raises(SourceError, match=r"\.pgpass") as caught:
        source.describe(BUILTIN_SPECS["crsp.msf"])
    assert not caught.value.retryable
    assert "Wrong-Secret-1" not in str(caught.value)
    assert "Wrong-Secret-1" not in repr(source)
    assert "wrds-pgdata" not in capsys.readouterr().out  # no fallback to the real host


def test_unknown_table_and_library(loaded: WrdsReplica, vault_dir: Path) -> None:
    """A missing table or library is UnknownDatasetError with close names suggested."""
    with Warehouse(vault_dir, source=loaded.source()) as wh:
        with pytest.raises(UnknownDatasetError) as caught:
            wh.sync("crsp.msff", date_column="date")
        assert "crsp.msf" in caught.value.known
        with pytest.raises(UnknownDatasetError, match="no library 'crsq'") as caught:
            wh.sync("crsq.msf", date_column="date")
        assert "crsp" in caught.value.known
    assert not vault_dir.exists()  # refused before the vault was created


def test_any_table_by_date_column_or_as_one_partition(loaded: WrdsReplica, tmp_path: Path) -> None:
    """A table without a built-in spec syncs by year of a date column, or whole; NULL dates
    are refused by year and kept whole."""
    loaded.execute("CREATE SCHEMA IF NOT EXISTS mylib")
    loaded.execute(
        "CREATE TABLE mylib.mytable (id bigint, d date, x numeric(12,2), s text, c char(3), "
        "ts timestamp with time zone, tl timestamp, tm time, b boolean, r real, j jsonb)"
    )
    loaded.execute(
        "INSERT INTO mylib.mytable VALUES "
        "(1, '2020-01-01', 1234567890.12, '', 'ab', '2020-01-01 12:00:00+02', "
        "'2020-01-01 23:59:59.999999', '23:59:59.5', true, 0.1, '{\"a\": 1}'), "
        "(2, '2020-12-31', -0.01, NULL, NULL, NULL, NULL, NULL, false, NULL, NULL), "
        "(3, '2021-06-30', NULL, 'NULL', 'x', '1999-12-31 23:00:00-05', NULL, '00:00', NULL, "
        "-3.5, '[]')"
    )
    with Warehouse(tmp_path / "by_year", source=loaded.source()) as wh:
        report = wh.sync("mylib.mytable", date_column="d")
        assert report["mylib.mytable"].years_written == (2020, 2021)
        rows = wh.snapshot().arrow("SELECT * FROM mylib.mytable ORDER BY id").to_pylist()
        cols = {
            c.name: (c.type, c.source_type) for c in wh.snapshot().dataset("mylib.mytable").columns
        }
    assert cols["x"] == ("decimal128(12, 2)", "numeric(12,2)")
    assert cols["ts"] == ("timestamp[us, tz=UTC]", "timestamp with time zone")
    assert cols["j"] == ("string", "jsonb")
    assert [r["s"] for r in rows] == ["", None, "NULL"]
    assert rows[0]["x"] == Decimal("1234567890.12")
    assert rows[0]["ts"] == dt.datetime(2020, 1, 1, 10, tzinfo=dt.timezone.utc)
    assert rows[2]["ts"] == dt.datetime(2000, 1, 1, 4, tzinfo=dt.timezone.utc)
    assert rows[0]["tl"] == dt.datetime(2020, 1, 1, 23, 59, 59, 999999)
    assert rows[0]["tm"] == dt.time(23, 59, 59, 500000)
    assert [r["b"] for r in rows] == [True, False, None]
    assert rows[0]["c"] == "ab "
    assert rows[0]["j"] == '{"a": 1}'
    loaded.execute("INSERT INTO mylib.mytable (id, d) VALUES (4, NULL)")
    with Warehouse(tmp_path / "whole", source=loaded.source()) as wh:
        with pytest.raises(SourceError, match="1 rows have a NULL d"):
            wh.sync("mylib.mytable", date_column="d")
        report = wh.sync("mylib.mytable", date_column=None)
        assert report["mylib.mytable"].years_written == (None,)
        assert report["mylib.mytable"].row_count == 4
        loaded.execute("CREATE TABLE mylib.empty (d date, x integer)")
        assert wh.sync("mylib.empty", date_column=None)["mylib.empty"].row_count == 0
        assert wh.sync("mylib.empty", date_column="d")["mylib.empty"].row_count == 0


def test_date_column_auto_detects_the_partition_column(
    make_replica: MakeReplica, tmp_path: Path
) -> None:
    """date_column='auto': a conventional name first, else the only date column, else one
    partition; several unconventional date columns are refused with their names."""
    with make_replica(datasets=["ff.factors_monthly"]) as rep:
        rep.execute("CREATE SCHEMA autolib")
        rep.execute("CREATE TABLE autolib.conv (gvkey text, anndt date, datadate date, x int)")
        rep.execute("CREATE TABLE autolib.one (id int, ts timestamp, x int)")
        rep.execute("CREATE TABLE autolib.none (id int, x text)")
        rep.execute("CREATE TABLE autolib.two (id int, start_d date, end_d date)")
        for table, values in (
            ("conv", "('001', '2019-05-01', '2020-12-31', 1), ('002', NULL, '2021-06-30', 2)"),
            ("one", "(1, '2020-01-01 10:00', 1), (2, '2022-01-01 10:00', 2)"),
            ("none", "(1, 'a')"),
            ("two", "(1, '2020-01-01', '2021-01-01')"),
        ):
            rep.execute(f"INSERT INTO autolib.{table} VALUES {values}")
        with Warehouse(tmp_path / "v", source=rep.source()) as wh:
            report = wh.sync(["autolib.conv", "autolib.one", "autolib.none"], date_column="auto")
            assert report.committed
            entries = {d: wh.snapshot().dataset(d) for d in wh.snapshot().datasets}
            with pytest.raises(SyncError, match=r"several date columns \(start_d, end_d\)"):
                wh.sync("autolib.two", date_column="auto")
    assert entries["autolib.conv"].partition_column == "datadate"  # not anndt: convention
    assert [p.year for p in entries["autolib.conv"].partitions] == [2020, 2021]
    assert entries["autolib.one"].partition_column == "ts"
    assert [p.year for p in entries["autolib.one"].partitions] == [2020, 2022]
    assert entries["autolib.none"].partition_column is None


def test_passed_connection_is_reused_and_left_open(loaded: WrdsReplica, vault_dir: Path) -> None:
    """WrdsSource(db=...) uses that one connection and does not close it; its own, it does."""
    db = loaded.connection(user=REPLICA_USER)
    assert {"crsp", "comp", "ff", "crsp_a_stock"} <= set(db.list_libraries())
    assert "secret" not in db.list_libraries()
    with Warehouse(vault_dir, source=WrdsSource(db=db)) as wh:
        wh.sync("crsp.msenames")
    assert db.connection.exec_driver_sql("SELECT 1").scalar() == 1
    owned = loaded.source()
    owned.describe(BUILTIN_SPECS["crsp.msenames"])
    assert owned._conn is not None
    owned.close()
    assert owned._conn is None
    with pytest.raises(TypeError, match="either db= or connection"):
        WrdsSource(db=db, wrds_username="x")


def test_connect_refuses_unknown_arguments() -> None:
    """connect() takes only the wrds.Connection arguments it passes on."""
    with pytest.raises(TypeError, match="wrds_hostnme"):
        connect(wrds_hostnme="x")
