"""Warehouse behaviour against real files and a real DuckDB: sync, reuse, pinning, refs, errors."""

from __future__ import annotations

import hashlib
import json
import os
import stat
from collections.abc import Callable
from pathlib import Path

import pyarrow.parquet as pq
import pytest

import wrdsvault
from _helpers.disk import entry_digests, file_paths
from _helpers.locks import leave_dead_lock
from wrdsvault._storage.lock import WriterLock
from wrdsvault.sources import SampleSource


def test_sync_commits_one_file_per_year_with_manifest_facts(
    vault: wrdsvault.Warehouse, years: range
) -> None:
    """A first sync writes one Parquet file per year and a manifest with sha256, bytes, rows."""
    report = vault.sync("crsp.msf")
    assert report.committed
    assert report["crsp.msf"].status == "added"
    assert report["crsp.msf"].years_written == tuple(years)
    snap = vault.snapshot("latest")
    entry = snap.dataset("crsp.msf")
    assert [p.year for p in entry.partitions] == list(years)
    for part, path in zip(entry.partitions, snap.files("crsp.msf"), strict=True):
        raw = path.read_bytes()
        assert hashlib.sha256(raw).hexdigest() == part.sha256
        assert len(raw) == part.size_bytes
        assert pq.read_metadata(path).num_rows == part.row_count
        assert part.path == f"data/crsp/msf/{part.year}/{part.sha256[:16]}.parquet"
    assert snap.query("select count(*) as n from crsp.msf")["n"][0] == entry.row_count
    # The manifest records the schema with WRDS's declared types.
    cols = {c.name: c for c in entry.columns}
    assert cols["permno"].type == "int32"
    assert cols["permno"].source_type == "integer"
    assert cols["date"].type == "date32[day]"


def test_resync_of_unchanged_source_writes_nothing(vault: wrdsvault.Warehouse) -> None:
    """Re-syncing an unchanged source writes no file and commits no snapshot."""
    vault.sync(["crsp.msf", "ff.factors_monthly"])
    before = entry_digests(vault.root, skip_lock=True)
    report = vault.sync(["crsp.msf", "ff.factors_monthly"])
    assert not report.committed
    assert report.unchanged
    assert {d.status for d in report.datasets} == {"unchanged"}
    assert report.bytes_written == 0
    assert entry_digests(vault.root, skip_lock=True) == before
    assert len(vault.snapshots()) == 1


def test_full_resync_of_unchanged_source_reads_but_publishes_nothing(
    vault: wrdsvault.Warehouse, years: range
) -> None:
    """full=True re-reads every year; identical content publishes no file and no snapshot."""
    vault.sync("crsp.msf")
    before = file_paths(vault.root, "*.parquet")
    report = vault.sync("crsp.msf", full=True)
    assert not report.committed
    assert report["crsp.msf"].years_reused == tuple(years)
    assert file_paths(vault.root, "*.parquet") == before


def test_full_resync_keeps_a_file_whose_rows_are_the_same_in_other_bytes(
    tmp_path: Path, make_source: Callable[..., SampleSource], years: range
) -> None:
    """Read again with another codec and row-group size, each year makes other bytes from the
    same rows: the sync compares content digests and keeps the current files."""
    root = tmp_path / "v"
    with wrdsvault.Warehouse(root, source=make_source(1)) as wh:
        wh.sync("crsp.msf")
        before = {p.year: p.sha256 for p in wh.snapshot().dataset("crsp.msf").partitions}
    other = wrdsvault.VaultSettings(compression="snappy", row_group_rows=1000)
    with wrdsvault.Warehouse(root, source=make_source(1), settings=other) as wh:
        # The same rows in other bytes: what the full re-read stages differs from every file.
        report = wh.sync("crsp.msf", full=True)
        assert not report.committed
        assert report["crsp.msf"].years_reused == tuple(years)
        after = {p.year: p.sha256 for p in wh.snapshot().dataset("crsp.msf").partitions}
        assert after == before
    # The control: a new vault with these settings writes files with other bytes.
    with wrdsvault.Warehouse(tmp_path / "other", source=make_source(1), settings=other) as wh:
        wh.sync("crsp.msf")
        fresh = {p.year: p.sha256 for p in wh.snapshot().dataset("crsp.msf").partitions}
    assert set(fresh) == set(before)
    assert all(fresh[y] != before[y] for y in before)


def test_vintage_two_rewrites_only_changed_years(
    tmp_path: Path, make_source: Callable[..., SampleSource]
) -> None:
    """A WRDS update rewrites exactly the changed years; the new manifest reuses the others."""
    wh = wrdsvault.Warehouse(tmp_path / "v", source=make_source(1))
    wh.sync("crsp.msf")
    old = wh.snapshot("latest").dataset("crsp.msf")
    before = file_paths(wh.root, "*.parquet")

    wh.source = make_source(2)
    v2_parts = {p.year: p.marker for p in wh.source.partitions(wrdsvault.BUILTIN_SPECS["crsp.msf"])}
    changed = {p.year for p in old.partitions if v2_parts[p.year] != p.marker}
    assert changed, "vintage 2 must change some year"
    report = wh.sync("crsp.msf")
    new = wh.snapshot("latest").dataset("crsp.msf")

    assert report.committed
    assert set(report["crsp.msf"].years_written) == changed
    assert len(file_paths(wh.root, "*.parquet") - before) == len(changed)
    for o, n in zip(old.partitions, new.partitions, strict=True):
        assert (o.path == n.path) == (o.year not in changed)


def test_pinned_snapshot_keeps_answers_across_later_commits(
    tmp_path: Path, make_source: Callable[..., SampleSource]
) -> None:
    """A snapshot opened before a commit answers exactly as before after it."""
    wh = wrdsvault.Warehouse(tmp_path / "v", source=make_source(1))
    wh.sync("crsp.msf")
    sql = "select year(date) as y, count(*) as n, sum(ret) as s from crsp.msf group by 1 order by 1"
    pinned = wh.snapshot("latest")
    first = pinned.query(sql)
    wh.source = make_source(2)
    wh.sync("crsp.msf")
    assert pinned.query(sql).equals(first)
    assert wh.snapshot(pinned.id).query(sql).equals(first)
    assert not wh.query(sql).equals(first)


def test_sync_of_several_datasets_is_one_commit(vault: wrdsvault.Warehouse) -> None:
    """Datasets synced together land in a single new snapshot."""
    report = vault.sync(["crsp.msf", "comp.funda", "crsp.msenames"])
    snaps = vault.snapshots()
    assert len(snaps) == 1
    assert snaps[0].snapshot_id == report.snapshot_id
    assert snaps[0].datasets == ("comp.funda", "crsp.msenames", "crsp.msf")
    unpartitioned = vault.snapshot().dataset("crsp.msenames")
    assert [p.year for p in unpartitioned.partitions] == [None]
    assert unpartitioned.partitions[0].path.startswith("data/crsp/msenames/all/")


def test_later_sync_keeps_other_datasets(vault: wrdsvault.Warehouse) -> None:
    """A sync of one dataset carries every other dataset's files into the new snapshot."""
    vault.sync("crsp.msf")
    vault.sync("ff.factors_monthly")
    latest = vault.snapshot()
    assert latest.datasets == ("crsp.msf", "ff.factors_monthly")


def test_years_filter_syncs_only_those_years(vault: wrdsvault.Warehouse, years: range) -> None:
    """years= syncs only those years and keeps the files of the others."""
    vault.sync("crsp.msf", years=[2019, 2020])
    assert [p.year for p in vault.snapshot().dataset("crsp.msf").partitions] == [2019, 2020]
    vault.sync("crsp.msf", years=range(2021, 2024))
    assert [p.year for p in vault.snapshot().dataset("crsp.msf").partitions] == list(years)


def test_as_of_refs_resolve_to_the_last_commit_at_or_before(
    tmp_path: Path, make_source: Callable[..., SampleSource]
) -> None:
    """Dates and datetimes resolve as-of; tags, ids and 'latest' resolve exactly."""
    wh = wrdsvault.Warehouse(tmp_path / "v", source=make_source(1))
    first = wh.sync("crsp.msf").snapshot_id
    wh.source = make_source(2)
    second = wh.sync("crsp.msf").snapshot_id
    s1, s2 = wh.snapshots()
    assert (s1.snapshot_id, s2.snapshot_id) == (first, second)
    assert wh.snapshot(s1.committed_at.isoformat()).id == first
    assert wh.snapshot(s2.committed_at.isoformat()).id == second
    assert wh.snapshot(s1.committed_at.strftime("%Y-%m-%d")).id == second  # end of that day
    assert wh.snapshot("latest").id == second
    assert wh.snapshot(first).id == first
    wh.tag("paper-v1", first)
    assert wh.snapshot("paper-v1").id == first
    with pytest.raises(wrdsvault.SnapshotNotFoundError) as err:
        wh.snapshot("1999-12-31")
    assert first in str(err.value) or second in str(err.value)
    assert "paper-v1" in str(err.value)


def test_empty_vault_has_no_snapshot(tmp_path: Path) -> None:
    """A vault created but never synced lists nothing and explains that a sync comes first."""
    wh = wrdsvault.Warehouse(tmp_path / "v", create=True)
    assert wh.snapshots() == []
    with pytest.raises(wrdsvault.SnapshotNotFoundError, match="run sync"):
        wh.snapshot()


def test_reading_needs_no_source_but_sync_does(
    tmp_path: Path, make_source: Callable[..., SampleSource]
) -> None:
    """A Warehouse opened without a source reads every snapshot and refuses to sync."""
    wrdsvault.Warehouse(tmp_path / "v", source=make_source()).sync("ff.factors_monthly")
    reader = wrdsvault.Warehouse(tmp_path / "v", create=False)
    assert reader.query("select count(*) as n from ff.factors_monthly")["n"][0] > 0
    with pytest.raises(wrdsvault.SourceRequiredError, match="needs a data source"):
        reader.sync("crsp.msf")


@pytest.mark.parametrize(
    "name", ["CRSP.MSF", "crsp", "crsp.msf;drop", "../etc.passwd", "crsp.msf\n"]
)
def test_bad_dataset_names_are_refused_before_anything_is_written(
    vault: wrdsvault.Warehouse, name: str
) -> None:
    """A malformed dataset name raises InvalidNameError and leaves the vault untouched."""
    before = entry_digests(vault.root, skip_lock=True)
    with pytest.raises(wrdsvault.InvalidNameError):
        vault.sync(name)
    assert entry_digests(vault.root, skip_lock=True) == before


def test_unknown_dataset_lists_the_known_ones(vault: wrdsvault.Warehouse) -> None:
    """A table without a built-in spec needs date_column; the error says so."""
    with pytest.raises(wrdsvault.UnknownDatasetError, match="date_column"):
        vault.sync("crsp.nosuch")


def test_query_failures_are_wrdsvault_errors(vault: wrdsvault.Warehouse) -> None:
    """A bad column or refused statement raises a WrdsVaultError, not a DuckDB exception."""
    vault.sync("ff.factors_monthly")
    with pytest.raises(wrdsvault.QueryError, match="nosuch"):
        vault.query("select nosuch from ff.factors_monthly")
    with pytest.raises(wrdsvault.QueryRejectedError, match="DROP"):
        vault.query("drop view ff.factors_monthly")
    assert vault.query("select count(*) as n from ff.factors_monthly")["n"][0] > 0


def test_query_results_in_pandas_arrow_and_lazy_forms(vault: wrdsvault.Warehouse) -> None:
    """query -> DataFrame, arrow -> Table, sql -> lazy result; parameters bind as values."""
    vault.sync("crsp.msf")
    snap = vault.snapshot()
    permno = int(snap.query("select min(permno) as p from crsp.msf")["p"][0])
    sql = "select permno, ret from crsp.msf where permno = $1 order by date"
    df = snap.query(sql, [permno])
    table = snap.arrow(sql, [permno])
    lazy = snap.sql(sql, [permno])
    assert len(df) == table.num_rows == len(lazy.df()) == len(lazy.fetchall()) > 0
    assert set(df["permno"]) == {permno}
    assert not hasattr(lazy, "query")


def test_missing_or_resized_file_raises_integrity_error(vault: wrdsvault.Warehouse) -> None:
    """The first query naming a dataset (or files()) checks that each of its pinned files exists
    with its recorded size; opening the snapshot does not look, and other datasets still work."""
    vault.sync(["crsp.msf", "ff.factors_monthly"])
    files = vault.snapshot().files("crsp.msf")
    with files[0].open("ab") as f:
        f.write(b"x")
    snap = vault.snapshot()
    assert snap.arrow("select count(*) as n from ff.factors_monthly")["n"][0].as_py() > 0
    with pytest.raises(wrdsvault.IntegrityError, match="size"):
        snap.query("select count(*) from crsp.msf")
    with pytest.raises(wrdsvault.IntegrityError, match="size"):
        snap.sql("select * from crsp.msf").arrow()  # still refused: never half-built
    files[0].unlink()
    with pytest.raises(wrdsvault.IntegrityError, match="missing"):
        vault.snapshot().files("crsp.msf")
    with pytest.raises(wrdsvault.IntegrityError, match="missing"):
        vault.snapshot().query("select * from read_parquet($1)", [str(files[1])])


def test_verify_true_detects_a_flipped_byte(vault: wrdsvault.Warehouse) -> None:
    """snapshot(verify=True) re-hashes files and names one whose content changed."""
    vault.sync("crsp.msf")
    path = vault.snapshot().files("crsp.msf")[1]
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    path.write_bytes(bytes(raw))
    vault.snapshot()  # size is unchanged: the cheap check passes
    with pytest.raises(wrdsvault.IntegrityError, match="sha256"):
        vault.snapshot(verify=True)


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_licensed_data_is_private_by_default(
    tmp_path: Path, umask: int, make_source: Callable[..., SampleSource]
) -> None:
    """Files are 0600 and folders 0700 by default, whatever the umask."""
    old = os.umask(umask)
    try:
        wh = wrdsvault.Warehouse(tmp_path / "v", source=make_source())
        wh.sync("ff.factors_monthly")
    finally:
        os.umask(old)
    for p in [wh.root, *wh.root.rglob("*")]:
        mode = stat.S_IMODE(p.stat().st_mode)
        assert mode == (0o700 if p.is_dir() else 0o600), p


def test_group_access_setting_shares_with_the_group(
    tmp_path: Path, make_source: Callable[..., SampleSource]
) -> None:
    """group_access=True makes files 0640 and folders 0750."""
    settings = wrdsvault.VaultSettings(group_access=True)
    wh = wrdsvault.Warehouse(tmp_path / "v", source=make_source(), settings=settings)
    wh.sync("ff.factors_monthly")
    for p in wh.root.rglob("*"):
        mode = stat.S_IMODE(p.stat().st_mode)
        assert mode == (0o750 if p.is_dir() else 0o640), p


def test_a_non_empty_folder_is_not_turned_into_a_vault(tmp_path: Path) -> None:
    """Opening a folder with other files and no vault.json refuses, writing nothing."""
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(wrdsvault.NotAVaultError, match=r"has content but no vault\.json"):
        wrdsvault.Warehouse(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


def test_a_vault_from_a_newer_wrdsvault_is_refused(tmp_path: Path) -> None:
    """A vault.json with a newer format version raises VaultFormatError asking to upgrade."""
    wrdsvault.Warehouse(tmp_path / "v", create=True)
    vj = tmp_path / "v" / "vault.json"
    obj = json.loads(vj.read_text())
    obj["format_version"] = wrdsvault.FORMAT_VERSION + 1
    vj.write_text(json.dumps(obj))
    with pytest.raises(wrdsvault.VaultFormatError, match="upgrade wrdsvault"):
        wrdsvault.Warehouse(tmp_path / "v")


def test_altered_manifest_is_detected(vault: wrdsvault.Warehouse) -> None:
    """Editing a manifest's content breaks its fingerprint and the snapshot refuses to open."""
    vault.sync("ff.factors_monthly")
    sid = vault.snapshot().id
    path = vault.root / "snapshots" / f"{sid}.json"
    path.write_bytes(path.read_bytes().replace(b'"row_count":', b'"row_count":1', 1))
    fresh = wrdsvault.Warehouse(vault.root)
    with pytest.raises(wrdsvault.VaultFormatError, match="fingerprint"):
        fresh.snapshot()


def test_second_writer_gets_lock_held_error_naming_the_holder(vault: wrdsvault.Warehouse) -> None:
    """While a writer holds the lock, another sync fails with LockHeldError naming the holder."""
    holder = WriterLock(vault.root / ".lock", operation="test holder")
    holder.acquire()
    try:
        with pytest.raises(wrdsvault.LockHeldError, match=f"pid={os.getpid()}") as err:
            vault.sync("ff.factors_monthly", wait=0.2)
        assert err.value.holder["operation"] == "test holder"
        assert vault.status().lock_holder is not None
    finally:
        holder.release()
    assert vault.sync("ff.factors_monthly").committed
    assert vault.status().lock_holder is None


def test_lock_of_a_dead_process_is_broken(vault: wrdsvault.Warehouse) -> None:
    """A lock whose owner process is gone (same host) does not block the next writer."""
    leave_dead_lock(vault.root / ".lock")  # the child exited without releasing
    assert vault.sync("ff.factors_monthly").committed
    assert not (vault.root / ".lock").exists()


def test_env_overrides_vault_json(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """WRDSVAULT_* variables override vault.json; invalid values raise InvalidValueError."""
    monkeypatch.setenv("WRDSVAULT_LOCK_TIMEOUT_S", "7.5")
    assert wrdsvault.Warehouse(tmp_path / "v", create=True).settings.lock_timeout_s == 7.5
    monkeypatch.setenv("WRDSVAULT_ROW_GROUP_ROWS", "-3")
    with pytest.raises(wrdsvault.InvalidValueError, match="WRDSVAULT_ROW_GROUP_ROWS") as err:
        wrdsvault.Warehouse(tmp_path / "v")
    assert (err.value.name, err.value.value) == ("WRDSVAULT_ROW_GROUP_ROWS", "-3")


def test_staging_leftovers_are_cleaned_by_the_next_writer(vault: wrdsvault.Warehouse) -> None:
    """Garbage in tmp/ and stray temp files are removed when the next writer starts."""
    vault.sync("ff.factors_monthly")
    (vault.root / "tmp" / "tx-dead").mkdir()
    (vault.root / "tmp" / "tx-dead" / "x.parquet").write_bytes(b"partial")
    (vault.root / ".HEAD.abc.tmp").write_bytes(b"partial")
    vault.sync("crsp.msenames")
    assert list((vault.root / "tmp").iterdir()) == []
    assert not (vault.root / ".HEAD.abc.tmp").exists()


def test_tags_are_not_moved_silently(vault: wrdsvault.Warehouse) -> None:
    """Re-pointing an existing tag needs force=True."""
    first = vault.sync("ff.factors_monthly").snapshot_id
    vault.tag("paper", first)
    second = vault.sync("crsp.msenames").snapshot_id
    with pytest.raises(wrdsvault.WrdsVaultError, match="force=True"):
        vault.tag("paper", second)
    assert vault.tag("paper", second, force=True) == second
    assert vault.tags() == {"paper": second}


def test_snapshot_fingerprint_depends_only_on_data(
    tmp_path: Path, make_source: Callable[..., SampleSource]
) -> None:
    """Two vaults synced from the same data have equal fingerprints and different ids."""
    a = wrdsvault.Warehouse(tmp_path / "a", source=make_source())
    b = wrdsvault.Warehouse(tmp_path / "b", source=make_source())
    a.sync(["crsp.msf", "ff.factors_monthly"])
    b.sync("ff.factors_monthly")
    b.sync("crsp.msf")
    assert a.snapshot().fingerprint == b.snapshot().fingerprint
    assert a.snapshot().id != b.snapshot().id
