"""wh.backup(): incremental bytes after a one-year change, and full-backup throughput vs ``cp -r``.

The vault holds incompressible data (random binary columns, as in test_verify.py), sized by
``WRDSVAULT_BENCH_VERIFY_MB`` (smoke 64 MB, full 1,024 MB) in 16 MB yearly files.

* ``test_incremental_backup_after_one_year_changed``: after one year is re-synced with new
  content, the next backup copies exactly that year's file and writes one manifest (asserted in
  bytes, at the destination too).
* ``test_full_backup`` vs ``test_full_cp_r_baseline``: a full backup into a fresh folder (copy,
  hash, fsync, re-hash of every file, then manifests and HEAD) against plain ``cp -r`` of the
  same data folder in the same run. The ratio (backup MB/s / cp MB/s, target >= 0.8) is recorded
  in the baseline's ``extra_info["ratio_backup_vs_cp"]``. Both read warm files from the page
  cache; ``cp -r`` does not fsync, the backup does (that is most of the difference on a real
  disk).
"""

from __future__ import annotations

import itertools
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from wrdsvault import Warehouse

_MEDIANS: dict[str, float] = {}


def _bytes_under(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def _record(benchmark: Any, name: str, total_bytes: int) -> None:
    benchmark.extra_info["bytes"] = total_bytes
    if benchmark.stats is not None:  # --benchmark-disable: nothing was timed
        median = benchmark.stats.stats.median
        _MEDIANS[name] = median
        benchmark.extra_info["mb_per_s"] = round(total_bytes / 1e6 / median, 1)


@pytest.mark.benchmark(group="backup-incremental")
def test_incremental_backup_after_one_year_changed(
    benchmark: Any, tmp_path: Path, bench_sizes: Any, random_source: Any
) -> None:
    """After a one-year change the backup copies that year's file and one manifest, nothing else."""
    source = random_source(min(bench_sizes.verify_mb, 64))
    wh = Warehouse(tmp_path / "v", source=source)
    wh.sync("bench.blobs", date_column="d")
    dest = tmp_path / "b"
    wh.backup(dest)
    before = set(wh.snapshot().files("bench.blobs"))
    data_before = _bytes_under(dest / "data")
    year = source.years[len(source.years) // 2]
    source.version += 1
    wh.sync("bench.blobs", date_column="d", years=[year], full=True)
    (changed,) = set(wh.snapshot().files("bench.blobs")) - before
    manifest = wh.root / "snapshots" / f"{wh.snapshot().id}.json"

    report = benchmark.pedantic(wh.backup, args=(dest,), rounds=1, iterations=1)
    assert report.copied_files == 1
    assert report.copied_bytes == changed.stat().st_size
    assert len(report.new_snapshots) == 1
    assert _bytes_under(dest / "data") - data_before == changed.stat().st_size
    assert (dest / "snapshots" / manifest.name).read_bytes() == manifest.read_bytes()
    benchmark.extra_info["copied_bytes"] = report.copied_bytes
    benchmark.extra_info["manifest_bytes"] = manifest.stat().st_size
    benchmark.extra_info["vault_bytes"] = _bytes_under(wh.root / "data")


@pytest.mark.benchmark(group="backup-full")
def test_full_backup(benchmark: Any, random_vault: Warehouse, tmp_path: Path) -> None:
    """A full backup into a fresh folder; target >= 0.8x the throughput of ``cp -r``."""
    dests = (tmp_path / f"b{i}" for i in itertools.count())
    last: list[Path] = []

    def fresh() -> tuple[tuple[Path], dict[str, Any]]:
        for old in last:
            shutil.rmtree(old, ignore_errors=True)
        last[:] = [next(dests)]
        return (last[0],), {}

    report = benchmark.pedantic(random_vault.backup, setup=fresh, rounds=3, warmup_rounds=0)
    assert report.skipped_files == 0
    _record(benchmark, "backup", report.copied_bytes)
    benchmark.extra_info["target"] = "backup MB/s >= 0.8x cp -r MB/s"


@pytest.mark.benchmark(group="backup-full")
def test_full_cp_r_baseline(benchmark: Any, random_vault: Warehouse, tmp_path: Path) -> None:
    """``cp -r`` of the same data folder into a fresh folder (the baseline)."""
    cp = shutil.which("cp")
    if cp is None:
        pytest.skip("no cp here")
    dests = (tmp_path / f"c{i}" for i in itertools.count())
    last: list[Path] = []

    def fresh() -> tuple[tuple[Path], dict[str, Any]]:
        for old in last:
            shutil.rmtree(old, ignore_errors=True)
        last[:] = [next(dests)]
        return (last[0],), {}

    def copy(dest: Path) -> None:
        subprocess.run([cp, "-r", str(random_vault.root / "data"), str(dest)], check=True)

    benchmark.pedantic(copy, setup=fresh, rounds=3, warmup_rounds=0)
    total = _bytes_under(random_vault.root / "data")
    assert _bytes_under(last[0]) == total
    _record(benchmark, "cp", total)
    if "backup" in _MEDIANS and "cp" in _MEDIANS:
        benchmark.extra_info["ratio_backup_vs_cp"] = round(_MEDIANS["cp"] / _MEDIANS["backup"], 3)
