"""Opening snapshots of a wide vault: `Warehouse.snapshot` and the first query after it.

The vault holds 100 datasets (``bench.t000`` .. ``bench.t099``) x 60 yearly partitions of three
rows: 6,000 Parquet files in one manifest (``WRDSVAULT_BENCH_OPEN_DATASETS`` sets the number of
datasets; ``benchmarks/full_run.py`` scales it), served by `TinySource`, a minimal `Source` defined
here. Opening a snapshot reads HEAD and the manifest and takes the reader lease; the first query
builds the DuckDB connection and checks (exists, regular, size) and builds the view of the one
dataset it names: the other 99 are checked when a query first names them.

Targets (reported in ``extra_info``, never asserted): ``wh.snapshot("latest")`` <= 30 ms for 6,000
files; the first query <= 100 ms.

A second vault of ~200 small snapshots of one dataset times as-of resolution
(``wh.snapshot("<ISO datetime>")``). It is skipped if committing them takes more than 30 s.

Under ``--benchmark-disable`` (the CI smoke run) both vaults are built small (10 datasets x 6
years, 20 snapshots), unless ``WRDSVAULT_BENCH_OPEN_DATASETS`` is set: the smoke run checks that
the code paths work, not how fast they are.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import pyarrow as pa
import pytest

from wrdsvault import DatasetSpec, Snapshot, VaultSettings, Warehouse
from wrdsvault.sources import PartitionInfo, Source, TableInfo
from wrdsvault.sources.base import SOURCE_TYPE_KEY

#: Full size (timed runs): the reference 100 datasets (``bench_sizes.open_datasets``) x 60 files.
WIDE_YEARS: Final = 60
#: Smoke size (``--benchmark-disable``).
SMOKE_DATASETS: Final = 10
SMOKE_YEARS: Final = 6
ROWS_PER_YEAR: Final = 3
FIRST_YEAR: Final = 1964
AS_OF_SNAPSHOTS: Final = 200
AS_OF_SNAPSHOTS_SMOKE: Final = 20
AS_OF_BUILD_BUDGET_S: Final = 30.0
OPEN_TARGET_MS: Final = 30.0
FIRST_QUERY_TARGET_MS: Final = 100.0

SCHEMA: Final = pa.schema(
    [
        pa.field("date", pa.date32(), metadata={SOURCE_TYPE_KEY: b"date"}),
        pa.field("id", pa.int32(), metadata={SOURCE_TYPE_KEY: b"integer"}),
        pa.field("value", pa.float64(), metadata={SOURCE_TYPE_KEY: b"double precision"}),
    ]
)


class TinySource:
    """A `Source` serving any ``bench.*`` dataset: ``n_years`` yearly partitions of 3 rows.

    ``version`` goes into every marker and value: bump it and the next sync rewrites everything.
    """

    def __init__(self, *, first_year: int, n_years: int) -> None:
        self.years = range(first_year, first_year + n_years)
        self.version = 0

    @property
    def name(self) -> str:
        """The source name recorded in manifests."""
        return "bench-tiny"

    def describe(self, spec: DatasetSpec) -> TableInfo:
        """Return the fixed schema; the change marker follows ``version``."""
        return TableInfo(
            schema=SCHEMA,
            change_marker=f"{spec.name}:v{self.version}",
            row_estimate=ROWS_PER_YEAR * len(self.years),
            comment="benchmark table",
        )

    def partitions(self, spec: DatasetSpec) -> Sequence[PartitionInfo]:
        """Return one partition per year, with exact row counts and per-year markers."""
        return [
            PartitionInfo(
                year=y, row_count=ROWS_PER_YEAR, marker=f"{spec.name}:{y}:v{self.version}"
            )
            for y in self.years
        ]

    def read_partition(
        self, spec: DatasetSpec, year: int | None, *, batch_rows: int = 131_072
    ) -> Iterator[pa.RecordBatch]:
        """Yield the year's three rows (2 January, 30 June, 31 December) as one batch."""
        assert year is not None
        dates = [dt.date(year, 1, 2), dt.date(year, 6, 30), dt.date(year, 12, 31)]
        yield pa.record_batch(
            [
                pa.array(dates, pa.date32()),
                pa.array([1, 2, 3], pa.int32()),
                pa.array([year + self.version / 1000.0] * ROWS_PER_YEAR, pa.float64()),
            ],
            schema=SCHEMA,
        )

    def close(self) -> None:
        """Nothing to release."""


@dataclass(frozen=True)
class WideVault:
    """The wide vault: where it is, its shape, and what building it cost."""

    root: Path
    datasets: tuple[str, ...]
    n_years: int
    build_s: float
    manifest_bytes: int

    @property
    def files(self) -> int:
        return len(self.datasets) * self.n_years


@dataclass(frozen=True)
class AsOfVault:
    """The many-snapshots vault: its root, snapshot ids oldest first, and build time."""

    root: Path
    ids: tuple[str, ...]
    build_s: float


def _disabled(config: pytest.Config) -> bool:
    return bool(config.getoption("benchmark_disable", default=False))


@pytest.fixture(scope="module")
def wide_vault(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, bench_sizes: Any
) -> WideVault:
    """Sync 100 datasets x 60 years (6,000 files) into one snapshot (smoke: 10 x 6)."""
    explicit = "WRDSVAULT_BENCH_OPEN_DATASETS" in bench_sizes.explicit
    smoke = _disabled(request.config) and not explicit
    n_datasets = SMOKE_DATASETS if smoke else bench_sizes.open_datasets
    n_years = SMOKE_YEARS if smoke else WIDE_YEARS
    source = TinySource(first_year=FIRST_YEAR, n_years=n_years)
    assert isinstance(source, Source)
    names = tuple(f"bench.t{i:03d}" for i in range(n_datasets))
    root = tmp_path_factory.mktemp("wide") / "vault"
    started = time.perf_counter()
    with Warehouse(root, source=source, settings=VaultSettings()) as wh:
        # Setup only, so no validation rules: they open one DuckDB connection per staged
        # partition (~20 ms each, over 2 minutes for 6,000 files on a 2-core machine).
        report = wh.sync(names, date_column="date", validate=False)
    build_s = time.perf_counter() - started
    assert report.snapshot_id is not None
    manifest = root / "snapshots" / f"{report.snapshot_id}.json"
    return WideVault(root, names, n_years, build_s, manifest.stat().st_size)


def _record_wide(benchmark: Any, vault: WideVault) -> None:
    info = benchmark.extra_info
    info["datasets"] = len(vault.datasets)
    info["files"] = vault.files
    info["rows"] = vault.files * ROWS_PER_YEAR
    info["manifest_bytes"] = vault.manifest_bytes
    info["vault_build_s"] = round(vault.build_s, 3)


def _record_median(benchmark: Any, key: str, target_ms: float | None = None) -> None:
    """Put the median (and the target it is read against) into extra_info, for the JSON report."""
    if benchmark.stats is None:  # --benchmark-disable: nothing was timed
        return
    median_ms = benchmark.stats.stats.median * 1e3
    benchmark.extra_info[f"{key}_median_ms"] = round(median_ms, 2)
    if target_ms is not None:
        benchmark.extra_info[f"{key}_target_ms"] = target_ms
        benchmark.extra_info[f"{key}_within_target"] = median_ms <= target_ms


@pytest.mark.benchmark(group="snapshot-open")
def test_snapshot_open_latest(benchmark, wide_vault):
    """Open the latest snapshot of 6,000 files from a fresh Warehouse (manifest not cached)."""

    def setup() -> tuple[tuple[Warehouse], dict[str, Any]]:
        return (Warehouse(wide_vault.root, create=False),), {}

    def open_latest(wh: Warehouse) -> Snapshot:
        return wh.snapshot("latest")

    snap = benchmark.pedantic(open_latest, setup=setup, rounds=15, warmup_rounds=1)
    assert snap.datasets == wide_vault.datasets
    assert sum(len(snap.files(name)) for name in snap.datasets) == wide_vault.files
    _record_wide(benchmark, wide_vault)
    _record_median(benchmark, "open", OPEN_TARGET_MS)


@pytest.mark.benchmark(group="snapshot-open")
def test_snapshot_open_latest_cached_manifest(benchmark, wide_vault):
    """Open the latest snapshot of 6,000 files again (manifest cached: only the file checks)."""
    wh = Warehouse(wide_vault.root, create=False)
    snap = benchmark.pedantic(wh.snapshot, args=("latest",), rounds=15, warmup_rounds=1)
    assert len(snap.files(wide_vault.datasets[-1])) == wide_vault.n_years
    _record_wide(benchmark, wide_vault)
    _record_median(benchmark, "open_cached", OPEN_TARGET_MS)


def _count_on_fresh_snapshots(
    benchmark: Any, vault: WideVault, table: str, *, before: str | None = None
) -> int:
    """Time counting ``table`` on a snapshot opened fresh for each round (after running the
    query ``before`` on it, untimed); return the count."""
    wh = Warehouse(vault.root, create=False)
    opened: list[Snapshot] = []

    def setup() -> tuple[tuple[Snapshot], dict[str, Any]]:
        snap = wh.snapshot("latest")
        opened.append(snap)
        if before is not None:
            snap.query(before)
        return (snap,), {}

    def count(snap: Snapshot) -> int:
        return int(snap.query(f"select count(*) from {table}").iloc[0, 0])

    try:
        return int(benchmark.pedantic(count, setup=setup, rounds=10, warmup_rounds=1))
    finally:
        for snap in opened:
            snap.close()


@pytest.mark.benchmark(group="snapshot-open")
def test_snapshot_open_first_query(benchmark, wide_vault):
    """The first query after opening: builds the connection, checks and counts one table."""
    count = _count_on_fresh_snapshots(benchmark, wide_vault, "bench.t000")
    assert count == wide_vault.n_years * ROWS_PER_YEAR
    _record_wide(benchmark, wide_vault)
    _record_median(benchmark, "first_query", FIRST_QUERY_TARGET_MS)


@pytest.mark.benchmark(group="snapshot-open")
def test_snapshot_open_second_dataset_query(benchmark, wide_vault):
    """The first query that names a second dataset, after a first query on another one: the
    snapshot's DuckDB database then allows every pinned file (docs/query.md#pinned)."""
    count = _count_on_fresh_snapshots(
        benchmark, wide_vault, "bench.t001", before="select count(*) from bench.t000"
    )
    assert count == wide_vault.n_years * ROWS_PER_YEAR
    _record_wide(benchmark, wide_vault)
    _record_median(benchmark, "second_dataset_query")


# -- as-of resolution over many snapshots --------------------------------------------------------


@pytest.fixture(scope="module")
def as_of_vault(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsOfVault:
    """Commit ~200 snapshots of one tiny dataset; skip if that takes longer than 30 s."""
    wanted = AS_OF_SNAPSHOTS_SMOKE if _disabled(request.config) else AS_OF_SNAPSHOTS
    source = TinySource(first_year=2020, n_years=1)
    root = tmp_path_factory.mktemp("asof") / "vault"
    ids: list[str] = []
    started = time.perf_counter()
    with Warehouse(root, source=source, settings=VaultSettings()) as wh:
        for version in range(wanted):
            source.version = version
            report = wh.sync("bench.asof", date_column="date", validate=False)
            assert report.snapshot_id is not None
            ids.append(report.snapshot_id)
            elapsed = time.perf_counter() - started
            if elapsed > AS_OF_BUILD_BUDGET_S:
                pytest.skip(
                    f"committing {version + 1} of {wanted} snapshots took {elapsed:.0f} s "
                    f"(budget {AS_OF_BUILD_BUDGET_S:.0f} s)"
                )
    assert ids == sorted(ids)
    return AsOfVault(root, tuple(ids), time.perf_counter() - started)


def _as_of_ref(snapshot_id: str, wh: Warehouse) -> str:
    """An ISO datetime (UTC, microseconds) naming the moment ``snapshot_id`` was committed."""
    when = wh.snapshot(snapshot_id).committed_at.astimezone(dt.timezone.utc)
    return when.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _record_as_of(benchmark: Any, vault: AsOfVault) -> None:
    benchmark.extra_info["snapshots"] = len(vault.ids)
    benchmark.extra_info["vault_build_s"] = round(vault.build_s, 3)


@pytest.mark.benchmark(group="snapshot-as-of")
def test_snapshot_resolve_as_of_datetime(benchmark, as_of_vault):
    """Open the snapshot current at a given instant among ~200 (fresh Warehouse each round)."""
    target = as_of_vault.ids[len(as_of_vault.ids) // 2]
    ref = _as_of_ref(target, Warehouse(as_of_vault.root, create=False))

    def setup() -> tuple[tuple[Warehouse], dict[str, Any]]:
        return (Warehouse(as_of_vault.root, create=False),), {}

    def open_as_of(wh: Warehouse) -> Snapshot:
        return wh.snapshot(ref)

    snap = benchmark.pedantic(open_as_of, setup=setup, rounds=30, warmup_rounds=1)
    assert snap.id == target
    _record_as_of(benchmark, as_of_vault)
    benchmark.extra_info["ref"] = ref
    _record_median(benchmark, "as_of")


@pytest.mark.benchmark(group="snapshot-as-of")
def test_snapshot_resolve_latest_many_snapshots(benchmark, as_of_vault):
    """Open "latest" in the same ~200-snapshot vault (fresh Warehouse each round), for scale."""

    def setup() -> tuple[tuple[Warehouse], dict[str, Any]]:
        return (Warehouse(as_of_vault.root, create=False),), {}

    def open_latest(wh: Warehouse) -> Snapshot:
        return wh.snapshot("latest")

    snap = benchmark.pedantic(open_latest, setup=setup, rounds=30, warmup_rounds=1)
    assert snap.id == as_of_vault.ids[-1]
    _record_as_of(benchmark, as_of_vault)
    _record_median(benchmark, "latest")
