"""wh.backup(): incremental bytes after a one-year change, and full-backup throughput vs ``cp -r``.

The vault holds incompressible data (random binary columns, as in test_verify.py), sized by
``WRDSVAULT_BENCH_VERIFY_MB`` (smoke 64 MB, full 1,024 MB) in 16 MB yearly files.

* ``test_incremental_backup_after_one_year_changed``: after one year is re-synced with new
  content, the next backup copies exactly that year's file and writes one manifest (asserted in
  bytes, at the destination too).
* ``test_full_backup`` vs ``test_full_cp_r_baseline`` and ``test_full_cp_r_sync_baseline``: a
  full backup into a fresh folder (copy, hash at the destination, fsync of every file, renames,
  then manifests and HEAD) against plain ``cp -r`` of the same data folder, and ``cp -r``
  followed by ``sync``, in the same run. Each round starts with every dirty page written back
  (``os.sync()`` in the untimed setup), so no round pays for the previous one's writeback. The
  ratios (backup MB/s / baseline MB/s, medians; target >= 0.8 against ``cp -r``) are recorded in
  ``extra_info["ratio_backup_vs_cp"]`` and ``["ratio_backup_vs_cp_sync"]`` of whichever of the
  three runs last. All read warm source files from the page cache; ``cp -r`` neither hashes nor
  fsyncs (its copy may still be only in memory when it returns), ``cp -r`` + ``sync`` fsyncs but
  does not hash; the backup does both. docs/performance.md explains the ratios.
"""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

import pytest

from wrdsvault import Warehouse

_MEDIANS: dict[str, float] = {}
#: Timed rounds of each full-backup benchmark and baseline (medians are compared).
ROUNDS: Final = 5


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


def _fresh(prefix: str, tmp_path: Path) -> Callable[[], tuple[tuple[Path], dict[str, Any]]]:
    """A pedantic ``setup``: a new destination each round, after the previous one is removed and
    every dirty page on the machine written back (so no round pays for an earlier one's writeback).
    """
    dests = (tmp_path / f"{prefix}{i}" for i in itertools.count())
    last: list[Path] = []

    def fresh() -> tuple[tuple[Path], dict[str, Any]]:
        for old in last:
            shutil.rmtree(old, ignore_errors=True)
        os.sync()
        last[:] = [next(dests)]
        return (last[0],), {}

    return fresh


def _ratios(benchmark: Any) -> None:
    """Record backup MB/s against each baseline (once all three ran in this session)."""
    if {"backup", "cp", "cp_sync"} <= _MEDIANS.keys():
        backup = _MEDIANS["backup"]
        benchmark.extra_info["ratio_backup_vs_cp"] = round(_MEDIANS["cp"] / backup, 3)
        benchmark.extra_info["ratio_backup_vs_cp_sync"] = round(_MEDIANS["cp_sync"] / backup, 3)


@pytest.mark.benchmark(group="backup-full")
def test_full_backup(benchmark: Any, random_vault: Warehouse, tmp_path: Path) -> None:
    """A full backup into a fresh folder; target >= 0.8x the throughput of ``cp -r``."""
    report = benchmark.pedantic(
        random_vault.backup, setup=_fresh("b", tmp_path), rounds=ROUNDS, warmup_rounds=0
    )
    assert report.skipped_files == 0
    _record(benchmark, "backup", report.copied_bytes)
    benchmark.extra_info["target"] = "backup MB/s >= 0.8x cp -r MB/s"
    _ratios(benchmark)


def _cp_r(benchmark: Any, random_vault: Warehouse, tmp_path: Path, *, then_sync: bool) -> None:
    cp = shutil.which("cp")
    if cp is None:
        pytest.skip("no cp here")
    fresh = _fresh("c", tmp_path)
    copied: list[Path] = []

    def copy(dest: Path) -> None:
        subprocess.run([cp, "-r", str(random_vault.root / "data"), str(dest)], check=True)
        if then_sync:
            os.sync()
        copied[:] = [dest]

    benchmark.pedantic(copy, setup=fresh, rounds=ROUNDS, warmup_rounds=0)
    total = _bytes_under(random_vault.root / "data")
    assert _bytes_under(copied[0]) == total
    _record(benchmark, "cp_sync" if then_sync else "cp", total)
    _ratios(benchmark)


@pytest.mark.benchmark(group="backup-full")
def test_full_cp_r_baseline(benchmark: Any, random_vault: Warehouse, tmp_path: Path) -> None:
    """``cp -r`` of the same data folder into a fresh folder (the baseline of the target)."""
    _cp_r(benchmark, random_vault, tmp_path, then_sync=False)


@pytest.mark.benchmark(group="backup-full")
def test_full_cp_r_sync_baseline(benchmark: Any, random_vault: Warehouse, tmp_path: Path) -> None:
    """``cp -r`` then ``sync``: the same copy made durable, as the backup makes its copy."""
    _cp_r(benchmark, random_vault, tmp_path, then_sync=True)
