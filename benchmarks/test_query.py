"""Typical research queries: `Snapshot.query` against a bare DuckDB over the same files.

Each query has two benchmarks in one group (``query-<name>``): ``..._pinned_snapshot`` runs it with
``snap.query(sql)`` on a snapshot opened outside the timing, ``..._bare_duckdb_baseline`` with a
plain ``duckdb.connect()`` whose views read the same ``snap.files(...)`` through ``read_parquet``.
Both run the same SQL to the same ``.df()`` and check that the two results are equal, so every
benchmark is also a correctness check. One untimed warm-up round absorbs the first query's cost
(wrdsvault builds its connection lazily; both engines read Parquet metadata once).

Target: pinned <= 1.10x the bare DuckDB median, per group. Timings are never asserted.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import duckdb
import pandas as pd
import pytest

from wrdsvault import Snapshot


@dataclass(frozen=True)
class Query:
    """One research query: the datasets it reads, its SQL, and how many timed rounds it gets."""

    datasets: tuple[str, ...]
    sql: str
    rounds: int = 20


MONTHLY_FROM_DAILY = Query(
    datasets=("crsp.dsf",),
    sql="""
SELECT permno,
       date_trunc('month', date)::DATE AS month,
       exp(sum(ln(1 + ret))) - 1       AS ret_m,
       count(ret)                      AS n_days
FROM crsp.dsf
WHERE ret IS NOT NULL
GROUP BY permno, month
ORDER BY permno, month
""",
)

MARKET_CAP_BY_YEAR = Query(
    datasets=("crsp.msf",),
    sql="""
SELECT permno,
       year(date)                                 AS year,
       arg_max(abs(prc) * shrout / 1000.0, date)  AS me_musd,   -- last month of the year
       max(date)                                  AS me_date,
       count(*)                                   AS n_months
FROM crsp.msf
WHERE prc IS NOT NULL AND shrout IS NOT NULL
GROUP BY permno, year
ORDER BY permno, year
""",
)

#: ``{permno}`` is filled in with a permno listed in every year of the vault.
ONE_PERMNO_HISTORY = Query(
    datasets=("crsp.dsf",),
    sql="SELECT * FROM crsp.dsf WHERE permno = {permno} ORDER BY date",
    rounds=30,
)

#: q1 (legacy universe from msf + msenames + msedelist), q3 (book equity) and q4 (CCM link):
#: June-of-t market cap, book equity of fiscal year t-1, December t-1 market cap.
CCM_MERGE = Query(
    datasets=("crsp.msf", "crsp.msenames", "crsp.msedelist", "crsp.ccmxpf_lnkhist", "comp.funda"),
    sql="""
WITH crsp_m AS (
    SELECT f.permno, f.date, n.exchcd,
           abs(CAST(f.prc AS DOUBLE)) * CAST(f.shrout AS DOUBLE) / 1000.0 AS me,
           CASE
             WHEN d.permno IS NULL THEN CAST(f.ret AS DOUBLE)
             WHEN d.dlret IS NOT NULL
               THEN (1 + coalesce(CAST(f.ret AS DOUBLE), 0)) * (1 + CAST(d.dlret AS DOUBLE)) - 1
             WHEN d.dlstcd IN (500, 520, 580, 584) OR d.dlstcd BETWEEN 551 AND 574
               THEN (1 + coalesce(CAST(f.ret AS DOUBLE), 0)) * (1 - 0.30) - 1
             ELSE CAST(f.ret AS DOUBLE)
           END AS ret_adj
    FROM crsp.msf AS f
    JOIN crsp.msenames AS n
      ON f.permno = n.permno
     AND f.date BETWEEN n.namedt AND n.nameendt
    LEFT JOIN crsp.msedelist AS d
      ON f.permno = d.permno
     AND date_trunc('month', f.date) = date_trunc('month', d.dlstdt)
    WHERE n.shrcd IN (10, 11)
      AND n.exchcd IN (1, 2, 3)
),
comp_be AS (
    SELECT gvkey, datadate, fyear,
           coalesce(seq, ceq + coalesce(pstk, 0), "at" - lt)
         + coalesce(txditc, coalesce(txdb, 0) + coalesce(itcb, 0), 0)
         - coalesce(pstkrv, pstkl, pstk, 0) AS be
    FROM comp.funda
    WHERE indfmt = 'INDL' AND datafmt = 'STD' AND popsrc = 'D' AND consol = 'C'
      AND datadate >= DATE '1950-01-01'
    QUALIFY row_number() OVER (PARTITION BY gvkey, year(datadate) ORDER BY datadate DESC) = 1
),
link AS (
    SELECT gvkey,
           CAST(lpermno AS INTEGER)                 AS permno,
           linkdt,
           coalesce(linkenddt, DATE '9999-12-31')   AS linkenddt
    FROM crsp.ccmxpf_lnkhist
    WHERE linktype IN ('LC', 'LU')
      AND linkprim IN ('P', 'C')
),
june AS (
    SELECT permno, date, exchcd, me AS me_june, ret_adj AS ret_june
    FROM crsp_m
    WHERE month(date) = 6
),
dec AS (
    SELECT permno, year(date) AS yr, me AS me_dec
    FROM crsp_m
    WHERE month(date) = 12
)
SELECT j.permno, j.date AS formation_date, j.exchcd, j.me_june, j.ret_june,
       b.gvkey, b.datadate, b.be, d.me_dec,
       b.be / nullif(d.me_dec, 0) AS bm
FROM june AS j
JOIN link AS l
  ON j.permno = l.permno
 AND j.date BETWEEN l.linkdt AND l.linkenddt
JOIN comp_be AS b
  ON b.gvkey = l.gvkey
 AND year(b.datadate) = year(j.date) - 1
JOIN dec AS d
  ON d.permno = j.permno
 AND d.yr = year(j.date) - 1
ORDER BY ALL
""",
)

BareFactory = Callable[[Sequence[str]], duckdb.DuckDBPyConnection]
Recorder = Callable[[Sequence[str], pd.DataFrame], None]
Comparer = Callable[[pd.DataFrame, pd.DataFrame], None]


@pytest.fixture(scope="module")
def permno_sql(bench_vault: Any) -> str:
    """The one-permno SQL for the lowest permno with daily rows in every year of the vault."""
    with bench_vault.wh.snapshot("latest") as snapshot:
        found = snapshot.query(
            "SELECT permno FROM crsp.dsf GROUP BY permno "
            "HAVING count(DISTINCT year(date)) = (SELECT count(DISTINCT year(date)) FROM crsp.dsf) "
            "ORDER BY permno LIMIT 1"
        )
    assert len(found) == 1, "no permno is listed in every year; raise WRDSVAULT_BENCH_SECURITIES"
    return ONE_PERMNO_HISTORY.sql.format(permno=int(found.iloc[0, 0]))


def run_pinned(
    benchmark: Any,
    snap: Snapshot,
    bare_duckdb: BareFactory,
    record_sizes: Recorder,
    same_frame: Comparer,
    query: Query,
    sql: str,
) -> pd.DataFrame:
    """Time ``snap.query(sql)``; check it against bare DuckDB over the same files."""
    expected = bare_duckdb(query.datasets).sql(sql).df()
    got = benchmark.pedantic(
        snap.query, args=(sql,), warmup_rounds=1, rounds=query.rounds, iterations=1
    )
    same_frame(got, expected)
    record_sizes(query.datasets, got)
    return got


def run_bare(
    benchmark: Any,
    snap: Snapshot,
    bare_duckdb: BareFactory,
    record_sizes: Recorder,
    same_frame: Comparer,
    query: Query,
    sql: str,
) -> pd.DataFrame:
    """Time the same SQL on a bare DuckDB connection; check it against ``snap.query``."""
    expected = snap.query(sql)
    con = bare_duckdb(query.datasets)

    def run() -> pd.DataFrame:
        return con.sql(sql).df()

    got = benchmark.pedantic(run, warmup_rounds=1, rounds=query.rounds, iterations=1)
    same_frame(got, expected)
    record_sizes(query.datasets, got)
    return got


# -- monthly returns compounded from daily -----------------------------------------------------


@pytest.mark.benchmark(group="query-monthly-from-daily")
def test_query_monthly_from_daily_pinned_snapshot(
    benchmark, snap, bare_duckdb, record_sizes, same_frame
):
    """Monthly compounded returns from crsp.dsf through a pinned snapshot (<= 1.10x bare)."""
    q = MONTHLY_FROM_DAILY
    got = run_pinned(benchmark, snap, bare_duckdb, record_sizes, same_frame, q, q.sql)
    assert got["n_days"].between(1, 23).all()


@pytest.mark.benchmark(group="query-monthly-from-daily")
def test_query_monthly_from_daily_bare_duckdb_baseline(
    benchmark, snap, bare_duckdb, record_sizes, same_frame
):
    """Monthly compounded returns from crsp.dsf on bare DuckDB over the same files."""
    q = MONTHLY_FROM_DAILY
    run_bare(benchmark, snap, bare_duckdb, record_sizes, same_frame, q, q.sql)


# -- market cap by year -------------------------------------------------------------------------


@pytest.mark.benchmark(group="query-market-cap-by-year")
def test_query_market_cap_by_year_pinned_snapshot(
    benchmark, snap, bare_duckdb, record_sizes, same_frame
):
    """Year-end market cap per permno from crsp.msf through a pinned snapshot (<= 1.10x bare)."""
    q = MARKET_CAP_BY_YEAR
    got = run_pinned(benchmark, snap, bare_duckdb, record_sizes, same_frame, q, q.sql)
    assert (got["me_musd"] > 0).all()


@pytest.mark.benchmark(group="query-market-cap-by-year")
def test_query_market_cap_by_year_bare_duckdb_baseline(
    benchmark, snap, bare_duckdb, record_sizes, same_frame
):
    """Year-end market cap per permno from crsp.msf on bare DuckDB over the same files."""
    q = MARKET_CAP_BY_YEAR
    run_bare(benchmark, snap, bare_duckdb, record_sizes, same_frame, q, q.sql)


# -- one permno's full daily history ------------------------------------------------------------


@pytest.mark.benchmark(group="query-one-permno-history")
def test_query_one_permno_history_pinned_snapshot(
    benchmark, snap, bare_duckdb, record_sizes, same_frame, permno_sql, bench_vault
):
    """One permno's daily rows across all years through a pinned snapshot (<= 1.10x bare)."""
    got = run_pinned(
        benchmark, snap, bare_duckdb, record_sizes, same_frame, ONE_PERMNO_HISTORY, permno_sql
    )
    assert got["permno"].nunique() == 1
    assert got["date"].is_monotonic_increasing
    assert got["date"].dt.year.nunique() == len(bench_vault.years)


@pytest.mark.benchmark(group="query-one-permno-history")
def test_query_one_permno_history_bare_duckdb_baseline(
    benchmark, snap, bare_duckdb, record_sizes, same_frame, permno_sql
):
    """One permno's daily rows across all years on bare DuckDB over the same files."""
    run_bare(benchmark, snap, bare_duckdb, record_sizes, same_frame, ONE_PERMNO_HISTORY, permno_sql)


# -- CCM-linked merge of msf and funda (q1 + q3 + q4) -------------------------------------------


@pytest.mark.benchmark(group="query-ccm-merge")
def test_query_ccm_merge_pinned_snapshot(benchmark, snap, bare_duckdb, record_sizes, same_frame):
    """The CCM-linked June msf x funda book equity merge through a pinned snapshot (<= 1.10x)."""
    q = CCM_MERGE
    got = run_pinned(benchmark, snap, bare_duckdb, record_sizes, same_frame, q, q.sql)
    assert (got["formation_date"].dt.month == 6).all()
    assert (got["datadate"].dt.year == got["formation_date"].dt.year - 1).all()


@pytest.mark.benchmark(group="query-ccm-merge")
def test_query_ccm_merge_bare_duckdb_baseline(
    benchmark, snap, bare_duckdb, record_sizes, same_frame
):
    """The CCM-linked June msf x funda book equity merge on bare DuckDB over the same files."""
    q = CCM_MERGE
    run_bare(benchmark, snap, bare_duckdb, record_sizes, same_frame, q, q.sql)
