"""gc over a vault of 200 snapshots and ~10,000 files: its time, and proof it reads no data file.

The vault is built cheaply: 50 datasets x 10 years of tiny files (16 bytes each, named by their
SHA-256 like every data file), then 199 commits that each give 50 partitions new content, every
commit made by the library's writer (`open_writer` and `Writer.commit`: manifest, then HEAD).
That is 200 manifests of 500 partitions and ~10,450 distinct files. gc never opens a data file,
so their content does not matter: a policy keeping the newest tenth (``keep_last=20``) expires
180 snapshots and deletes ~9,000 files.

Measured, each round on a fresh hard-linked copy of the vault: that gc, and as
the baseline in the same run the least any gc must do: ``os.scandir`` of ``snapshots/`` and a
``json.loads`` of every manifest. Reported in ``extra_info``: files, snapshots, both medians
and their ratio; never asserted.

Proof of "manifests only": an audit hook (`sys.addaudithook`) counts every ``open`` of a
``*.parquet`` path in this process while gc runs; the test asserts zero, and a control read of
one data file shows that the hook does count such an open.

Under ``--benchmark-disable`` (the CI smoke run) the vault is 20 snapshots of 5 x 4 partitions.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import statistics
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Final

import pytest

from wrdsvault import VaultSettings, Warehouse
from wrdsvault._storage.atomic import hard_link
from wrdsvault._storage.layout import Layout
from wrdsvault._storage.writer import Operation, open_writer
from wrdsvault.manifest import ColumnSchema, DatasetEntry, PartitionFile

FULL: Final = {"snapshots": 200, "datasets": 50, "years": 10, "changed": 50}
SMOKE: Final = {"snapshots": 20, "datasets": 5, "years": 4, "changed": 5}
FIRST_YEAR: Final = 2000
COLUMNS: Final = (ColumnSchema(name="x", type="int64"),)

_parquet_opens: list[str] = []
_counting = False


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if _counting and event == "open" and str(args[0]).endswith(".parquet"):
        _parquet_opens.append(str(args[0]))


sys.addaudithook(_audit)


@dataclass
class GcVault:
    root: Path
    snapshots: int
    files: int
    build_s: float


def _smoke(config: pytest.Config) -> bool:
    return bool(config.getoption("benchmark_disable", default=False))


def _partition(layout: Layout, dataset: str, year: int, content: bytes) -> PartitionFile:
    """Write one tiny data file under its content address (once); return its manifest entry."""
    sha = hashlib.sha256(content).hexdigest()
    rel = layout.partition_relpath(dataset, year, sha)
    path = layout.resolve_relpath(rel)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    return PartitionFile(year=year, path=rel, sha256=sha, size_bytes=len(content), row_count=1)


def build(root: Path, size: dict[str, int]) -> GcVault:
    """The vault of the module docstring, every commit through the library's writer."""
    started = time.perf_counter()
    settings = VaultSettings()
    Warehouse(root, settings=settings, create=True).close()
    layout = Layout(Path(os.path.realpath(root)))
    names = [f"bench.t{k:03d}" for k in range(size["datasets"])]
    years = range(FIRST_YEAR, FIRST_YEAR + size["years"])
    cells = [(n, y) for n in names for y in years]
    version = dict.fromkeys(cells, 0)
    parent = None
    for i in range(size["snapshots"]):
        if i:
            for j in range(size["changed"]):
                cell = cells[(i * size["changed"] + j) % len(cells)]
                version[cell] = i
        datasets = {
            n: DatasetEntry(
                name=n,
                partition_column="date",
                primary_key=(),
                columns=COLUMNS,
                partitions=tuple(
                    _partition(layout, n, y, f"{n}:{y}:{version[(n, y)]:08d}".encode()[-16:])
                    for y in years
                ),
                source="bench",
            )
            for n in names
        }
        with open_writer(layout, settings, operation=Operation("sync", "bench"), timeout_s=5) as w:
            parent = w.commit(parent, datasets)
    files = sum(1 for _ in (layout.data_dir).rglob("*.parquet"))
    return GcVault(root, size["snapshots"], files, time.perf_counter() - started)


@pytest.fixture(scope="module")
def gc_vault(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> GcVault:
    size = SMOKE if _smoke(request.config) else FULL
    return build(tmp_path_factory.mktemp("gc") / "template", size)


def linked_copy(src: Path, dst: Path) -> Path:
    """A copy whose files are hard links (cheap); gc only unlinks and appends a new log."""
    shutil.copytree(src, dst, copy_function=lambda s, d: hard_link(Path(s), Path(d)))
    return dst


def baseline(root: Path) -> int:
    """The least any gc must do: list the manifests and parse each one."""
    n = 0
    with os.scandir(root / "snapshots") as entries:
        for entry in entries:
            if entry.name.endswith(".json"):
                with open(entry.path, "rb") as f:
                    n += len(json.loads(f.read())["datasets"])
    return n


@pytest.fixture
def copies(tmp_path: Path, gc_vault: GcVault) -> Iterator[list[Path]]:
    made: list[Path] = []
    yield made
    for p in made:
        shutil.rmtree(p, ignore_errors=True)


def test_gc_200_snapshots(
    benchmark: Any, gc_vault: GcVault, tmp_path: Path, copies: list[Path]
) -> None:
    """gc keeping the newest tenth, against the manifest-parsing baseline; no data file opened."""
    global _counting  # the audit hook cannot take arguments
    keep_last = gc_vault.snapshots // 10
    rounds = 3
    base_s = []
    for _ in range(rounds):
        t = time.perf_counter()
        baseline(gc_vault.root)
        base_s.append(time.perf_counter() - t)
    reports = []

    def setup() -> tuple[tuple[Warehouse], dict[str, Any]]:
        copy = linked_copy(gc_vault.root, tmp_path / f"copy{len(copies)}")
        copies.append(copy)
        return (Warehouse(copy, create=False),), {}

    def run(wh: Warehouse) -> None:
        global _counting
        _counting = True
        try:
            reports.append(wh.gc(keep_last=keep_last))
        finally:
            _counting = False

    _parquet_opens.clear()
    benchmark.pedantic(run, setup=setup, rounds=rounds, warmup_rounds=0)
    assert _parquet_opens == [], f"gc opened data files: {_parquet_opens[:5]}"
    report = reports[-1]
    assert len(report.expired) == gc_vault.snapshots - keep_last
    assert report.deleted_files
    with Warehouse(copies[-1], create=False) as wh:
        assert len(wh.snapshots()) == keep_last
        assert wh.verify(all_snapshots=True).ok  # every retained file is still there, intact

    # Control: the hook does see a data file being opened.
    _counting = True
    try:
        some = next((gc_vault.root / "data").rglob("*.parquet"))
        with open(some, "rb") as f:
            f.read(4)
    finally:
        _counting = False
    assert _parquet_opens == [str(some)]

    info = benchmark.extra_info
    info["snapshots"] = gc_vault.snapshots
    info["files"] = gc_vault.files
    info["vault_build_s"] = round(gc_vault.build_s, 2)
    info["deleted_files"] = len(report.deleted_files)
    info["baseline_median_ms"] = round(1000 * statistics.median(base_s), 1)
    if benchmark.stats is not None:
        gc_ms = 1000 * benchmark.stats.stats.median
        info["gc_median_ms"] = round(gc_ms, 1)
        info["gc_over_baseline"] = round(gc_ms / (1000 * statistics.median(base_s)), 1)
    info["data_file_opens"] = 0
    info["when"] = datetime.now(timezone.utc).isoformat()
