"""gc on real vaults: what expires, what is deleted, what is never touched, and what it says."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from _helpers.records import expire_by_hand
from wrdsvault import (
    DiskSpaceError,
    GcPlan,
    GcReport,
    RetentionPolicy,
    SnapshotNotFoundError,
    VaultFormatError,
    VaultSettings,
    Warehouse,
)
from wrdsvault._storage.expiry import EXPIRY_LOG
from wrdsvault.sources import SampleSource
from wrdsvault.testing import set_disk_usage

YEARS = range(2019, 2022)


def source(seed: int, vintage: int = 1) -> SampleSource:
    """A tiny crsp.msf source; another seed gives other data in every year."""
    return SampleSource(seed=seed, years=YEARS, n_securities=20, vintage=vintage)


def commit(wh: Warehouse, seed: int, vintage: int = 1) -> str:
    """Sync crsp.msf from ``source(seed, vintage)``; return the new snapshot id."""
    wh.source = source(seed, vintage)
    report = wh.sync("crsp.msf")
    assert report.committed and report.snapshot_id is not None
    return report.snapshot_id


def state(wh: Warehouse, sid: str) -> tuple[str, list[tuple[Any, ...]]]:
    """The fingerprint and per-year answers of ``sid``, every file re-hashed on open."""
    with wh.snapshot(sid, verify=True) as snap:
        df = snap.query(
            "select year(date) as y, count(*) as n, round(sum(ret), 9) as s "
            "from crsp.msf group by y order by y"
        )
        return snap.fingerprint, [tuple(r) for r in df.itertuples(index=False)]


def data_files(root: Path) -> set[str]:
    """Every data file in the vault, relative to it."""
    return {str(p.relative_to(root)) for p in (root / "data").rglob("*.parquet")}


def files_of(wh: Warehouse, sid: str) -> set[str]:
    """The data files the manifest of ``sid`` names."""
    return {p.path for p in wh._catalog.manifest(sid).files()}


@pytest.fixture
def history(tmp_path: Path) -> tuple[Warehouse, list[str]]:
    """A vault with four snapshots: A (seed 0), B (vintage 2 of A: shares most years),
    C (seed 1: no file shared), D (seed 0 again: exactly A's files)."""
    wh = Warehouse(tmp_path / "vault")
    ids = [commit(wh, 0), commit(wh, 0, 2), commit(wh, 1), commit(wh, 0)]
    return wh, ids


def test_gc_without_a_policy_expires_nothing_and_removes_only_orphans(
    history: tuple[Warehouse, list[str]],
) -> None:
    """No policy: every snapshot stays; only a data file no manifest names is deleted."""
    wh, ids = history
    orphan = wh.root / "data" / "crsp" / "msf" / "2020" / ("0" * 16 + ".parquet")
    orphan.write_bytes(b"left by a crashed writer")
    before = {sid: state(wh, sid) for sid in ids}
    report = wh.gc()
    assert isinstance(report, GcReport)
    assert report.expired == ()
    assert report.deleted_files == (str(orphan.relative_to(wh.root)),)
    assert report.freed_bytes == len(b"left by a crashed writer")
    assert [s.snapshot_id for s in wh.snapshots()] == ids
    assert {sid: state(wh, sid) for sid in ids} == before
    assert not (wh.root / EXPIRY_LOG).exists(), "nothing expired, nothing logged"


def test_gc_keeps_files_shared_with_a_kept_snapshot(history: tuple[Warehouse, list[str]]) -> None:
    """keep_last=1 expires A, B, C; A's files live on in D, B's and C's own files go."""
    wh, (a, b, c, d) = history
    expected_d = state(wh, d)
    gone = (files_of(wh, b) | files_of(wh, c)) - files_of(wh, d)
    assert files_of(wh, a) == files_of(wh, d) and gone
    plan = wh.gc(keep_last=1, dry_run=True)
    report = wh.gc(keep_last=1)
    assert report.expired == plan.expired == (a, b, c)
    assert set(report.deleted_files) == set(plan.files) == gone
    assert report.deleted_manifests == (a, b, c)
    assert data_files(wh.root) == files_of(wh, d)
    assert [s.snapshot_id for s in wh.snapshots()] == [d]
    assert state(wh, d) == expected_d
    assert wh.verify(all_snapshots=True).ok
    assert wh.doctor().ok


def test_dry_run_changes_nothing_and_explains_every_kept_snapshot(
    history: tuple[Warehouse, list[str]],
) -> None:
    """The plan names why each kept snapshot is kept; the vault is untouched."""
    wh, (a, b, c, d) = history
    wh.tag("paper", b)
    files = data_files(wh.root)
    plan = wh.gc(keep_last=1, dry_run=True)
    assert isinstance(plan, GcPlan)
    assert {k.snapshot_id: k.reasons for k in plan.kept} == {
        b: ("tag paper",),
        d: ("latest", "keep_last"),
    }
    assert plan.expired == (a, c)
    assert plan.freed_bytes > 0
    text = plan.summary()
    assert f"keep    {b}  tag paper" in text and f"expire  {c}" in text
    assert "file(s) to delete" in text
    assert data_files(wh.root) == files
    assert [s.snapshot_id for s in wh.snapshots()] == [a, b, c, d]
    assert not (wh.root / EXPIRY_LOG).exists()


def test_expired_snapshot_is_logged_and_named_as_expired(
    history: tuple[Warehouse, list[str]],
) -> None:
    """The expiry log keeps id, commit time, fingerprint, policy and time; opening an expired
    snapshot (by id or by an as-of date on which it was current) says gc expired it."""
    wh, (a, b, _c, _d) = history
    fingerprint_b = wh.snapshot(b).fingerprint
    committed_b = wh.snapshot(b).committed_at
    wh.gc(keep_last=2)
    records = {e.snapshot_id: e for e in wh.expired()}
    assert list(records) == [a, b]
    assert records[b].fingerprint == fingerprint_b
    assert records[b].committed_at == committed_b
    assert records[b].policy == {"keep_last": 2}
    lines = (wh.root / EXPIRY_LOG).read_text().splitlines()
    assert [json.loads(line)["snapshot_id"] for line in lines] == [a, b]
    with pytest.raises(SnapshotNotFoundError) as err:
        wh.snapshot(b)
    assert err.value.expired_id == b
    assert err.value.expired_at is not None
    assert "was expired by gc at" in str(err.value) and "backup" in str(err.value)
    assert "--keep-last 2" in str(err.value)
    # An as-of instant at which B was the latest names B, not the older A or the newer C.
    with pytest.raises(SnapshotNotFoundError, match=f"snapshot {b} .* was expired by gc"):
        wh.snapshot(committed_b.strftime("%Y-%m-%dT%H:%M:%S.%fZ"))


def test_tag_keeps_a_snapshot_until_untagged(history: tuple[Warehouse, list[str]]) -> None:
    """A tagged snapshot survives every gc; after untag the next gc expires it."""
    wh, (a, b, c, _d) = history
    wh.tag("paper", a)
    expected = state(wh, a)
    assert wh.gc(keep_last=1).expired == (b, c)
    assert state(wh, a) == expected
    assert wh.untag("paper") == a
    assert wh.tags() == {}
    assert wh.gc(keep_last=1).expired == (a,)
    with pytest.raises(SnapshotNotFoundError, match="unknown"):
        wh.untag("unknown")


def test_retained_snapshot_whose_parent_expired_is_normal(
    history: tuple[Warehouse, list[str]],
) -> None:
    """After its parent expired, the latest snapshot is committed, writable and healthy."""
    wh, (_a, _b, c, d) = history
    wh.gc(keep_last=1)
    assert wh._catalog.manifest(d).parent == c
    assert wh._catalog.beyond_head().behind is False
    e = commit(wh, 2)  # recovery and require_writable run before this sync
    assert [s.snapshot_id for s in wh.snapshots()] == [d, e]
    assert wh.doctor().ok
    assert wh.verify(all_snapshots=True).ok


def test_interrupted_gc_is_finished_by_doctor_repair(
    history: tuple[Warehouse, list[str]],
) -> None:
    """Expiry recorded but nothing deleted: doctor lists the manifest and files as garbage,
    ``--repair`` removes them; retained snapshots answer as before."""
    wh, (a, b, c, d) = history
    expected = state(wh, d)
    expire_by_hand(wh.root, c)
    assert [s.snapshot_id for s in wh.snapshots()] == [a, b, d]
    found = {(f.kind, f.path) for f in wh.doctor().findings}
    assert ("expired-manifest", f"snapshots/{c}.json") in found
    only_c = files_of(wh, c) - files_of(wh, a) - files_of(wh, b) - files_of(wh, d)
    assert {p for kind, p in found if kind == "orphan-file"} == only_c
    report = wh.doctor(repair=True)
    assert f"snapshots/{c}.json" in report.repaired
    assert not (wh.root / "snapshots" / f"{c}.json").exists()
    assert data_files(wh.root) == files_of(wh, a) | files_of(wh, b) | files_of(wh, d)
    assert state(wh, d) == expected
    assert wh.doctor().ok


def test_torn_last_line_of_the_expiry_log_is_ignored_and_cut(
    history: tuple[Warehouse, list[str]],
) -> None:
    """An append cut short by a power loss (no newline) is no record; the next gc appends
    whole lines after cutting it off."""
    wh, (a, b, c, d) = history
    log = wh.root / EXPIRY_LOG
    log.write_bytes(b'{"snapshot_id": "' + c.encode())  # never completed
    assert [s.snapshot_id for s in wh.snapshots()] == [a, b, c, d]
    assert wh.doctor().ok
    wh.gc(keep_last=3)
    lines = log.read_bytes().split(b"\n")
    assert lines[-1] == b""
    assert [json.loads(x)["snapshot_id"] for x in lines[:-1]] == [a]
    assert [s.snapshot_id for s in wh.snapshots()] == [b, c, d]


def test_damaged_line_of_the_expiry_log_is_reported_and_errs_on_keeping(
    history: tuple[Warehouse, list[str]],
) -> None:
    """A damaged middle line is skipped (its snapshot looks committed, so nothing of it is
    deleted) and doctor reports it."""
    wh, (_a, b, c, d) = history
    wh.gc(keep_last=3)
    log = wh.root / EXPIRY_LOG
    log.write_bytes(b"not json\n" + log.read_bytes())
    kinds = [f.kind for f in wh.doctor().findings]
    assert kinds == ["damaged-expiry-log"]
    assert [s.snapshot_id for s in wh.snapshots()] == [b, c, d]


def test_head_naming_an_expired_snapshot_is_damage_not_a_leftover(
    history: tuple[Warehouse, list[str]],
) -> None:
    """HEAD moved back onto an expired snapshot whose manifest is still on disk: reads say so,
    and recovery never takes the one manifest after it for a crashed writer's leftover."""
    wh, (_a, _b, c, d) = history
    expire_by_hand(wh.root, c)
    (wh.root / "HEAD").write_text(c + "\n")
    with pytest.raises(VaultFormatError, match="gc expired"):
        wh.snapshots()
    assert wh._catalog.beyond_head().leftover is None
    with pytest.raises(VaultFormatError):
        commit(wh, 3)  # recovery ran first
    assert (wh.root / "snapshots" / f"{d}.json").exists()
    assert "head" in " ".join(f.kind for f in wh.doctor().findings)


def test_stored_policy_drives_gc_status_and_the_disk_guard(tmp_path: Path) -> None:
    """The policy in the vault's settings is gc's default; status and a full disk's error
    name what it would free."""
    settings = VaultSettings(retention={"keep_last": 1})
    full: list[tuple[int, int]] = [(10**12, 9 * 10**11)]
    wh = Warehouse(tmp_path / "vault", settings=settings)
    set_disk_usage(wh, lambda _p: full[0])
    ids = [commit(wh, 0), commit(wh, 1)]
    only_first = files_of(wh, ids[0]) - files_of(wh, ids[1])
    freed = sum(p.size_bytes for p in wh._catalog.manifest(ids[0]).files() if p.path in only_first)
    assert wh.status().reclaimable_bytes == freed > 0
    full[0] = (10**12, 10**10)  # 99 % used
    wh.source = source(2)
    with pytest.raises(DiskSpaceError) as err:
        wh.sync("crsp.msf")
    assert "wrdsvault gc --dry-run" in str(err.value)
    assert f"would free {freed:,} bytes" in str(err.value)
    full[0] = (10**12, 9 * 10**11)
    report = wh.gc()
    assert report.policy == RetentionPolicy(keep_last=1)
    assert report.expired == (ids[0],)
    assert wh.status().reclaimable_bytes == 0
    assert wh.status().expired_count == 1


def test_disk_warning_without_a_stored_policy_names_the_dry_run(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """At the warning watermark the log says how to see what a policy would free."""
    wh = Warehouse(tmp_path / "vault")
    set_disk_usage(wh, lambda _p: (10**12, 15 * 10**10))
    commit(wh, 0)
    assert "wrdsvault gc --dry-run --keep-last 10" in caplog.text


def test_gc_refuses_bad_arguments(history: tuple[Warehouse, list[str]]) -> None:
    """Bad rule values are InvalidValueError; mixing policy= with keep_* is a TypeError."""
    wh, _ = history
    with pytest.raises(ValueError, match="keep_last"):
        wh.gc(keep_last=0)
    with pytest.raises(TypeError):
        wh.gc(keep_last=1, policy=RetentionPolicy(keep_daily=1))
    bad: Callable[..., object] = wh.gc
    with pytest.raises(TypeError):
        bad(policy={"keep_last": 1})


def test_reader_checks_the_expiry_after_its_lease(history: tuple[Warehouse, list[str]]) -> None:
    """A closed snapshot queried again takes a new lease, then finds that gc expired it
    meanwhile: it fails with the expired-snapshot error and leaves no lease behind."""
    wh, (a, _b, _c, _d) = history
    snap = wh.snapshot(a)
    snap.close()
    expire_by_hand(wh.root, a)
    with pytest.raises(SnapshotNotFoundError, match=f"snapshot {a} was expired by gc"):
        snap.query("select count(*) from crsp.msf")
    leases = wh.root / "leases"
    left = [p.name for p in leases.iterdir() if p.name.startswith(a)] if leases.is_dir() else []
    assert left == [], "the lease taken for the check was given up"
