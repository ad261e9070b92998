"""Crash safety of `Warehouse.backup` (docs/backup.md): real processes, SIGKILL, a full disk.

A child process (``_backup_child.py``, run by path) backs up a vault whose newest snapshot and tag
the destination does not have yet, and kills itself at a named `BackupPoint` (every member of the
enum; the per-file points also at a later hit). Then, in the parent:

* the destination opens; its ``HEAD`` names the previous backup's snapshot (killed before the
  ``HEAD`` rename) or the new one (from ``backup-head-renamed`` on); every snapshot it lists
  verifies and its manifest is the source's, byte for byte;
* the next backup finishes the job: the destination then holds exactly the source's snapshots and
  tags, verifies, and has no garbage left.

A destination that fills up (a small tmpfs when the test may mount one, and RLIMIT_FSIZE in a
child always) fails with `DiskSpaceError` and leaves the previous backup current and complete;
a writer committing in a loop during backups never leaves a half-copied snapshot.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from wrdsvault import DiskSpaceError, Warehouse
from wrdsvault._storage.atomic import sha256_file
from wrdsvault._storage.catalog import Catalog, find_garbage
from wrdsvault._storage.crashpoints import ENV_VAR, BackupPoint
from wrdsvault._storage.layout import Layout
from wrdsvault.sources import SampleSource

pytestmark = pytest.mark.crash

HERE = Path(__file__).parent
CHILD = HERE / "_backup_child.py"
LOOP_CHILD = HERE / "_sync_loop_child.py"
CHILD_TIMEOUT_S = 120.0
MOUNT = shutil.which("mount")
UMOUNT = shutil.which("umount")
#: From this point on the new backup is current.
COMMITTED_FROM = list(BackupPoint).index(BackupPoint.HEAD_RENAMED)
PER_FILE = (
    BackupPoint.FILE_COPIED,
    BackupPoint.FILE_FSYNCED,
    BackupPoint.FILE_RENAMED,
    BackupPoint.FILE_DIR_FSYNCED,
)
CASES = [pytest.param(p, 1, id=p.value) for p in BackupPoint] + [
    pytest.param(p, 2, id=f"{p.value}:2") for p in PER_FILE
]


def _run_child(source: Path, dest: Path, *args: str, env: dict[str, str] | None = None):
    return subprocess.run(
        [sys.executable, str(CHILD), str(source), str(dest), *args],
        capture_output=True,
        text=True,
        timeout=CHILD_TIMEOUT_S,
        env={**os.environ, **(env or {})},
        check=False,
    )


def _manifests(root: Path) -> dict[str, bytes]:
    return {p.stem: p.read_bytes() for p in sorted((root / "snapshots").glob("*.json"))}


def _assert_complete_backup_of(dest: Path, source: Warehouse, ids: list[str]) -> None:
    """``dest`` lists exactly ``ids``, each verifying, each manifest the source's own bytes."""
    src = _manifests(source.root)
    with Warehouse(dest, create=False) as b:
        listed = [s.snapshot_id for s in b.snapshots()]
        assert listed == ids
        report = b.verify(all_snapshots=True)
        assert report.ok, report.summary()
    have = _manifests(dest)
    for sid in ids:
        assert have[sid] == src[sid]


@pytest.fixture
def source(tmp_path: Path, make_source: Callable[..., SampleSource]) -> Iterator[Warehouse]:
    """A vault with a vintage-1 snapshot (tag ``paper``) already backed up to ``tmp_path/b``,
    then a vintage-2 snapshot of two datasets (tag ``v2``) the backup lacks."""
    wh = Warehouse(tmp_path / "vault", source=make_source(1))
    wh.sync(["crsp.msf", "ff.factors_monthly"])
    wh.tag("paper")
    wh.backup(tmp_path / "b")
    wh.source = make_source(2)
    wh.sync(["crsp.msf", "ff.factors_monthly"])
    wh.tag("v2")
    yield wh
    wh.close()


@pytest.mark.parametrize(("point", "nth"), CASES)
def test_backup_killed_at_each_step_leaves_the_previous_backup(
    source: Warehouse, tmp_path: Path, point: BackupPoint, nth: int
):
    """SIGKILL at every backup step: the previous backup (or, past the HEAD rename, the new
    one) stays current and complete, and the next backup completes it."""
    ids = [s.snapshot_id for s in source.snapshots()]
    dest = tmp_path / "b"
    proc = _run_child(source.root, dest, env={ENV_VAR: f"{point.value}:{nth}"})
    assert proc.returncode == -9, proc.stderr
    committed = list(BackupPoint).index(point) >= COMMITTED_FROM
    _assert_complete_backup_of(dest, source, ids if committed else ids[:1])

    report = source.backup(dest)
    assert report.head == ids[-1]
    _assert_complete_backup_of(dest, source, ids)
    with Warehouse(dest, create=False) as b:
        assert b.tags() == source.tags()
    garbage = list(find_garbage(Catalog(Layout(Path(os.path.realpath(dest))))))
    assert [g for g in garbage if g.kind != "dead-lease"] == []


def test_a_destination_that_fills_up_under_a_file_size_limit(source: Warehouse, tmp_path: Path):
    """A copy that hits RLIMIT_FSIZE (EFBIG) fails with DiskSpaceError; the previous backup stays
    current and complete, and a backup without the limit then succeeds."""
    ids = [s.snapshot_id for s in source.snapshots()]
    dest = tmp_path / "b"
    largest_new = max(p.size_bytes for p in source.snapshot().manifest.files())
    proc = _run_child(source.root, dest, "--fsize", str(largest_new // 2))
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("DiskSpaceError"), proc.stderr
    assert "previous backup stays current" in proc.stderr
    _assert_complete_backup_of(dest, source, ids[:1])
    source.backup(dest)
    _assert_complete_backup_of(dest, source, ids)


@pytest.fixture
def small_tmpfs(tmp_path: Path) -> Iterator[Callable[[int], Path]]:
    """Mount a tmpfs of a given size (skip where this process may not mount); unmount after."""
    mounted: list[Path] = []

    def mount(size_bytes: int) -> Path:
        where = tmp_path / "mnt"
        where.mkdir()
        if MOUNT is None or UMOUNT is None:
            pytest.skip("no mount(8) here")
        proc = subprocess.run(
            [MOUNT, "-t", "tmpfs", "-o", f"size={size_bytes}", "tmpfs", str(where)],
            capture_output=True,
            check=False,
        )
        if proc.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.decode().strip()}")
        mounted.append(where)
        return where

    yield mount
    for where in mounted:
        assert UMOUNT is not None
        subprocess.run([UMOUNT, str(where)], check=False)


def test_a_destination_disk_that_fills_up(
    tmp_path: Path,
    make_source: Callable[..., SampleSource],
    small_tmpfs: Callable[[int], Path],
):
    """On a real file system that fills up (a small tmpfs), the backup fails with
    DiskSpaceError and the previous backup stays current and complete."""
    wh = Warehouse(tmp_path / "vault", source=make_source(1))
    wh.sync("crsp.msf")
    used = sum(p.stat().st_size for p in (tmp_path / "vault").rglob("*") if p.is_file())
    mnt = small_tmpfs(used + 512 * 1024)
    dest = mnt / "b"
    wh.backup(dest)
    first = [s.snapshot_id for s in wh.snapshots()]
    wh.sync("crsp.dsf")  # daily data: far more than the room left
    assert sum(p.size_bytes for p in wh.snapshot().manifest.files()) > 2 * used + 512 * 1024
    with pytest.raises(DiskSpaceError, match="previous backup stays current"):
        wh.backup(dest)
    _assert_complete_backup_of(dest, wh, first)
    wh.close()


def test_backup_while_a_writer_commits_in_a_loop(source: Warehouse, tmp_path: Path):
    """Backups run while another process commits snapshot after snapshot: every snapshot a
    backup holds verifies and equals the source's, and the last backup holds them all."""
    dest = tmp_path / "b"
    writer = subprocess.Popen(
        [sys.executable, str(LOOP_CHILD), str(source.root), "6"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    backups = 0
    try:
        while writer.poll() is None or backups == 0:
            report = source.backup(dest)
            backups += 1
            _assert_complete_backup_of(dest, source, list(_committed_in(dest)))
            assert set(report.snapshots) <= set(_manifests(dest))
    finally:
        out, err = writer.communicate(timeout=CHILD_TIMEOUT_S)
    assert writer.returncode == 0, err
    assert out.count("committed ") == 6
    source.backup(dest)
    _assert_complete_backup_of(dest, source, [s.snapshot_id for s in source.snapshots()])


def _committed_in(dest: Path) -> Iterator[str]:
    with Warehouse(dest, create=False) as b:
        yield from (s.snapshot_id for s in b.snapshots())


def test_backup_verify_child_reports_json(source: Warehouse, tmp_path: Path):
    """The child's JSON report of a ``verify`` backup counts every file it re-hashed."""
    proc = _run_child(source.root, tmp_path / "b", "--verify")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["ok"] and report["verified_files"] > 0


def test_a_destination_that_vanishes_mid_backup(source: Warehouse, tmp_path: Path):
    """A destination that disappears part-way (unmounted, moved) fails with BackupError; put
    back, it holds the previous backup, current and complete, and the next backup finishes."""
    ids = [s.snapshot_id for s in source.snapshots()]
    dest = tmp_path / "b"
    away = tmp_path / "unmounted"
    proc = _run_child(source.root, dest, "--vanish-to", str(away))
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("BackupError"), proc.stderr
    assert "vanished or failing destination" in proc.stderr
    assert not dest.exists()
    away.rename(dest)
    _assert_complete_backup_of(dest, source, ids[:1])
    source.backup(dest)  # breaks the dead child's lock
    _assert_complete_backup_of(dest, source, ids)


def test_every_copy_is_written_and_hashed_before_the_first_fsync(source: Warehouse, tmp_path: Path):
    """Killed at the first file fsync, the backup has already copied every file it needed into
    the destination's staging folder, whole (the fsyncs are issued after the copies, so the
    kernel writes them back together), and renamed none of them yet."""
    dest = tmp_path / "b"
    with Warehouse(dest, create=False) as b:
        have = set(b.snapshot().files("crsp.msf")) | set(b.snapshot().files("ff.factors_monthly"))
    wanted = {
        p.path.rsplit("/", 1)[-1]: p
        for p in source.snapshot().manifest.files()
        if not (dest / p.path).exists()
    }
    assert len(wanted) >= 2 and have
    proc = _run_child(source.root, dest, env={ENV_VAR: BackupPoint.FILE_FSYNCED.value})
    assert proc.returncode == -9, proc.stderr
    staged = {p.name.split(".")[1] + ".parquet": p for p in (dest / "tmp").rglob(".*.tmp")}
    assert set(staged) == set(wanted)
    for name, entry in wanted.items():
        assert sha256_file(staged[name]) == (entry.sha256, entry.size_bytes)
        assert not (dest / entry.path).exists()
