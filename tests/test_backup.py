"""Backups (`Warehouse.backup`) and repair from a backup (`Warehouse.repair`), on real vaults.

Crash safety (SIGKILL at every backup step, a destination that fills up, a writer committing
during a backup) is proven with real processes in tests/crash/test_backup_points.py.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from wrdsvault import (
    BackupError,
    BackupReport,
    RepairReport,
    VaultFormatError,
    Warehouse,
)
from wrdsvault._storage.catalog import Catalog, find_garbage
from wrdsvault._storage.layout import Layout
from wrdsvault.cli import main
from wrdsvault.sources import SampleSource


def _data_files(root: Path) -> list[Path]:
    return sorted((root / "data").rglob("*.parquet"))


def _manifest_bytes(root: Path) -> dict[str, bytes]:
    return {p.stem: p.read_bytes() for p in sorted((root / "snapshots").glob("*.json"))}


@pytest.fixture
def two_snapshots(vault: Warehouse, make_source: Callable[..., SampleSource]) -> Warehouse:
    """The vault with a vintage-1 snapshot tagged ``paper`` and a vintage-2 one on top."""
    vault.sync(["crsp.msf", "ff.factors_monthly"])
    vault.tag("paper")
    vault.source = make_source(2)
    vault.sync(["crsp.msf", "ff.factors_monthly"])
    return vault


def test_backup_is_a_vault_with_every_snapshot_and_tag(two_snapshots: Warehouse, tmp_path: Path):
    """A backup holds the source's snapshots byte for byte, its tags, and verifies clean."""
    vault = two_snapshots
    rep = vault.backup(tmp_path / "backup")
    assert isinstance(rep, BackupReport)
    ids = [s.snapshot_id for s in vault.snapshots()]
    assert list(rep.snapshots) == ids and list(rep.new_snapshots) == ids
    assert rep.copied_files == len(_data_files(vault.root)) and rep.skipped_files == 0
    assert rep.copied_bytes == sum(p.stat().st_size for p in _data_files(vault.root))
    assert rep.tags == ("paper",) and rep.head == ids[-1]
    with Warehouse(tmp_path / "backup", create=False) as b:
        assert [s.snapshot_id for s in b.snapshots()] == ids
        assert b.tags() == vault.tags()
        assert b.verify(all_snapshots=True).ok
        assert _manifest_bytes(b.root) == _manifest_bytes(vault.root)
        q = "select count(*), sum(ret) from crsp.msf"
        assert b.snapshot("paper").query(q).equals(vault.snapshot("paper").query(q))
        b.tag("restore-drill", "paper")  # the backup is taggable like any vault
    assert not list((tmp_path / "backup" / "leases").glob("*.json"))
    assert not list((vault.root / "leases").glob("*.json")), "the backup's leases are released"


def test_backup_is_incremental_by_content_address(
    vault: Warehouse, make_source: Callable[..., SampleSource], tmp_path: Path
):
    """The second backup copies only the files the new snapshot added, plus its manifest."""
    vault.sync("crsp.msf")
    vault.backup(tmp_path / "b")
    before = set(_data_files(vault.root))
    vault.source = make_source(2)
    vault.sync("crsp.msf")
    added = set(_data_files(vault.root)) - before
    assert added
    rep = vault.backup(tmp_path / "b")
    assert rep.copied_files == len(added)
    assert rep.copied_bytes == sum(p.stat().st_size for p in added)
    assert rep.skipped_files == len(_data_files(vault.root)) - len(added)
    assert len(rep.new_snapshots) == 1
    again = vault.backup(tmp_path / "b")
    assert (again.copied_files, again.new_snapshots, again.tags) == (0, (), ())


def test_backup_of_a_backup(two_snapshots: Warehouse, tmp_path: Path):
    """A backup can itself be backed up; the second copy equals the vault."""
    two_snapshots.backup(tmp_path / "b1")
    with Warehouse(tmp_path / "b1", create=False) as b1:
        rep = b1.backup(tmp_path / "b2")
    assert rep.snapshots == tuple(s.snapshot_id for s in two_snapshots.snapshots())
    with Warehouse(tmp_path / "b2", create=False) as b2:
        assert b2.verify(all_snapshots=True).ok
        assert b2.tags() == two_snapshots.tags()
    assert _manifest_bytes(tmp_path / "b2") == _manifest_bytes(two_snapshots.root)


def test_backup_keeps_snapshots_the_source_has_expired(
    vault: Warehouse, make_source: Callable[..., SampleSource], tmp_path: Path
):
    """Snapshots the source's gc expired stay in the backup, even ones the source expired
    before the backup saw their children (proven by the source's expiry log)."""
    first = vault.sync("crsp.msf").snapshot_id
    vault.backup(tmp_path / "b")
    for vintage in (2, 1, 2):  # three more commits the backup has not seen
        vault.source = make_source(vintage)
        vault.sync("crsp.msf", full=True)
    vault.gc(keep_last=1)  # expires every snapshot but the latest, the backup's HEAD included
    (latest,) = (s.snapshot_id for s in vault.snapshots())
    rep = vault.backup(tmp_path / "b")
    assert rep.snapshots == (latest,) and rep.head == latest
    with Warehouse(tmp_path / "b", create=False) as b:
        assert [s.snapshot_id for s in b.snapshots()] == [first, latest]
        assert b.verify(all_snapshots=True).ok


def test_snapshots_the_backups_own_gc_expired_are_not_copied_again(
    vault: Warehouse, make_source: Callable[..., SampleSource], tmp_path: Path
):
    """The backup's own retention holds: a snapshot it expired is not brought back."""
    vault.sync("crsp.msf")
    vault.source = make_source(2)
    vault.sync("crsp.msf")
    vault.backup(tmp_path / "b")
    with Warehouse(tmp_path / "b", create=False) as b:
        b.gc(keep_last=1)
        kept = [s.snapshot_id for s in b.snapshots()]
    rep = vault.backup(tmp_path / "b")
    assert rep.new_snapshots == () and rep.copied_files == 0
    with Warehouse(tmp_path / "b", create=False) as b:
        assert [s.snapshot_id for s in b.snapshots()] == kept
        assert b.verify(all_snapshots=True).ok


@pytest.mark.parametrize("kind", ["file", "foreign-folder", "vault-itself", "inside-vault"])
def test_bad_destinations_are_refused_before_anything_is_written(
    vault: Warehouse, tmp_path: Path, kind: str
):
    """A file, a non-vault folder with content, the vault or a folder in it: a clear error."""
    vault.sync("crsp.msf")
    if kind == "file":
        dest = tmp_path / "a-file"
        dest.write_text("x")
    elif kind == "foreign-folder":
        dest = tmp_path / "photos"
        dest.mkdir()
        (dest / "cat.jpg").write_text("meow")
    elif kind == "vault-itself":
        dest = vault.root
    else:
        dest = vault.root / "data" / "backup"
    listing = sorted(p.name for p in vault.root.rglob("*"))
    with pytest.raises(BackupError) as info:
        vault.backup(dest)
    assert info.value.destination == str(dest)
    assert "choose" in info.value.reason.lower() or "file" in info.value.reason
    assert sorted(p.name for p in vault.root.rglob("*")) == listing
    if kind == "foreign-folder":
        assert sorted(p.name for p in dest.iterdir()) == ["cat.jpg"]


def test_a_symlink_inside_the_destination_is_refused(vault: Warehouse, tmp_path: Path):
    """A symlinked folder where the backup writes is refused, and nothing is written through it."""
    vault.sync("crsp.msf")
    vault.backup(tmp_path / "b")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    data = tmp_path / "b" / "data" / "crsp" / "msf"
    first_year = sorted(data.iterdir())[0]
    for f in first_year.iterdir():
        f.unlink()
    first_year.rmdir()
    first_year.symlink_to(elsewhere)
    with pytest.raises(BackupError, match="symlink"):
        vault.backup(tmp_path / "b")
    assert list(elsewhere.iterdir()) == []
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "vault.json").symlink_to(tmp_path / "b" / "vault.json")
    with pytest.raises(BackupError, match="symlink"):
        vault.backup(tmp_path / "c")


def test_backup_of_another_vault_is_refused(
    tmp_path: Path, make_source: Callable[..., SampleSource]
):
    """A destination holding another vault's history (diverged or newer) is refused clearly."""
    a = Warehouse(tmp_path / "a", source=make_source(1))
    b = Warehouse(tmp_path / "b", source=make_source(1))
    a.sync("crsp.msf")
    b.sync("crsp.msf")
    a.backup(tmp_path / "backup")
    head_before = (tmp_path / "backup" / "HEAD").read_bytes()
    with pytest.raises(BackupError, match="another vault"):
        b.backup(tmp_path / "backup")
    assert (tmp_path / "backup" / "HEAD").read_bytes() == head_before
    empty = Warehouse(tmp_path / "empty", create=True)
    with pytest.raises(BackupError, match="newer than this vault"):
        empty.backup(tmp_path / "backup")


def test_leftovers_of_an_interrupted_backup_are_committed_by_the_next(
    two_snapshots: Warehouse, tmp_path: Path
):
    """Manifests and tags an interrupted backup wrote past HEAD are taken as its own next time."""
    vault = two_snapshots
    vault.backup(tmp_path / "b")
    ids = [s.snapshot_id for s in vault.snapshots()]
    # What a backup killed just before its HEAD write leaves: HEAD at the first snapshot,
    # every manifest and tag present.
    (tmp_path / "b" / "HEAD").write_text(ids[0] + "\n")
    with Warehouse(tmp_path / "b", create=False) as b:
        assert [s.snapshot_id for s in b.snapshots()] == ids[:1]
    rep = vault.backup(tmp_path / "b")
    assert rep.head == ids[-1] and rep.copied_files == 0
    with Warehouse(tmp_path / "b", create=False) as b:
        assert [s.snapshot_id for s in b.snapshots()] == ids
        assert b.doctor().ok


def test_damaged_file_in_the_backup_is_replaced_with_verify(vault: Warehouse, tmp_path: Path):
    """``verify=True`` re-hashes the backup and copies a damaged file again; a plain backup
    only checks names and sizes."""
    vault.sync("crsp.msf")
    vault.backup(tmp_path / "b")
    victim = _data_files(tmp_path / "b")[0]
    raw = bytearray(victim.read_bytes())
    raw[100] ^= 0xFF
    victim.write_bytes(bytes(raw))
    plain = vault.backup(tmp_path / "b")
    assert plain.copied_files == 0
    rep = vault.backup(tmp_path / "b", verify=True)
    assert (rep.copied_files, rep.replaced_files) == (1, 1)
    assert rep.verified_files == len(_data_files(vault.root))
    with Warehouse(tmp_path / "b", create=False) as b:
        assert b.verify(all_snapshots=True).ok


def test_a_damaged_source_file_is_not_backed_up(vault: Warehouse, tmp_path: Path):
    """A vault file that fails its manifest stops the backup before any commit, naming it."""
    vault.sync("crsp.msf")
    victim = _data_files(vault.root)[-1]
    raw = bytearray(victim.read_bytes())
    raw[50] ^= 0xFF
    victim.write_bytes(bytes(raw))
    with pytest.raises(BackupError, match="do not match their manifests") as info:
        vault.backup(tmp_path / "b")
    assert victim.name in info.value.reason
    assert not (tmp_path / "b" / "HEAD").exists()
    with Warehouse(tmp_path / "b", create=False) as b:
        assert b.snapshots() == []


def test_repair_restores_damaged_and_missing_files(two_snapshots: Warehouse, tmp_path: Path):
    """repair puts back altered, truncated and deleted files by hash, never writing into them."""
    vault = two_snapshots
    vault.backup(tmp_path / "b")
    files = _data_files(vault.root)
    altered, truncated, deleted = files[0], files[1], files[2]
    raw = bytearray(altered.read_bytes())
    raw[200] ^= 0x01
    altered.write_bytes(bytes(raw))
    altered_ino = altered.stat().st_ino
    truncated.write_bytes(truncated.read_bytes()[:10])
    deleted.unlink()
    assert len(vault.verify(all_snapshots=True).faults) == 3
    rep = vault.repair(tmp_path / "b")
    assert isinstance(rep, RepairReport) and rep.ok
    expected = {str(p.relative_to(vault.root)) for p in (altered, truncated, deleted)}
    assert set(rep.restored) == expected
    assert altered.stat().st_ino != altered_ino, "replaced by a rename, not written in place"
    assert vault.verify(all_snapshots=True).ok
    assert not list((vault.root / "tmp").glob("tx-*"))


def test_repair_reports_what_the_backup_lacks(
    vault: Warehouse, make_source: Callable[..., SampleSource], tmp_path: Path
):
    """A file the backup does not have (or has damaged) is reported, not invented."""
    vault.sync("crsp.msf")
    vault.backup(tmp_path / "b")
    vault.source = make_source(2)
    vault.sync("crsp.msf")
    new_files = set(_data_files(vault.root)) - {
        vault.root / p.relative_to(tmp_path / "b") for p in _data_files(tmp_path / "b")
    }
    lost = sorted(new_files)[0]
    lost.unlink()
    rep = vault.repair(tmp_path / "b")
    assert not rep.ok and rep.restored == ()
    assert [f.path for f in rep.not_restored] == [str(lost.relative_to(vault.root))]
    assert "the backup does not have this file" in rep.not_restored[0].detail


def test_repair_restores_a_missing_manifest(two_snapshots: Warehouse, tmp_path: Path):
    """A deleted or damaged manifest of a committed snapshot comes back from the backup."""
    vault = two_snapshots
    vault.backup(tmp_path / "b")
    first, second = (s.snapshot_id for s in vault.snapshots())
    original = (vault.root / "snapshots" / f"{first}.json").read_bytes()
    (vault.root / "snapshots" / f"{first}.json").unlink()
    (vault.root / "snapshots" / f"{second}.json").write_bytes(b"{garbage")
    with pytest.raises(VaultFormatError):
        Warehouse(vault.root).snapshots()
    rep = Warehouse(vault.root).repair(tmp_path / "b")
    assert set(rep.restored) == {f"snapshots/{first}.json", f"snapshots/{second}.json"}
    assert (vault.root / "snapshots" / f"{first}.json").read_bytes() == original
    with Warehouse(vault.root) as again:
        assert [s.snapshot_id for s in again.snapshots()] == [first, second]
        assert again.verify(all_snapshots=True).ok


def test_repair_does_not_bring_back_what_gc_expired(
    vault: Warehouse, make_source: Callable[..., SampleSource], tmp_path: Path
):
    """A manifest gc removed on purpose (the expiry log names it) is not restored."""
    vault.sync("crsp.msf")
    vault.source = make_source(2)
    vault.sync("crsp.msf")
    vault.backup(tmp_path / "b")
    vault.gc(keep_last=1)
    before = _manifest_bytes(vault.root)
    rep = vault.repair(tmp_path / "b")
    assert rep.ok and rep.restored == ()
    assert _manifest_bytes(vault.root) == before


def test_repair_refuses_a_non_backup(vault: Warehouse, tmp_path: Path):
    """repair from the vault itself or from a folder that is not a vault is a clear error."""
    vault.sync("crsp.msf")
    with pytest.raises(BackupError, match="this vault itself"):
        vault.repair(vault.root)
    with pytest.raises(BackupError, match="not a backup vault"):
        vault.repair(tmp_path / "nothing-here")


def test_cli_backup_and_repair(
    two_snapshots: Warehouse, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    """``wrdsvault backup`` and ``repair --from`` print JSON reports and exit 0 when all is well,
    1 when repair leaves a fault or the destination is refused."""
    vault = str(two_snapshots.root)
    dest = str(tmp_path / "b")
    assert main(["backup", dest, "--vault", vault, "--json", "--verify"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["ok"] and out["copied_files"] == len(_data_files(two_snapshots.root))
    assert main(["backup", dest, "--vault", vault]) == 0
    assert "skipped" in capsys.readouterr().out
    victim = _data_files(two_snapshots.root)[0]
    victim.unlink()
    assert main(["repair", "--from", dest, "--vault", vault, "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["restored"] == [str(victim.relative_to(two_snapshots.root))]
    for f in _data_files(Path(dest)):
        f.unlink()
    victim.unlink()
    assert main(["repair", "--from", dest, "--vault", vault]) == 1
    assert "not restored" in capsys.readouterr().out
    assert main(["backup", vault, "--vault", vault]) == 1
    assert "inside it" in capsys.readouterr().err


def test_catalog_sees_no_garbage_after_a_backup(two_snapshots: Warehouse, tmp_path: Path):
    """A finished backup leaves nothing its destination's recovery would clean."""
    two_snapshots.backup(tmp_path / "b")
    layout = Layout(Path(os.path.realpath(tmp_path / "b")))
    assert list(find_garbage(Catalog(layout))) == []
