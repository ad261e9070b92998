"""Real reader processes query an old snapshot in a loop while gc expires it: they never notice.

Two child processes (``_reader_loop_child.py``) open snapshot A of a vault A, B, C (no file
shared: other seeds) and query it in a loop. The parent runs ``gc(keep_last=1)``, which expires A
and B; A's files stay because the readers hold leases on A, B's go. Each reader runs its query
once more after gc returned and reports no error and no changed answer. Once the readers have
closed A, the next gc deletes A's manifest and files.

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

from wrdsvault import Warehouse
from wrdsvault.sources import SampleSource

CHILD: Path = Path(__file__).with_name("_reader_loop_child.py")
SQL = "select year(date) as y, count(*) as n, round(sum(ret), 9) as s from crsp.msf group by y"
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


def test_readers_keep_answering_while_gc_expires_their_snapshot(
    vault: tuple[Path, list[str]],
) -> None:
    """gc expires the snapshot two live readers have open; they keep answering identically,
    its files stay until they close it, and the next gc then deletes them."""
    root, (a, b, c) = vault
    with Warehouse(root, create=False) as wh:
        only_a, only_b = files_of(wh, a), files_of(wh, b)
        procs = start_readers(root, a, 2)
        try:
            report = wh.gc(keep_last=1)
            assert report.expired == (a, b)
            assert report.held == (a,), "the readers' leases hold A's manifest and files"
            assert set(report.deleted_files) == only_b
            assert all((root / p).exists() for p in only_a)
        finally:
            results = stop_readers(procs)
        for result in results:
            assert result["errors"] == [] and result["error_count"] == 0, result
            assert result["mismatches"] == 0, result
            assert result["queries"] >= 1
        later = wh.gc(keep_last=1)
        assert later.expired == ()
        assert later.deleted_manifests == (a,)
        assert set(later.deleted_files) == only_a
        assert [s.id for s in wh.snapshots()] == [c]


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
