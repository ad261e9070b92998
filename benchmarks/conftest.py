"""Benchmark fixtures: one sample vault built once per session, and a bare-DuckDB twin of it.

The vault holds ``crsp.dsf``, ``crsp.msf``, ``crsp.ccmxpf_lnkhist``, ``comp.funda``,
``crsp.msenames`` and ``crsp.msedelist`` from `SampleSource`, sized by two environment variables:

* ``WRDSVAULT_BENCH_SECURITIES`` (default 500): permnos in the sample universe;
* ``WRDSVAULT_BENCH_YEARS`` (default 4): calendar years, ending in 2023.

The defaults give about 0.34M ``crsp.dsf`` rows and build in about a second, so the whole
``pytest benchmarks`` run stays under two minutes on a 2-core machine. About 63% of the universe
is listed in any given year, so ``crsp.dsf`` has ~160 rows per security and year:
``WRDSVAULT_BENCH_SECURITIES=8000 WRDSVAULT_BENCH_YEARS=5`` gives ~6.3M rows and
``WRDSVAULT_BENCH_SECURITIES=12600 WRDSVAULT_BENCH_YEARS=5`` the ~10M-row reference size of
PERFORMANCE.md.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Final

import duckdb
import pandas as pd
import pytest

from wrdsvault import Snapshot, VaultSettings, Warehouse
from wrdsvault.sources import SampleSource

#: The datasets the research queries read.
DATASETS: Final = (
    "crsp.dsf",
    "crsp.msf",
    "crsp.ccmxpf_lnkhist",
    "comp.funda",
    "crsp.msenames",
    "crsp.msedelist",
)
LAST_YEAR: Final = 2023


def _env_int(name: str, default: int, *, minimum: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise pytest.UsageError(f"{name} must be an integer, not {raw!r}") from None
    if value < minimum:
        raise pytest.UsageError(f"{name} must be at least {minimum}, not {value}")
    return value


@dataclass(frozen=True)
class BenchVault:
    """The session vault: the warehouse, how it was built, and the size of each dataset."""

    wh: Warehouse
    n_securities: int
    years: range
    build_s: float
    sizes: dict[str, dict[str, int]]


@pytest.fixture(scope="session")
def bench_vault(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BenchVault]:
    """Build the sample vault once: every benchmark dataset, one sync, one snapshot."""
    n_securities = _env_int("WRDSVAULT_BENCH_SECURITIES", 500, minimum=10)
    n_years = _env_int("WRDSVAULT_BENCH_YEARS", 4, minimum=2)
    years = range(LAST_YEAR - n_years + 1, LAST_YEAR + 1)
    source = SampleSource(seed=0, years=years, vintage=1, n_securities=n_securities)
    root = tmp_path_factory.mktemp("bench") / "vault"
    started = time.perf_counter()
    # Explicit default settings: a developer's WRDSVAULT_* variables must not change the layout.
    wh = Warehouse(root, source=source, settings=VaultSettings())
    report = wh.sync(DATASETS)
    build_s = time.perf_counter() - started
    assert report.snapshot_id is not None
    with wh.snapshot(report.snapshot_id) as snap:
        sizes = {}
        for name in DATASETS:
            entry = snap.dataset(name)
            sizes[name] = {
                "rows": entry.row_count,
                "files": len(entry.partitions),
                "bytes": entry.size_bytes,
            }
    assert sizes["crsp.dsf"]["rows"] > 0
    try:
        yield BenchVault(wh, n_securities, years, build_s, sizes)
    finally:
        wh.close()


@pytest.fixture
def snap(bench_vault: BenchVault) -> Iterator[Snapshot]:
    """A snapshot of the session vault, opened for one benchmark (its connection starts cold)."""
    with bench_vault.wh.snapshot("latest") as snapshot:
        yield snapshot


def _sql_string(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def connect_bare(snapshot: Snapshot, datasets: Iterable[str]) -> duckdb.DuckDBPyConnection:
    """A plain in-memory DuckDB with ``library.table`` views over the snapshot's exact files.

    This is the baseline: what a researcher would write by hand without wrdsvault (no statement
    checks, no ``allowed_paths``, no external-access lock, no cursor per query).
    """
    con = duckdb.connect()
    names = sorted(set(datasets))
    for library in sorted({name.split(".", 1)[0] for name in names}):
        con.execute(f'CREATE SCHEMA "{library}"')
    for name in names:
        library, table = name.split(".", 1)
        files = ", ".join(_sql_string(str(p)) for p in snapshot.files(name))
        # hive_partitioning = false: the pinned views are built without hive detection too.
        con.execute(
            f'CREATE VIEW "{library}"."{table}" AS '
            f"SELECT * FROM read_parquet([{files}], hive_partitioning = false)"
        )
    return con


@pytest.fixture
def bare_duckdb(snap: Snapshot) -> Iterator[Callable[[Sequence[str]], duckdb.DuckDBPyConnection]]:
    """Open bare DuckDB connections over ``snap``'s files; all are closed after the test."""
    opened: list[duckdb.DuckDBPyConnection] = []

    def make(datasets: Sequence[str]) -> duckdb.DuckDBPyConnection:
        con = connect_bare(snap, datasets)
        opened.append(con)
        return con

    yield make
    for con in opened:
        con.close()


@pytest.fixture
def record_sizes(
    bench_vault: BenchVault, benchmark: Any
) -> Callable[[Sequence[str], pd.DataFrame], None]:
    """Record the input sizes (rows, files, bytes) and the result's row count in extra_info."""

    def record(datasets: Sequence[str], result: pd.DataFrame) -> None:
        info = benchmark.extra_info
        info["n_securities"] = bench_vault.n_securities
        info["years"] = f"{bench_vault.years.start}-{bench_vault.years.stop - 1}"
        info["vault_build_s"] = round(bench_vault.build_s, 3)
        for key in ("rows", "files", "bytes"):
            info[f"input_{key}"] = sum(bench_vault.sizes[d][key] for d in datasets)
        for name in datasets:
            info[name] = dict(bench_vault.sizes[name])
        info["result_rows"] = len(result)

    return record


def assert_same_frame(got: pd.DataFrame, expected: pd.DataFrame) -> None:
    """Same columns, dtypes, row count and values (floats to 1e-9 relative: parallel sums)."""
    assert len(got) > 0, "the query returned no rows; the benchmark would measure nothing"
    assert list(got.columns) == list(expected.columns)
    assert len(got) == len(expected)
    pd.testing.assert_frame_equal(
        got.reset_index(drop=True),
        expected.reset_index(drop=True),
        check_exact=False,
        rtol=1e-9,
        atol=0.0,
    )


@pytest.fixture
def same_frame() -> Callable[[pd.DataFrame, pd.DataFrame], None]:
    """The result comparison both halves of a query benchmark use."""
    return assert_same_frame
