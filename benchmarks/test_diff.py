"""Keyed diff cost: a diff after a one-year update against diffing the whole table in bare DuckDB.

The session vault (``bench_vault`` of ``conftest.py``: ``crsp.dsf`` of
``WRDSVAULT_BENCH_SECURITIES`` x ``WRDSVAULT_BENCH_YEARS``, ~10M rows at the ``full`` scale, ~300k
at ``smoke``) is copied, and
vintage 2 of the same `SampleSource` is synced for the last year only: one year's file changes
(vintage 2 appends December), every other year keeps its file.

* **wrdsvault**: ``wh.diff(v1, latest, datasets=["crsp.dsf"])``: the summary (added, removed,
  changed rows, per-column counts and max |change|), reading the changed year's two files only;
* **bare DuckDB**: what one writes by hand without content addressing: views over every file of
  both snapshots and the same full outer join on (permno, date) counting added, removed and
  changed rows over the whole table.

Both give the same three counts (asserted). Times and the ratio go into ``benchmark.extra_info``
and are never asserted.
"""

from __future__ import annotations

import shutil
import statistics
import time
from pathlib import Path
from typing import Any, Final

import duckdb
import pytest

from wrdsvault import Warehouse
from wrdsvault.sources import SampleSource

DATASET: Final = "crsp.dsf"
ROUNDS: Final = 3


def bare_diff(old_files: list[Path], new_files: list[Path]) -> tuple[int, int, int]:
    """Added, removed and changed rows of the whole table, joined by key in a plain DuckDB."""
    con = duckdb.connect()
    try:
        for name, files in (("a", old_files), ("b", new_files)):
            listed = ", ".join("'" + str(p).replace("'", "''") + "'" for p in files)
            con.execute(f"CREATE VIEW {name} AS SELECT * FROM read_parquet([{listed}])")
        columns = [
            c for c in con.sql("SELECT * FROM b LIMIT 0").columns if c not in ("permno", "date")
        ]
        changed = " OR ".join(f'a."{c}" IS DISTINCT FROM b."{c}"' for c in columns)
        row = con.sql(
            "SELECT count(*) FILTER (WHERE a.permno IS NULL),"
            " count(*) FILTER (WHERE b.permno IS NULL),"
            " count(*) FILTER (WHERE a.permno IS NOT NULL AND b.permno IS NOT NULL"
            f" AND ({changed}))"
            " FROM a FULL JOIN b ON a.permno = b.permno AND a.date = b.date"
        ).fetchall()[0]
        return int(row[0]), int(row[1]), int(row[2])
    finally:
        con.close()


@pytest.mark.benchmark(group="diff-dsf")
def test_diff_after_a_one_year_update(benchmark: Any, bench_vault: Any, tmp_path: Path) -> None:
    """wh.diff reads the changed year only; bare DuckDB diffs every year. Same counts; ratio."""
    root = tmp_path / "vault"
    shutil.copytree(bench_vault.wh.root, root, ignore=shutil.ignore_patterns("leases"))
    years = bench_vault.years
    with Warehouse(root) as wh:
        wh.tag("v1")
        wh.source = SampleSource(
            seed=0, years=years, vintage=2, n_securities=bench_vault.n_securities
        )
        report = wh.sync(DATASET, years=[years[-1]])
        assert report.committed
        with wh.snapshot("v1") as old, wh.snapshot("latest") as new:
            old_files, new_files = old.files(DATASET), new.files(DATASET)
        changed_years = {p.parent.name for p in set(new_files) - set(old_files)}
        assert len(set(new_files) - set(old_files)) == 1, changed_years

        def run() -> Any:
            return wh.diff("v1", "latest", datasets=[DATASET])[DATASET]

        got = benchmark.pedantic(run, rounds=ROUNDS, iterations=1, warmup_rounds=1)
        assert got.files_read == 2
        bare_times = []
        for _ in range(ROUNDS):
            started = time.perf_counter()
            expected = bare_diff(old_files, new_files)
            bare_times.append(time.perf_counter() - started)
        assert (got.added, got.removed, got.changed) == expected
        assert got.added > 0
        stats = getattr(benchmark, "stats", None)  # None under --benchmark-disable
        diff_s = statistics.median(stats.stats.data) if stats else None
        bare_s = statistics.median(bare_times)
        benchmark.extra_info.update(
            {
                "rows_old": bench_vault.sizes[DATASET]["rows"],
                "files_old": len(old_files),
                "files_read": got.files_read,
                "added": got.added,
                "bare_duckdb_median_s": round(bare_s, 4),
                "diff_median_s": None if diff_s is None else round(diff_s, 4),
                "ratio_diff_to_bare": None if diff_s is None else round(diff_s / bare_s, 4),
            }
        )
