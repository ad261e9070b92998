"""verify() throughput against plain hashlib.sha256 over the same bytes (target >= 0.8x).

The vault holds incompressible data (random binary columns), so the Parquet files are as large as
the data and hashing dominates. Size: ``WRDSVAULT_BENCH_VERIFY_MB`` (smoke 64 MB; the target
is stated for >= 1 GB, ``WRDSVAULT_BENCH_SCALE=full``: 1,024 MB), in 16 MB yearly files. Both sides
read warm files from the page cache (the files were just written), so this measures hashing, not
the disk. Each benchmark records bytes, files and its median MB/s in ``extra_info``; the ratio
(verify MB/s / hashlib MB/s, target >= 0.8) is read across the two medians of the group.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from wrdsvault import Warehouse
from wrdsvault.datasets import DatasetSpec
from wrdsvault.sources.base import PartitionInfo, TableInfo

_PART_MB = 16


class RandomSource:
    """One dataset of random 64 KiB blobs (column ``blob``), 16 MB per yearly partition."""

    name = "random"

    def __init__(self, total_mb: int) -> None:
        self.years = list(range(2000, 2000 + max(1, total_mb // _PART_MB)))
        self.schema = pa.schema([pa.field("d", pa.date32()), pa.field("blob", pa.binary())])

    def describe(self, spec: DatasetSpec) -> TableInfo:
        return TableInfo(schema=self.schema, change_marker=f"random-{len(self.years)}")

    def partitions(self, spec: DatasetSpec) -> list[PartitionInfo]:
        return [PartitionInfo(year=y, row_count=_PART_MB * 16) for y in self.years]

    def read_partition(
        self, spec: DatasetSpec, year: int | None, *, batch_rows: int = 131_072
    ) -> Iterator[pa.RecordBatch]:
        n = _PART_MB * 16
        blobs = [os.urandom(64 * 1024) for _ in range(n)]
        days = pa.array([dt.date(year or 2000, 1, 1)] * n, pa.date32())
        yield pa.record_batch([days, pa.array(blobs, pa.binary())], schema=self.schema)

    def close(self) -> None:
        pass


@pytest.fixture(scope="module")
def random_vault(tmp_path_factory: pytest.TempPathFactory, bench_sizes: Any) -> Warehouse:
    source = RandomSource(bench_sizes.verify_mb)
    wh = Warehouse(tmp_path_factory.mktemp("verify") / "v", source=source)
    wh.sync("bench.blobs", date_column="d")
    return wh


def _record(benchmark: Any, total_bytes: int, files: int) -> None:
    info = benchmark.extra_info
    info["bytes"] = total_bytes
    info["files"] = files
    if benchmark.stats is not None:  # --benchmark-disable: nothing was timed
        info["mb_per_s"] = round(total_bytes / 1e6 / benchmark.stats.stats.median, 1)


def _plain_hashlib(paths: list[Path]) -> int:
    total = 0
    for path in paths:
        h = hashlib.sha256()
        with path.open("rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
                total += len(chunk)
        assert h.hexdigest()
    return total


@pytest.mark.benchmark(group="verify")
def test_verify_vault(benchmark: Any, random_vault: Warehouse) -> None:
    """wh.verify() re-hashes every pinned file; target >= 0.8x hashlib's throughput."""
    report = benchmark.pedantic(random_vault.verify, rounds=3, warmup_rounds=1)
    assert report.ok
    _record(benchmark, report.bytes_checked, report.files_checked)
    benchmark.extra_info["target"] = "verify MB/s >= 0.8x hashlib MB/s"


@pytest.mark.benchmark(group="verify")
def test_verify_plain_hashlib_baseline(benchmark: Any, random_vault: Warehouse) -> None:
    """hashlib.sha256 over the same files, one after another, 1 MiB reads (the baseline)."""
    paths = random_vault.snapshot().files("bench.blobs")
    total = benchmark.pedantic(_plain_hashlib, args=(paths,), rounds=3, warmup_rounds=1)
    assert total == sum(p.stat().st_size for p in paths)
    _record(benchmark, total, len(paths))
