"""Snapshots hold reader leases: taken on open, released on close, kept by Warehouse.query.

Readers are real processes (and, for the access tests, real processes without write access: a
group member without capabilities, a read-only bind mount); leases are judged with the same
`held_snapshot_ids` gc uses.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from _helpers.access import group_member, read_only_mount
from _helpers.leases import held_ids
from wrdsvault import VaultSettings, Warehouse
from wrdsvault.errors import IntegrityError, InvalidValueError
from wrdsvault.sources import SampleSource

SQL = "select count(*) as n, sum(ret) as s from crsp.msf"


def _lease_files(wh: Warehouse) -> list[str]:
    folder = wh.root / "leases"
    return sorted(os.listdir(folder)) if folder.is_dir() else []


def test_an_open_snapshot_in_a_reader_process_is_held_until_sigkill(
    synced: tuple[Warehouse, list[str]], reader: Callable[..., Any]
) -> None:
    """A process that opened the oldest snapshot keeps it held; killed, it no longer does."""
    wh, (old, _new) = synced
    child = reader("snapshot", {"root": str(wh.root), "refs": [old], "sql": SQL})
    held = child.expect("held")
    assert held["ids"] == [old] and held["leased"] == [True]
    assert held_ids(wh) == {old}
    child.send("query")
    assert child.expect("answers")["answers"] == held["answers"]
    child.sigkill()
    assert held_ids(wh) == frozenset()


def test_close_removes_the_lease_and_a_query_after_close_takes_a_new_one(
    synced: tuple[Warehouse, list[str]],
) -> None:
    """Snapshot.close() removes its lease file; querying again leases the snapshot again."""
    wh, (old, _new) = synced
    snap = wh.snapshot(old)
    assert snap.leased and held_ids(wh) == {old}
    (first,) = _lease_files(wh)
    assert first.startswith(old)
    answer = snap.query(SQL)
    snap.close()
    assert not snap.leased and _lease_files(wh) == [] and held_ids(wh) == frozenset()
    assert snap.query(SQL).equals(answer)
    assert snap.leased and held_ids(wh) == {old}
    (second,) = _lease_files(wh)
    assert second != first
    snap.close()
    snap.close()
    assert _lease_files(wh) == []


def test_a_query_still_running_at_close_keeps_the_lease_until_it_ends(
    synced: tuple[Warehouse, list[str]],
) -> None:
    """close() while another thread's query runs defers the lease's release to its end."""
    wh, (old, _new) = synced
    snap = wh.snapshot(old)
    snap.query(SQL)
    running = snap._acquire()  # what a query on another thread holds while it runs
    snap.close()
    assert held_ids(wh) == {old}
    running.release()  # that query ends: the connection closes, the lease goes with it
    assert held_ids(wh) == frozenset() and _lease_files(wh) == []


def test_warehouse_query_holds_a_lease_on_the_latest_snapshot(
    synced: tuple[Warehouse, list[str]],
) -> None:
    """The latest-snapshot cache of Warehouse.query is leased, moved on commit, freed on close."""
    wh, (_old, new) = synced
    wh.query(SQL)
    assert held_ids(wh) == {new}
    wh.source = SampleSource(years=range(2020, 2023), vintage=2)
    wh.sync("crsp.msf")
    newest = wh.snapshots()[-1].snapshot_id
    wh.query(SQL)
    assert held_ids(wh) == {newest}
    wh.close()
    assert held_ids(wh) == frozenset() and _lease_files(wh) == []


def test_a_snapshot_that_fails_to_open_leaves_no_lease(
    synced: tuple[Warehouse, list[str]],
) -> None:
    """A snapshot whose files fail the open checks releases the lease it took."""
    wh, (old, _new) = synced
    snap = wh.snapshot(old)
    victim = snap.files("crsp.msf")[0]
    snap.close()
    victim.write_bytes(victim.read_bytes() + b"x")  # resized: refused on open with verify
    with pytest.raises(IntegrityError):
        wh.snapshot(old, verify=True)
    assert _lease_files(wh) == []


# -- readers without write access -------------------------------------------------------------


@pytest.mark.parametrize("access", ["group-member", "read-only-mount"])
def test_a_reader_without_write_access_still_reads_and_warns_once(
    tmp_path: Path, reader: Callable[..., Any], access: str
) -> None:
    """Without write access a reader reads every snapshot, unleased, with one warning."""
    root = tmp_path / "vault"
    with Warehouse(
        root,
        source=SampleSource(years=range(2020, 2022)),
        settings=VaultSettings(group_access=True),
    ) as wh:
        wh.sync("crsp.msf")
        wh.source = SampleSource(years=range(2020, 2022), vintage=2)
        wh.sync("crsp.msf")
        ids = [s.snapshot_id for s in wh.snapshots()]
        with wh.snapshot(ids[0]) as a, wh.snapshot(ids[1]) as b:
            expected = [a.query(SQL).to_dict("records"), b.query(SQL).to_dict("records")]
    assert not (root / "leases").exists() or _lease_files(Warehouse(root, create=False)) == []
    prefix = group_member(root) if access == "group-member" else read_only_mount(root)
    child = reader("snapshot", {"root": str(root), "refs": ids, "sql": SQL}, prefix=prefix)
    held = child.expect("held")
    assert held["answers"] == expected
    assert held["leased"] == [False, False]
    lease_warnings = [w for w in held["warnings"] if "reader lease" in w]
    assert len(lease_warnings) == 1, held["warnings"]
    assert "not" in lease_warnings[0] or "may delete" in lease_warnings[0]
    child.send("query")  # later queries neither fail nor warn again
    again = child.expect("answers")
    assert again["answers"] == expected and again["warnings"] == held["warnings"]


def test_lease_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """WRDSVAULT_LEASE_* set the lease settings; a grace under three refreshes is refused."""
    monkeypatch.setenv("WRDSVAULT_LEASE_REFRESH_S", "5")
    monkeypatch.setenv("WRDSVAULT_LEASE_STALE_AFTER_S", "15")
    settings = VaultSettings().with_env()
    assert (settings.lease_refresh_s, settings.lease_stale_after_s) == (5.0, 15.0)
    assert (VaultSettings().lease_refresh_s, VaultSettings().lease_stale_after_s) == (60.0, 14400.0)
    with pytest.raises(InvalidValueError, match="3 x lease_refresh_s") as refused:
        VaultSettings(lease_refresh_s=60, lease_stale_after_s=120)
    assert refused.value.name == "lease_stale_after_s"
    monkeypatch.setenv("WRDSVAULT_LEASE_STALE_AFTER_S", "14")
    with pytest.raises(InvalidValueError) as refused:
        VaultSettings().with_env()
    assert (refused.value.name, refused.value.value) == ("WRDSVAULT_LEASE_STALE_AFTER_S", "14")
