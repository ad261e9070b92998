"""Runs of years: a first sync of a 30-year table whose date column has no index.

A COPY of one year filters on the date; without an index on it PostgreSQL scans the whole table
for each year, so one COPY per year scans a 30-year table 30 times. The sync reads a stream's
years as runs with one COPY each (`WrdsSource.read_partitions`, docs/wrds.md). This benchmark
builds its own replica (``crsp.dsf`` of the profile-2025 types over 1995-2024, no index on
``date``, as the replica of ``test_sync.py``) and measures, each in a fresh process
(``_measure.py``), interleaved, the median of ``WRDSVAULT_BENCH_SYNC_ROUNDS`` rounds:

* ``sync`` (runs of years) and ``sync_per_year`` (the same source with ``read_partitions``
  hidden: one COPY per year), with one stream and with the default streams;
* for each, the sync's wall time, peak RSS, and the CPU time the PostgreSQL server spent
  (``server_cpu_seconds`` of ``_measure.py``: every ``postgres`` process of the machine,
  reaped backends included through the postmaster's children times; nothing else uses
  PostgreSQL during the run).

``extra_info``: ``runs_<n>_*`` and ``per_year_<n>_*`` for ``n`` in (1, default streams), and
``time_ratio_<n>`` (runs over per-year; target < 1.0: runs must not be slower where the per-year
COPY is cheapest, a small table) and ``server_cpu_ratio_<n>``. The table has
``WRDSVAULT_BENCH_SYNC_ROWS`` rows (smoke: 200,000) up to 1,000,000 (30 scans of a larger
table add minutes to a full run and show nothing new). Timings are reported, not asserted;
the committed row counts are asserted.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import pytest

from wrdsvault.sources import SampleSource
from wrdsvault.sources.wrds import DEFAULT_STREAMS

YEARS: Final = range(1995, 2025)
#: The table's size is the sync size, capped here (see the module docstring).
MAX_ROWS: Final = 1_000_000
#: Sample crsp.dsf rows per security and year (not every security trades every day).
ROWS_PER_SECURITY_YEAR: Final = 155


@pytest.fixture(scope="module")
def many_years(bench_sizes: Any) -> Iterator[tuple[dict[str, Any], int]]:
    """A replica whose crsp.dsf spans 30 years: its connect arguments and row count."""
    from wrdsvault.testing import WrdsReplica

    rows = min(bench_sizes.sync_rows, MAX_ROWS)
    n = max(10, math.ceil(rows / (ROWS_PER_SECURITY_YEAR * len(YEARS))))
    source = SampleSource(seed=0, years=YEARS, n_securities=n, profile="2025")
    with WrdsReplica.start(source=source, datasets=["crsp.dsf"]) as rep:
        total = rep.execute("SELECT count(*) FROM crsp.dsf")[0][0]
        yield rep.connect_kwargs(), int(total)


@pytest.mark.benchmark(group="sync-year-runs")
def test_sync_runs_of_years_against_one_copy_per_year(
    benchmark: Any,
    many_years: tuple[dict[str, Any], int],
    measure: Any,
    bench_sizes: Any,
    tmp_path: Path,
) -> None:
    """A first sync reading runs of years vs one COPY per year: time and server CPU."""
    connect, total = many_years
    streams_counts = (1, DEFAULT_STREAMS)
    results: dict[str, list[dict[str, Any]]] = {}
    runs = 0

    def once() -> None:
        nonlocal runs
        for streams in streams_counts:
            for path, name in (("sync", "runs"), ("sync_per_year", "per_year")):
                runs += 1
                result = measure.measure(
                    path, None, connect, tmp_path / f"v{runs}", streams=streams
                )
                assert result["rows"] == total, (path, streams, result["rows"], total)
                assert result["report"]["years_written"] == list(YEARS)
                results.setdefault(f"{name}_{streams}", []).append(result)

    started = time.perf_counter()
    benchmark.pedantic(once, rounds=bench_sizes.sync_rounds, iterations=1)
    info = benchmark.extra_info
    info.update(rows=total, years=len(YEARS), streams=DEFAULT_STREAMS)
    for key, rounds in results.items():
        median = measure.median_of(rounds)
        measure.record(info, key, median)
        info[f"{key}_server_cpu_seconds"] = round(
            statistics.median(r["server_cpu_seconds"] for r in rounds), 3
        )
    for streams in streams_counts:
        info[f"time_ratio_{streams}"] = round(
            info[f"runs_{streams}_seconds"] / info[f"per_year_{streams}_seconds"], 3
        )
        info[f"server_cpu_ratio_{streams}"] = round(
            info[f"runs_{streams}_server_cpu_seconds"]
            / max(info[f"per_year_{streams}_server_cpu_seconds"], 1e-9),
            3,
        )
    info["wall_seconds"] = round(time.perf_counter() - started, 1)
