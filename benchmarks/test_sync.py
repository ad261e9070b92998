"""Sync throughput and memory: `Warehouse.sync` from WRDS against ``wrds.Connection.raw_sql``.

One run, one local WRDS replica (PostgreSQL from ``pgserver``, laid out by `WrdsReplica`; the
session fixture ``dsf_replica`` of ``conftest.py``), one ``crsp.dsf``-shaped table of the
profile-2025 types. Each path runs in a fresh subprocess (``_measure.py``) that reports its wall
time and its own peak RSS; the parent also samples the child's RSS with psutil. With
``WRDSVAULT_BENCH_SYNC_ROUNDS=n`` each path runs n times and the median run is reported:

* ``raw_sql`` of one year and of the whole table (``date_cols=["date"]``, as a user would);
* `Warehouse.sync` of the same year and of the whole table, into an empty vault (default
  settings, validation on), through `WrdsSource` with its default ``streams``; and once more
  without per-year markers (``year_markers=False``) to show what computing them costs;
* the physical floor (``bare_copy``): ``COPY (SELECT * FROM crsp.dsf) TO STDOUT (FORMAT csv)``
  -> ``pyarrow.csv.open_csv`` -> one zstd ``ParquetWriter``, with no ordering, hashing,
  validation, fsync or manifest (``bare_ratio_all``: the whole sync's time over it; target 1.2).

``benchmark.extra_info`` gets rows/s and peak RSS of each path and the ratios (targets: sync at >=
6x the rows/s of ``raw_sql``, at <= 1/10 of its peak RSS). The whole sync and the floor are also
split into the client's CPU time (``client_cpu_ratio_all``: the call's CPU seconds, all threads) and
PostgreSQL's (``server_cpu_ratio_all``, `_measure.server_cpu_seconds`): the server shares these
cores, so its extra work (each year sorted by key, each row hashed for the per-year markers) is wall
time here that it would not be against WRDS. Timings are reported, not asserted; row counts are
asserted. The table size is ``WRDSVAULT_BENCH_SYNC_ROWS`` (smoke: 200,000 rows, well under a minute;
``WRDSVAULT_BENCH_SCALE=full``: 5,000,000 rows, where ``raw_sql`` of the whole table alone needs ~12
GB and a few minutes). ``raw_sql`` needs ~2.4 GB of RSS per million rows of this table: a
``raw_sql`` path whose expected peak exceeds 70% of the available memory is not run
(``raw_sql_<all|year>_skipped`` in ``extra_info`` says why; its ratios are missing).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Final

import psutil
import pytest

from wrdsvault.sources.wrds import DEFAULT_STREAMS

ONE_YEAR: Final = 2021
#: Peak RSS of ``raw_sql`` on this table, measured (100k-1M rows): ~2.4 GB per million rows (all
#: rows are fetched as tuples of Python objects, numerics as ``Decimal``, before pandas converts
#: them) over a ~0.2 GB interpreter.
RAW_SQL_BYTES_PER_ROW: Final = 2_400
#: ``raw_sql`` runs only if its expected peak fits in this share of the available memory.
RAM_SHARE: Final = 0.7


def raw_sql_need_bytes(rows: int) -> int:
    """The peak RSS ``raw_sql`` is expected to need for ``rows`` rows of the replica's dsf."""
    return 200 * 2**20 + rows * RAW_SQL_BYTES_PER_ROW


@pytest.mark.benchmark(group="sync-dsf")
def test_sync_dsf_against_raw_sql(
    benchmark: Any, dsf_replica: Any, measure: Any, bench_sizes: Any, tmp_path: Path
) -> None:
    """Warehouse.sync of a dsf-shaped table vs raw_sql: rows/s and peak RSS, as ratios."""
    connect, counts = dsf_replica.connect, dsf_replica.counts
    total = dsf_replica.rows
    rounds = bench_sizes.sync_rounds

    def run(path: str, year: int | None, name: str) -> dict[str, Any]:
        """``rounds`` fresh runs of one path (each into its own empty vault); the median one."""
        results = []
        for i in range(rounds):
            vault = tmp_path / f"{name}-{i}"
            results.append(measure.measure(path, year, connect, vault, streams=DEFAULT_STREAMS))
            shutil.rmtree(vault, ignore_errors=True)
        return measure.median_of(results)

    ours_all = benchmark.pedantic(run, args=("sync", None, "sync_all"), rounds=1, iterations=1)
    bare = run("bare_copy", None, "bare")
    assert bare["rows"] == total
    ours_year = run("sync", ONE_YEAR, "sync_year")
    no_markers = run("sync_without_year_markers", None, "plain")
    assert ours_all["rows"] == no_markers["rows"] == total
    assert ours_year["rows"] == counts[ONE_YEAR]
    assert ours_all["report"]["status"] == "added"
    info = benchmark.extra_info
    info["rows"] = total
    info["rows_one_year"] = counts[ONE_YEAR]
    info["n_securities"] = dsf_replica.n_securities
    info["rounds"] = rounds
    info["replica_build_s"] = round(dsf_replica.build_s, 2)
    info["parquet_bytes"] = ours_all["report"]["bytes_written"]
    measure.record(info, "sync_all", ours_all)
    measure.record(info, "sync_year", ours_year)
    measure.record(info, "sync_all_without_year_markers", no_markers)
    info["year_markers_cost"] = round(ours_all["seconds"] / no_markers["seconds"] - 1, 3)
    measure.record(info, "bare_copy_all", bare)
    info["streams"] = DEFAULT_STREAMS
    info["bare_ratio_all"] = round(ours_all["seconds"] / bare["seconds"], 3)
    info["client_cpu_ratio_all"] = round(ours_all["cpu_seconds"] / bare["cpu_seconds"], 3)
    info["server_cpu_ratio_all"] = round(
        ours_all["server_cpu_seconds"] / max(bare["server_cpu_seconds"], 1e-9), 3
    )
    info["targets"] = "speedup >= 6, rss_ratio <= 0.1, bare_ratio <= 1.2"

    for scope, year, rows, ours in (
        ("year", ONE_YEAR, counts[ONE_YEAR], ours_year),
        ("all", None, total, ours_all),
    ):
        need, available = raw_sql_need_bytes(rows), psutil.virtual_memory().available
        if need > RAM_SHARE * available:
            # Would push the machine into swap or the OOM killer (other processes live here).
            info[f"raw_sql_{scope}_skipped"] = (
                f"needs ~{need / 2**30:.1f} GiB, {available / 2**30:.1f} GiB available"
            )
            continue
        raw = run("raw_sql", year, "unused")
        assert raw["rows"] == rows
        measure.record(info, f"raw_sql_{scope}", raw)
        info[f"speedup_{scope}"] = round(ours["rows_per_s"] / raw["rows_per_s"], 2)
        info[f"rss_ratio_{scope}"] = round(ours["peak_rss_bytes"] / raw["peak_rss_bytes"], 3)
