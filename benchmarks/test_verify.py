"""verify() throughput against plain hashlib.sha256 over the same bytes (target >= 0.8x).

The vault holds incompressible data (random binary columns), so the Parquet files are as large as
the data and hashing dominates. Size: ``WRDSVAULT_BENCH_VERIFY_MB`` (smoke 64 MB; the target
is stated for >= 1 GB, ``WRDSVAULT_BENCH_SCALE=full``: 1,024 MB), in 16 MB yearly files. Both sides
read warm files from the page cache (the files were just written), so this measures hashing, not
the disk. Each benchmark records bytes, files and its median MB/s in ``extra_info``; the ratio
(verify MB/s / hashlib MB/s, target >= 0.8) is read across the two medians of the group.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest

from wrdsvault import Warehouse


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
