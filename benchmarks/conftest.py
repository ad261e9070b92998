"""Benchmark fixtures: the scale knob, the session vault, a bare-DuckDB twin, the WRDS replica.

Sizes come from ``WRDSVAULT_BENCH_SCALE`` (``smoke``, the default, or ``full``); each
``WRDSVAULT_BENCH_*`` size variable overrides its part of the scale (see `SCALES`):

* ``WRDSVAULT_BENCH_SECURITIES`` (smoke 500, full 12,600): permnos of the query vault;
* ``WRDSVAULT_BENCH_YEARS`` (4, 5): its calendar years, ending in 2023;
* ``WRDSVAULT_BENCH_SYNC_ROWS`` (200,000, 5,000,000): ``crsp.dsf`` rows of the WRDS replica;
* ``WRDSVAULT_BENCH_SYNC_ROUNDS`` (1, 1): runs of each sync path; the median one is reported;
* ``WRDSVAULT_BENCH_VERIFY_MB`` (64, 1,024): MB of incompressible Parquet for verify;
* ``WRDSVAULT_BENCH_OPEN_DATASETS`` (100, 100): datasets x 60 years for snapshot open.

The smoke sizes keep ``pytest benchmarks`` (timed) under about a minute and a half on a 2-core
machine. The query vault holds ``crsp.dsf``, ``crsp.msf``, ``crsp.ccmxpf_lnkhist``,
``comp.funda``, ``crsp.msenames`` and ``crsp.msedelist`` from `SampleSource`. About 63% of the
universe is listed in any given year, so ``crsp.dsf`` has ~160 rows per security and year:
12,600 securities x 5 years is the ~10M-row reference size of docs/design/measured-facts.md.
Larger than smoke sizes lift pytest-timeout's 300 s limit to `SCALED_TIMEOUT_S` per benchmark.

Helper modules of this folder (``_measure.py``, ``_db2pq.py``, ``setup_db2pq.py``) are loaded by
path (`load_helper`): pytest runs with ``--import-mode=importlib``, so they are not importable by
name. The db2pq baseline (test_db2pq.py) needs its own venv, made by ``setup_db2pq.py``; without it
that benchmark skips.
"""

from __future__ import annotations

import datetime as dt
import importlib.util
import math
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Final

import duckdb
import pandas as pd
import pyarrow as pa
import pytest

from wrdsvault import Snapshot, VaultSettings, Warehouse
from wrdsvault.datasets import DatasetSpec
from wrdsvault.sources import SampleSource
from wrdsvault.sources.base import PartitionInfo, TableInfo

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

# --------------------------------------------------------------------------------------------
# The scale knob
# --------------------------------------------------------------------------------------------

SCALE_VAR: Final = "WRDSVAULT_BENCH_SCALE"
#: Size variable -> (field of `BenchSizes`, minimum).
SIZE_VARS: Final = {
    "WRDSVAULT_BENCH_SECURITIES": ("securities", 10),
    "WRDSVAULT_BENCH_YEARS": ("years", 2),
    "WRDSVAULT_BENCH_SYNC_ROWS": ("sync_rows", 10_000),
    "WRDSVAULT_BENCH_SYNC_ROUNDS": ("sync_rounds", 1),
    "WRDSVAULT_BENCH_VERIFY_MB": ("verify_mb", 16),
    "WRDSVAULT_BENCH_OPEN_DATASETS": ("open_datasets", 1),
}
#: The named scales. ``full`` is the reference size (docs/design/measured-facts.md).
SCALES: Final = {
    "smoke": {
        "securities": 500,
        "years": 4,
        "sync_rows": 200_000,
        "sync_rounds": 1,
        "verify_mb": 64,
        "open_datasets": 100,
    },
    "full": {
        "securities": 12_600,
        "years": 5,
        "sync_rows": 5_000_000,
        "sync_rounds": 1,
        "verify_mb": 1024,
        "open_datasets": 100,
    },
}
#: pytest-timeout's limit per benchmark when any size is above smoke (raw_sql of 10M rows alone
#: takes ~5 minutes on 2 cores); the ini's 300 s stays for smoke sizes.
SCALED_TIMEOUT_S: Final = 4 * 3600


@dataclass(frozen=True)
class BenchSizes:
    """The sizes of this run (see the module docstring); ``explicit``: variables that were set."""

    scale: str
    securities: int
    years: int
    sync_rows: int
    sync_rounds: int
    verify_mb: int
    open_datasets: int
    explicit: tuple[str, ...] = ()

    @property
    def above_smoke(self) -> bool:
        smoke = SCALES["smoke"]
        return any(getattr(self, field) > smoke[field] for field in smoke)

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["explicit"] = list(self.explicit)
        return out


def _env_int(name: str, default: int, *, minimum: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw.replace("_", ""))
    except ValueError:
        raise pytest.UsageError(f"{name} must be an integer, not {raw!r}") from None
    if value < minimum:
        raise pytest.UsageError(f"{name} must be at least {minimum}, not {value}")
    return value


def resolve_sizes() -> BenchSizes:
    """Read ``WRDSVAULT_BENCH_SCALE`` and the size variables that override it."""
    scale = os.environ.get(SCALE_VAR, "").strip().lower() or "smoke"
    if scale not in SCALES:
        raise pytest.UsageError(f"{SCALE_VAR} must be one of {sorted(SCALES)}, not {scale!r}")
    values: dict[str, int] = {}
    explicit = []
    for var, (field, minimum) in SIZE_VARS.items():
        values[field] = _env_int(var, SCALES[scale][field], minimum=minimum)
        if os.environ.get(var, "").strip():
            explicit.append(var)
    return BenchSizes(scale=scale, explicit=tuple(explicit), **values)


_SIZES_KEY: Final = pytest.StashKey[BenchSizes]()


def pytest_configure(config: pytest.Config) -> None:
    """Resolve the sizes once, before collection: a bad variable is a usage error."""
    config.stash[_SIZES_KEY] = resolve_sizes()


def pytest_report_header(config: pytest.Config) -> str:
    s = config.stash[_SIZES_KEY]
    return (
        f"wrdsvault bench scale: {s.scale} (sync {s.sync_rows:,} rows; query vault "
        f"{s.securities:,} securities x {s.years} years; verify {s.verify_mb:,} MB; "
        f"sync rounds {s.sync_rounds}; "
        f"snapshot-open {s.open_datasets} datasets)"
        + (f"; overridden: {', '.join(s.explicit)}" if s.explicit else "")
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Above smoke sizes, give each benchmark `SCALED_TIMEOUT_S` instead of the ini's 300 s."""
    if config.stash[_SIZES_KEY].above_smoke:
        for item in items:
            item.add_marker(pytest.mark.timeout(SCALED_TIMEOUT_S))


def pytest_benchmark_update_machine_info(config: pytest.Config, machine_info: dict) -> None:
    """Record the sizes of the run in the JSON report (``machine_info.wrdsvault_bench``)."""
    machine_info["wrdsvault_bench"] = config.stash[_SIZES_KEY].to_json()


@pytest.fixture(scope="session")
def bench_sizes(request: pytest.FixtureRequest) -> BenchSizes:
    """The sizes of this run (scale plus overrides)."""
    return request.config.stash[_SIZES_KEY]


def load_helper(name: str) -> ModuleType:
    """Import ``benchmarks/<name>.py`` by path (``--import-mode=importlib``: not by name)."""
    key = f"wrdsvault_bench_{name.lstrip('_')}"
    if key in sys.modules:
        return sys.modules[key]
    spec = importlib.util.spec_from_file_location(key, Path(__file__).with_name(f"{name}.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[key] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def measure() -> ModuleType:
    """``_measure.py``: run one sync path in a fresh subprocess, time it, sample its RSS."""
    return load_helper("_measure")


@pytest.fixture(scope="session")
def throttle() -> ModuleType:
    """``_throttle.py``: the throttling TCP proxy of the slow-link sync benchmark."""
    return load_helper("_throttle")


@pytest.fixture(scope="session")
def db2pq() -> ModuleType:
    """``_db2pq.py``: run db2pq once in its own venv, time it, sample its RSS."""
    return load_helper("_db2pq")


@pytest.fixture(scope="session")
def db2pq_env() -> tuple[Path, dict[str, str]]:
    """The db2pq venv's interpreter and environment (``setup_db2pq.py``); skip without it."""
    setup = load_helper("setup_db2pq")
    if not setup.ready():
        pytest.skip(
            "db2pq baseline not set up: run `python benchmarks/setup_db2pq.py` "
            f"(creates {setup.VENV} from PyPI wheels; no download at run time)"
        )
    return setup.python(), setup.child_env()


# --------------------------------------------------------------------------------------------
# The query vault
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BenchVault:
    """The session vault: the warehouse, how it was built, and the size of each dataset."""

    wh: Warehouse
    n_securities: int
    years: range
    build_s: float
    sizes: dict[str, dict[str, int]]


@pytest.fixture(scope="session")
def bench_vault(
    tmp_path_factory: pytest.TempPathFactory, bench_sizes: BenchSizes
) -> Iterator[BenchVault]:
    """Build the sample vault once: every benchmark dataset, one sync, one snapshot."""
    n_securities = bench_sizes.securities
    years = range(LAST_YEAR - bench_sizes.years + 1, LAST_YEAR + 1)
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


# --------------------------------------------------------------------------------------------
# The WRDS replica (test_sync.py, test_resync.py)
# --------------------------------------------------------------------------------------------

SYNC_DATASET: Final = "crsp.dsf"
SYNC_YEARS: Final = range(2020, 2024)
#: crsp.dsf rows per sample security over SYNC_YEARS (about 157 rows a year: not every security
#: trades every day of every year), rounded down so the table has at least the rows asked for.
ROWS_PER_SECURITY: Final = 620


@dataclass(frozen=True)
class DsfReplica:
    """A local WRDS replica holding one crsp.dsf (profile-2025 types) of ~sync_rows rows.

    ``rep`` is the `WrdsReplica` (``rep.execute(sql)`` runs admin SQL), ``connect`` the
    `WrdsSource`/``wrds.Connection`` keyword arguments, ``counts`` the rows of each year.
    """

    rep: Any
    connect: dict[str, Any]
    counts: dict[int, int]
    n_securities: int
    build_s: float

    @property
    def rows(self) -> int:
        return sum(self.counts.values())


@pytest.fixture(scope="session")
def dsf_replica(bench_sizes: BenchSizes) -> Iterator[DsfReplica]:
    """One replica for the session: test_resync.py changes one year's ``ret`` values and the
    table comment (row counts stay the same); test_sync.py syncs into empty vaults only."""
    from wrdsvault.testing import WrdsReplica

    n_securities = max(10, math.ceil(bench_sizes.sync_rows / ROWS_PER_SECURITY))
    source = SampleSource(seed=0, years=SYNC_YEARS, n_securities=n_securities, profile="2025")
    started = time.perf_counter()
    with WrdsReplica.start(source=source, datasets=[SYNC_DATASET]) as rep:
        counts = dict(
            rep.execute(
                f"SELECT extract(year FROM date)::int, count(*) FROM {SYNC_DATASET} GROUP BY 1"
            )
        )
        build_s = time.perf_counter() - started
        yield DsfReplica(rep, rep.connect_kwargs(), counts, n_securities, build_s)


# -- incompressible data for byte-throughput benchmarks (verify, backup) ---------------------------

#: Size of one yearly partition of `RandomSource`.
RANDOM_PART_MB: Final = 16


class RandomSource:
    """One dataset of random 64 KiB blobs (column ``blob``), 16 MB per yearly partition.

    Incompressible, so the Parquet files are as large as the data and hashing or copying
    dominates. Bump ``version`` to make the next sync see a new source vintage.
    """

    name = "random"

    def __init__(self, total_mb: int) -> None:
        self.years = list(range(2000, 2000 + max(1, total_mb // RANDOM_PART_MB)))
        self.schema = pa.schema([pa.field("d", pa.date32()), pa.field("blob", pa.binary())])
        self.version = 0

    def describe(self, spec: DatasetSpec) -> TableInfo:
        return TableInfo(schema=self.schema, change_marker=f"random-{self.version}")

    def partitions(self, spec: DatasetSpec) -> list[PartitionInfo]:
        return [PartitionInfo(year=y, row_count=RANDOM_PART_MB * 16) for y in self.years]

    def read_partition(
        self, spec: DatasetSpec, year: int | None, *, batch_rows: int = 131_072
    ) -> Iterator[pa.RecordBatch]:
        n = RANDOM_PART_MB * 16
        blobs = [os.urandom(64 * 1024) for _ in range(n)]
        days = pa.array([dt.date(year or 2000, 1, 1)] * n, pa.date32())
        yield pa.record_batch([days, pa.array(blobs, pa.binary())], schema=self.schema)

    def close(self) -> None:
        pass


@pytest.fixture(scope="session")
def random_source() -> type[RandomSource]:
    """The `RandomSource` class, for benchmarks that build their own random vault."""
    return RandomSource


@pytest.fixture(scope="module")
def random_vault(tmp_path_factory: pytest.TempPathFactory, bench_sizes: Any) -> Warehouse:
    """A vault of ``WRDSVAULT_BENCH_VERIFY_MB`` of random blobs in 16 MB yearly files."""
    wh = Warehouse(
        tmp_path_factory.mktemp("random") / "v", source=RandomSource(bench_sizes.verify_mb)
    )
    wh.sync("bench.blobs", date_column="d")
    return wh
