"""Sync throughput and memory: `Warehouse.sync` from WRDS against ``wrds.Connection.raw_sql``.

One run, one local WRDS replica (PostgreSQL from ``pgserver``, laid out by `WrdsReplica`), one
``crsp.dsf``-shaped table of the profile-2025 types. Each path runs in a fresh subprocess that
reports its wall time and its own peak RSS (``ru_maxrss``):

* ``raw_sql`` of one year and of the whole table (``date_cols=["date"]``, as a user would);
* `Warehouse.sync` of the same year and of the whole table, into an empty vault (default
  settings, validation on), through `WrdsSource`; and once more without per-year markers
  (``year_markers=False``) to show what computing them costs.

``benchmark.extra_info`` gets rows/s and peak RSS of each path and the ratios (targets: sync at
>= 6x the rows/s of ``raw_sql``, at <= 1/10 of its peak RSS). Timings are reported, not asserted;
row counts are asserted. The table size comes from ``WRDSVAULT_BENCH_SYNC_ROWS`` (default
200,000 rows, a smoke run of well under a minute; the reference size is 5,000,000 rows:
``WRDSVAULT_BENCH_SYNC_ROWS=5000000 pytest benchmarks/test_sync.py``).

Run as a script (``python test_sync.py '<json>'``) this file is the child that measures one path.
"""

from __future__ import annotations

import json
import math
import os
import resource
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import pytest

DATASET: Final = "crsp.dsf"
YEARS: Final = range(2020, 2024)
ONE_YEAR: Final = 2021
#: crsp.dsf rows per sample security over YEARS (about 157 rows a year: not every security
#: trades every day of every year), rounded down so the table has at least the rows asked for.
ROWS_PER_SECURITY: Final = 620
DEFAULT_ROWS: Final = 200_000


def _rows_wanted() -> int:
    raw = os.environ.get("WRDSVAULT_BENCH_SYNC_ROWS", "").strip()
    if not raw:
        return DEFAULT_ROWS
    try:
        value = int(raw)
    except ValueError:
        msg = f"WRDSVAULT_BENCH_SYNC_ROWS must be an integer, not {raw!r}"
        raise pytest.UsageError(msg) from None
    if value < 10_000:
        raise pytest.UsageError("WRDSVAULT_BENCH_SYNC_ROWS must be at least 10000")
    return value


def _peak_rss_bytes() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # Linux reports KiB


# --------------------------------------------------------------------------------------------
# The child: measure one path, print one JSON line
# --------------------------------------------------------------------------------------------


def _child(args: dict[str, Any]) -> dict[str, Any]:
    """Run one path in this (fresh) process and return rows, seconds and peak RSS."""
    kwargs = args["connect"]
    year = args["year"]
    if args["path"] == "raw_sql":
        import wrds

        db = wrds.Connection(**kwargs)  # prints "Loading library list..."; stdout is ignored
        where = (
            "" if year is None else (f" WHERE date >= '{year}-01-01' AND date < '{year + 1}-01-01'")
        )
        started = time.perf_counter()
        frame = db.raw_sql(f"SELECT * FROM {DATASET}{where}", date_cols=["date"])
        seconds = time.perf_counter() - started
        rows = len(frame)
        db.close()
    else:
        from wrdsvault import VaultSettings, Warehouse
        from wrdsvault.sources import WrdsSource

        source = WrdsSource(**kwargs, year_markers=args["path"] == "sync")
        source.db  # noqa: B018 - log in before the clock starts, as raw_sql's Connection did
        with Warehouse(args["vault"], source=source, settings=VaultSettings()) as wh:
            started = time.perf_counter()
            report = wh.sync(DATASET, years=None if year is None else [year])
            seconds = time.perf_counter() - started
            rows = report[DATASET].rows_written
    return {"rows": rows, "seconds": seconds, "peak_rss_bytes": _peak_rss_bytes()}


def measure(path: str, year: int | None, connect: dict[str, Any], vault: Path) -> dict[str, Any]:
    """Run ``path`` in a fresh interpreter; return what it measured plus rows/s."""
    args = {"path": path, "year": year, "connect": connect, "vault": str(vault)}
    done = subprocess.run(
        [sys.executable, __file__, json.dumps(args)],
        capture_output=True,
        text=True,
        check=False,
        timeout=3600,
    )
    if done.returncode != 0:
        raise AssertionError(f"{path} {year}: child failed:\n{done.stderr[-4000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    result["rows_per_s"] = result["rows"] / result["seconds"]
    return result


# --------------------------------------------------------------------------------------------
# The benchmark
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dsf_replica() -> Iterator[tuple[dict[str, Any], dict[int, int], int]]:
    """A WRDS replica holding one crsp.dsf of about WRDSVAULT_BENCH_SYNC_ROWS rows."""
    from wrdsvault.sources import SampleSource
    from wrdsvault.testing import WrdsReplica

    n_securities = max(10, math.ceil(_rows_wanted() / ROWS_PER_SECURITY))
    source = SampleSource(seed=0, years=YEARS, n_securities=n_securities, profile="2025")
    with WrdsReplica.start(source=source, datasets=[DATASET]) as rep:
        counts = dict(
            rep.execute("SELECT extract(year FROM date)::int, count(*) FROM crsp.dsf GROUP BY 1")
        )
        yield rep.connect_kwargs(), counts, n_securities


@pytest.mark.benchmark(group="sync-dsf")
def test_sync_dsf_against_raw_sql(
    benchmark: Any, dsf_replica: tuple[dict[str, Any], dict[int, int], int], tmp_path: Path
) -> None:
    """Warehouse.sync of a dsf-shaped table vs raw_sql: rows/s and peak RSS, as ratios."""
    connect, counts, n_securities = dsf_replica
    total = sum(counts.values())
    ours_all = benchmark.pedantic(
        measure, args=("sync", None, connect, tmp_path / "all"), rounds=1, iterations=1
    )
    ours_year = measure("sync", ONE_YEAR, connect, tmp_path / "year")
    no_markers = measure("sync_without_year_markers", None, connect, tmp_path / "plain")
    raw_year = measure("raw_sql", ONE_YEAR, connect, tmp_path / "unused")
    raw_all = measure("raw_sql", None, connect, tmp_path / "unused")
    assert ours_all["rows"] == raw_all["rows"] == no_markers["rows"] == total
    assert ours_year["rows"] == raw_year["rows"] == counts[ONE_YEAR]

    info = benchmark.extra_info
    info["rows"] = total
    info["rows_one_year"] = counts[ONE_YEAR]
    info["n_securities"] = n_securities
    for name, result in (
        ("sync_all", ours_all),
        ("sync_year", ours_year),
        ("sync_all_without_year_markers", no_markers),
        ("raw_sql_all", raw_all),
        ("raw_sql_year", raw_year),
    ):
        info[f"{name}_rows_per_s"] = round(result["rows_per_s"])
        info[f"{name}_peak_rss_mb"] = round(result["peak_rss_bytes"] / 2**20, 1)
        info[f"{name}_seconds"] = round(result["seconds"], 3)
    info["speedup_all"] = round(ours_all["rows_per_s"] / raw_all["rows_per_s"], 2)
    info["speedup_year"] = round(ours_year["rows_per_s"] / raw_year["rows_per_s"], 2)
    info["rss_ratio_all"] = round(ours_all["peak_rss_bytes"] / raw_all["peak_rss_bytes"], 3)
    info["rss_ratio_year"] = round(ours_year["peak_rss_bytes"] / raw_year["peak_rss_bytes"], 3)
    info["targets"] = "speedup >= 6, rss_ratio <= 0.1"


if __name__ == "__main__":
    print(json.dumps(_child(json.loads(sys.argv[1]))))
