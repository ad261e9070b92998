"""Fencing at the sync level (docs/locking.md): a writer paused past a takeover never commits."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import wrdsvault
from _helpers.proc import wait_for
from wrdsvault._storage.lock_tools import break_lock

pytestmark = pytest.mark.crash

CHILD = textwrap.dedent(
    """
    import json, sys
    import wrdsvault
    from wrdsvault.sources import SampleSource
    wh = wrdsvault.Warehouse(sys.argv[1], source=SampleSource(
        seed=0, years=range(2015, 2024), n_securities=300))
    try:
        report = wh.sync("crsp.dsf")
        print(json.dumps({"committed": report.committed, "id": report.snapshot_id}))
    except wrdsvault.WrdsVaultError as exc:
        print(json.dumps({"error": type(exc).__name__, "message": str(exc),
                          "quarantine": getattr(exc, "quarantine_path", None)}))
    """
)


def test_paused_writer_is_fenced_off_after_a_takeover(tmp_path: Path, make_source) -> None:
    """SIGSTOP a sync mid-write, take its lock over and commit; after SIGCONT it commits nothing."""
    root = tmp_path / "v"
    wh = wrdsvault.Warehouse(root, source=make_source())
    wh.sync("ff.factors_monthly")
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(root)], stdout=subprocess.PIPE, text=True
    )
    try:

        def staged() -> bool:
            """The child staged a partition (and is still syncing)."""
            assert child.poll() is None, "the sync ended before it could be paused"
            return bool(list((root / "tmp").glob("tx-*/*.parquet")))

        wait_for(staged, "the child to stage a partition", timeout_s=60)
        os.kill(child.pid, signal.SIGSTOP)
        # The human override: the owner is alive (stopped) on this host, so only allow_live breaks.
        broken = break_lock(root / ".lock", allow_live=True)
        assert broken.broken is True
        wh.source = make_source(2)
        takeover = wh.sync("ff.factors_monthly")
        assert takeover.committed
    finally:
        os.kill(child.pid, signal.SIGCONT)
    out, _ = child.communicate(timeout=120)
    result = json.loads(out.strip().splitlines()[-1])
    assert result["error"] == "SyncError"
    assert "taken over" in result["message"]
    assert wh.snapshot().id == takeover.snapshot_id  # the successor's commit stands
    assert wh.snapshot().datasets == ("ff.factors_monthly",)
    assert wh.verify(all_snapshots=True).ok
    assert result["quarantine"] and Path(result["quarantine"]).is_dir()
    assert not (root / ".lock").exists()  # the fenced writer did not remove its successor's lock
