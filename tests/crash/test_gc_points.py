"""Crash safety of `Warehouse.gc` (docs/retention.md): real processes, SIGKILL at every step.

A child process (``_gc_child.py``, run by path) runs ``gc(keep_last=1)`` on a vault of four
snapshots: A, B (tagged ``paper``, shares most files with A), C (no file shared), D (exactly A's
files). A clean gc expires A and C and deletes C's own files and both manifests. The child is
killed with SIGKILL at every `GcPoint` (and at later hits of the per-file and per-manifest
points), and at the writer's own points that gc passes (lock, staging). Then, in the parent:

* the retained snapshots B and D verify (every file re-hashed) and answer exactly as before;
* the listing is either the old one (killed before the expiry was written) or B, D;
* the next gc finishes the job: the vault ends exactly as after a clean gc (same manifests,
  same data files, each expiry logged once); or ``doctor --repair`` does, once the expiry was
  recorded.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import attrs
import pytest

from wrdsvault import Warehouse
from wrdsvault._storage.crashpoints import ENV_VAR, CrashPoint, GcPoint
from wrdsvault._storage.expiry import EXPIRY_LOG
from wrdsvault.sources import SampleSource

pytestmark = pytest.mark.crash

CHILD: Path = Path(__file__).with_name("_gc_child.py")
POLICY = {"keep_last": 1}
CHILD_TIMEOUT_S = 60.0
#: gc's own points, and the writer's points every write passes (gc runs in `open_writer`).
WRITER_POINTS = (
    CrashPoint.LOCK_ACQUIRED,
    CrashPoint.STAGING_CREATED,
    CrashPoint.STAGING_REMOVED,
    CrashPoint.LOCK_RELEASED,
)
CASES = (
    [pytest.param(p.value, id=p.value) for p in GcPoint]
    + [pytest.param(f"{GcPoint.FILE_DELETED.value}:2", id="gc-file-deleted:2")]
    + [pytest.param(f"{GcPoint.MANIFEST_DELETED.value}:2", id="gc-manifest-deleted:2")]
    + [pytest.param(p.value, id=p.value) for p in WRITER_POINTS]
)
#: Points after which the expiry is in the log (the write happened; a process kill keeps it).
RECORDED_FROM = list(GcPoint).index(GcPoint.EXPIRY_WRITTEN)


def source(seed: int, vintage: int = 1) -> SampleSource:
    return SampleSource(seed=seed, years=range(2019, 2023), n_securities=20, vintage=vintage)


def answers(wh: Warehouse, sid: str) -> tuple[str, list[tuple[Any, ...]]]:
    """Fingerprint and per-year answers of ``sid``, opened with every file re-hashed."""
    with wh.snapshot(sid, verify=True) as snap:
        df = snap.query(
            "select year(date) as y, count(*) as n, round(sum(ret), 9) as s "
            "from crsp.msf group by y order by y"
        )
        return snap.fingerprint, [tuple(r) for r in df.itertuples(index=False)]


@attrs.frozen
class Expected:
    """The template vault, and the state a clean gc leaves."""

    template: Path
    ids: tuple[str, str, str, str]
    kept: dict[str, tuple[str, list[tuple[Any, ...]]]]
    manifests: frozenset[str]
    files: frozenset[str]


def vault_files(root: Path) -> frozenset[str]:
    return frozenset(str(p.relative_to(root)) for p in (root / "data").rglob("*.parquet"))


def vault_manifests(root: Path) -> frozenset[str]:
    return frozenset(p.name.removesuffix(".json") for p in (root / "snapshots").glob("*.json"))


def logged(root: Path) -> list[str]:
    path = root / EXPIRY_LOG
    if not path.exists():
        return []
    return [json.loads(line)["snapshot_id"] for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def expected(tmp_path_factory: pytest.TempPathFactory) -> Expected:
    """Build the four-snapshot template and run a clean gc on a copy of it."""
    base = tmp_path_factory.mktemp("gc")
    template = base / "template"
    with Warehouse(template) as wh:
        ids = []
        for seed, vintage in ((0, 1), (0, 2), (1, 1), (0, 1)):
            wh.source = source(seed, vintage)
            report = wh.sync("crsp.msf")
            assert report.snapshot_id is not None
            ids.append(report.snapshot_id)
        a, b, c, d = ids
        wh.tag("paper", b)
        kept = {sid: answers(wh, sid) for sid in (b, d)}
    clean = base / "clean"
    shutil.copytree(template, clean)
    with Warehouse(clean, create=False) as wh:
        report = wh.gc(**POLICY)  # type: ignore[call-overload]
        assert report.expired == (a, c)
        assert report.deleted_files, "C's own files must be deleted"
    return Expected(
        template=template,
        ids=(a, b, c, d),
        kept=kept,
        manifests=vault_manifests(clean),
        files=vault_files(clean),
    )


def check_retained(root: Path, expected: Expected) -> list[str]:
    """B and D verify and answer as before; return the listing."""
    with Warehouse(root, create=False) as wh:
        listed = [s.snapshot_id for s in wh.snapshots()]
        for sid, state in expected.kept.items():
            assert answers(wh, sid) == state, f"retained snapshot {sid} changed"
        assert wh.verify(all_snapshots=True).ok
    return listed


@pytest.mark.parametrize("point", CASES)
@pytest.mark.parametrize("finisher", ["gc", "doctor"])
def test_sigkill_during_gc(tmp_path: Path, expected: Expected, point: str, finisher: str) -> None:
    """A gc SIGKILLed at any step leaves every retained snapshot complete; the next gc (or
    doctor --repair, once the expiry is recorded) ends exactly where a clean gc ends."""
    root = tmp_path / "vault"
    shutil.copytree(expected.template, root)
    proc = subprocess.run(
        [sys.executable, str(CHILD), str(root), json.dumps(POLICY)],
        env={**os.environ, ENV_VAR: point},
        capture_output=True,
        text=True,
        timeout=CHILD_TIMEOUT_S,
    )
    assert proc.returncode == -signal.SIGKILL, (point, proc.returncode, proc.stdout, proc.stderr)
    a, b, c, d = expected.ids
    name = point.partition(":")[0]
    gc_points = [p.value for p in GcPoint]
    recorded = name in gc_points[RECORDED_FROM:] or name in (
        CrashPoint.STAGING_REMOVED.value,
        CrashPoint.LOCK_RELEASED.value,
    )
    listed = check_retained(root, expected)
    assert listed == ([b, d] if recorded else [a, b, c, d])
    assert logged(root) == ([a, c] if recorded else [])

    with Warehouse(root, create=False) as wh:
        if finisher == "gc":
            wh.gc(**POLICY)  # type: ignore[call-overload]
        else:
            wh.doctor(repair=True)
            assert wh.doctor().ok
    check_retained(root, expected)
    if finisher == "gc" or recorded:
        assert vault_manifests(root) == expected.manifests
        assert vault_files(root) == expected.files
        assert logged(root) == [a, c], "each expiry is logged once"
    else:
        assert vault_manifests(root) == {a, b, c, d}, "doctor expires nothing by itself"
    assert not (root / ".lock").exists()
    assert not list(root.rglob("*.tmp"))
