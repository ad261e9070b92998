"""Real reader processes query an old snapshot in a loop while gc runs: they never notice.

Two child processes (``_reader_loop_child.py``) open snapshot A of a vault A, B, C (no file
shared: other seeds) and query it in a loop while the parent runs ``gc(keep_last=1)``. Either gc
sees their leases when it plans and keeps A, or (a gc that planned before they leased) A's expiry
is recorded while they hold it: then gc keeps A's manifest and files until they close it. Each
reader runs its query once more after gc returned and reports no error and no changed answer.
Once the readers have closed A, the next gc deletes A's manifest and files.

The negative control deletes A's files by hand under a reader: the reader reports errors, so the
test above would have caught a gc that deleted a leased snapshot's files.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from _helpers.records import expire_by_hand
from wrdsvault import SnapshotNotFoundError, Warehouse
from wrdsvault.sources import SampleSource

CHILD: Path = Path(__file__).with_name("_reader_loop_child.py")
SQL = (
    "select year(date) as y, count(*) as n, round(sum(ret), 9) as s "
    "from crsp.msf group by y order by y"
)
TIMEOUT_S = 60.0


@pytest.fixture
def vault(tmp_path: Path) -> tuple[Path, list[str]]:
    """Snapshots A, B, C of three seeds (every file differs): (root, ids)."""
    root = tmp_path / "vault"
    ids = []
    with Warehouse(root) as wh:
        for seed in (0, 1, 2):
            wh.source = SampleSource(seed=seed, years=range(2019, 2022), n_securities=20)
            report = wh.sync("crsp.msf", validate=False)  # other seeds are no new vintage
            assert report.snapshot_id is not None
            ids.append(report.snapshot_id)
    return root, ids


def start_readers(root: Path, ref: str, n: int) -> list[subprocess.Popen[str]]:
    """Start ``n`` readers of ``ref``; return once each has answered once."""
    procs = [
        subprocess.Popen(
            [sys.executable, str(CHILD), str(root), ref, SQL],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(n)
    ]
    for proc in procs:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line, proc.stderr.read() if proc.stderr else ""
        ready = json.loads(line)
        assert ready["event"] == "ready" and ready["id"] == ref
    return procs


def stop_readers(procs: list[subprocess.Popen[str]]) -> list[dict[str, Any]]:
    """Tell each reader to stop after one more query; return their reports."""
    out = []
    for proc in procs:
        stdout, stderr = proc.communicate("stop\n", timeout=TIMEOUT_S)
        assert proc.returncode == 0, stderr
        out.append(json.loads(stdout.strip().splitlines()[-1]))
    return out


def files_of(wh: Warehouse, sid: str) -> set[str]:
    return {p.path for p in wh._catalog.manifest(sid).files()}


def test_readers_keep_answering_while_gc_runs(vault: tuple[Path, list[str]]) -> None:
    """gc keeps the snapshot two live readers have open (reason ``leased``), expires the rest;
    the readers answer identically throughout; once they close it, the next gc expires it."""
    root, (a, b, c) = vault
    with Warehouse(root, create=False) as wh:
        only_a, only_b = files_of(wh, a), files_of(wh, b)
        procs = start_readers(root, a, 2)
        try:
            report = wh.gc(keep_last=1)
            assert report.expired == (b,)
            assert dict((k.snapshot_id, k.reasons) for k in report.kept)[a] == ("leased",)
            assert set(report.deleted_files) == only_b
        finally:
            results = stop_readers(procs)
        for result in results:
            assert result["errors"] == [] and result["mismatches"] == 0, result
        later = wh.gc(keep_last=1)
        assert later.expired == (a,)
        assert set(later.deleted_files) == only_a
        assert [s.snapshot_id for s in wh.snapshots()] == [c]


def test_snapshot_expired_while_open_keeps_its_files_until_closed(
    vault: tuple[Path, list[str]],
) -> None:
    """The expiry of a snapshot readers hold is recorded (a gc that planned before they leased
    it): gc keeps its manifest and files (``held``), they answer identically, a new open of it
    fails as expired, and after they close it the next gc deletes it."""
    root, (a, _b, c) = vault
    procs = start_readers(root, a, 2)
    try:
        expire_by_hand(root, a)
        with Warehouse(root, create=False) as wh:
            only_a = files_of(wh, a)
            report = wh.gc(keep_last=1)
            assert report.held == (a,)
            assert not set(report.deleted_files) & only_a
            assert (root / "snapshots" / f"{a}.json").exists()
            with pytest.raises(SnapshotNotFoundError, match="was expired by gc"):
                wh.snapshot(a)
    finally:
        results = stop_readers(procs)
    for result in results:
        assert result["errors"] == [] and result["mismatches"] == 0, result
    with Warehouse(root, create=False) as wh:
        later = wh.gc(keep_last=1)
        assert later.deleted_manifests == (a,)
        assert set(later.deleted_files) == only_a
        assert [s.snapshot_id for s in wh.snapshots()] == [c]
        assert wh.verify(all_snapshots=True).ok


def test_negative_control_a_deleted_file_is_caught(vault: tuple[Path, list[str]]) -> None:
    """Deleting a pinned file under a reader makes its queries fail: the loop would notice."""
    root, (a, _b, _c) = vault
    with Warehouse(root, create=False) as wh:
        doomed = files_of(wh, a)
    procs = start_readers(root, a, 1)
    try:
        for rel in doomed:
            (root / rel).unlink()
    finally:
        (result,) = stop_readers(procs)
    assert result["error_count"] >= 1, result
