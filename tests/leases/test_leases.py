"""Reader leases on disk: real reader processes, SIGKILL, foreign and earlier-boot records.

Nothing is mocked: readers are child processes that take real leases; the leases of other hosts
and of an earlier boot are files written exactly as such a reader would have left them, aged
with ``os.utime``.
"""

from __future__ import annotations

import json
import os
import secrets
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from _helpers.disk import set_age
from _helpers.leases import STALE_S, held_ids
from _helpers.proc import wait_for
from wrdsvault import Warehouse
from wrdsvault._storage.identity import _machine_id, own_identity
from wrdsvault._storage.layout import Layout
from wrdsvault._storage.lease import (
    THREAD_NAME,
    held_snapshot_ids,
    scan_leases,
    sweep_dead_leases,
    take_lease,
)
from wrdsvault._storage.owner import UNREADABLE_GRACE_S
from wrdsvault.errors import InvalidNameError


def _layout(wh: Warehouse) -> Layout:
    return Layout(wh.root)


def _fake_lease(layout: Layout, sid: str, *, age_s: float, **identity: Any) -> Path:
    """Leave the lease file a reader with ``identity`` would have left, last refreshed
    ``age_s`` seconds ago."""
    token = secrets.token_hex(16)
    record = {
        "kind": "reader-lease",
        "format": 1,
        "snapshot_id": sid,
        "token": token,
        **own_identity(),
        "created_at": "2026-01-01T00:00:00+00:00",
        "refresh_s": 60.0,
        **identity,
    }
    path = layout.lease(sid, token)
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps(record))
    set_age(path, age_s)
    return path


def test_a_live_reader_is_seen_and_a_sigkilled_one_is_not(
    synced: tuple[Warehouse, list[str]], reader: Callable[..., Any]
) -> None:
    """A reader process's lease protects its snapshot; after SIGKILL it is provably dead."""
    wh, (old, _new) = synced
    child = reader("lease", {"root": str(wh.root), "snapshot_ids": [old]})
    held = child.expect("held")
    (path,) = held["paths"]
    assert held_ids(wh) == {old}
    (state,) = scan_leases(_layout(wh), stale_after_s=STALE_S)
    assert state.held and state.record is not None and state.record["pid"] == held["pid"]

    child.sigkill()
    assert Path(path).exists()  # SIGKILL left it behind ...
    assert held_ids(wh) == frozenset()  # ... and it no longer counts
    (state,) = scan_leases(_layout(wh), stale_after_s=STALE_S)
    assert state.dead is not None and f"{held['pid']} is gone" in state.dead
    assert sweep_dead_leases(_layout(wh), stale_after_s=STALE_S) == [f"leases/{Path(path).name}"]
    assert not Path(path).exists()


def test_release_and_interpreter_exit_remove_the_lease(
    synced: tuple[Warehouse, list[str]], reader: Callable[..., Any]
) -> None:
    """release() removes the lease file; a reader that exits without releasing removes it too."""
    wh, (old, new) = synced
    releasing = reader("lease", {"root": str(wh.root), "snapshot_ids": [old]})
    (released_path,) = releasing.expect("held")["paths"]
    exiting = reader("lease", {"root": str(wh.root), "snapshot_ids": [new]})
    (exited_path,) = exiting.expect("held")["paths"]
    assert held_ids(wh) == {old, new}

    releasing.send("release")
    releasing.expect("released")
    assert not Path(released_path).exists()
    assert held_ids(wh) == {new}

    exiting.send("exit")
    assert exiting.proc.wait(timeout=30) == 0
    assert not Path(exited_path).exists()
    assert held_ids(wh) == frozenset()


def test_release_is_idempotent(tmp_path: Path) -> None:
    """Releasing twice removes the file once and raises nothing."""
    layout = Layout(tmp_path)
    lease = take_lease(
        layout, "20250101T000000000000Z-00000000", file_mode=0o600, dir_mode=0o700, refresh_s=60
    )
    assert lease.path.exists() and lease.snapshot_id == "20250101T000000000000Z-00000000"
    lease.release()
    lease.release()
    assert not lease.path.exists() and lease.released


def test_a_dropped_lease_is_removed(tmp_path: Path) -> None:
    """A Lease nobody references any more is finalized: its file goes, the refresher forgets it."""
    layout = Layout(tmp_path)
    lease = take_lease(
        layout, "20250101T000000000000Z-00000000", file_mode=0o600, dir_mode=0o700, refresh_s=60
    )
    path = lease.path
    del lease
    assert not path.exists()


def test_a_foreign_hosts_lease_counts_until_its_refresh_is_older_than_the_grace(
    synced: tuple[Warehouse, list[str]],
) -> None:
    """Another host's lease is judged by refresh age alone (its pid means nothing here)."""
    wh, (old, _new) = synced
    foreign = {"host": "elsewhere.invalid", "boot_id": "b", "pid_ns": "pid:[1]", "pid": 1}
    path = _fake_lease(_layout(wh), old, age_s=STALE_S - 120, **foreign)
    assert held_ids(wh) == {old}
    set_age(path, STALE_S + 120)
    assert held_ids(wh) == frozenset()
    (state,) = scan_leases(_layout(wh), stale_after_s=STALE_S)
    assert state.dead is not None and "elsewhere.invalid" in state.dead


def test_an_earlier_boots_lease_is_dead(synced: tuple[Warehouse, list[str]]) -> None:
    """A lease of an earlier boot of this machine is dead, even naming a live pid."""
    if _machine_id() is None:
        pytest.skip("this machine has no machine id")
    wh, (old, _new) = synced
    uptime = time.clock_gettime(time.CLOCK_BOOTTIME)
    earlier = {"boot_id": "00000000-0000-4000-8000-000000000000", "pid": os.getpid()}
    path = _fake_lease(_layout(wh), old, age_s=uptime + 60, **earlier)
    (state,) = scan_leases(_layout(wh), stale_after_s=10 * uptime + 10 * STALE_S)
    assert state.dead is not None and "earlier boot" in state.dead
    assert held_ids(wh) == frozenset()
    # The negative control: the same record from this boot names a live process.
    path.unlink()
    _fake_lease(_layout(wh), old, age_s=uptime + 60, pid=os.getpid())
    assert held_ids(wh) == {old}


def test_a_lease_of_a_reused_pid_is_dead(synced: tuple[Warehouse, list[str]]) -> None:
    """Same host, the pid alive but started at another time: another process, the lease is dead."""
    wh, (old, _new) = synced
    _fake_lease(_layout(wh), old, age_s=0, pid=os.getpid(), start="ticks:1")
    assert held_ids(wh) == frozenset()


def test_an_unreadable_lease_counts_for_a_grace_period(
    synced: tuple[Warehouse, list[str]],
) -> None:
    """A lease file that cannot be parsed protects the snapshot its name names, for a while."""
    wh, (old, new) = synced
    layout = _layout(wh)
    path = layout.lease(old, secrets.token_hex(16))
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(b'{"kind": "reader-le')
    assert held_ids(wh) == {old}
    set_age(path, UNREADABLE_GRACE_S + 60)
    assert held_ids(wh) == frozenset()
    # A record that names another snapshot than its file name is as good as unreadable.
    other = _fake_lease(layout, old, age_s=0)
    record = json.loads(other.read_text())
    other.write_text(json.dumps({**record, "snapshot_id": new}))
    assert held_ids(wh) == {old}


def test_many_leases_share_one_refresh_thread_that_refreshes_them_all(tmp_path: Path) -> None:
    """Twenty leases in one process: one refresh thread, and it touches every one of them."""
    layout = Layout(tmp_path)
    ids = [f"20250101T0000{i:02d}000000Z-0000000{i % 10}" for i in range(20)]
    leases = [
        take_lease(layout, sid, file_mode=0o600, dir_mode=0o700, refresh_s=0.05) for sid in ids
    ]
    try:
        assert sum(t.name == THREAD_NAME for t in threading.enumerate()) == 1
        for lease in leases:
            set_age(lease.path, 3600)
        wait_for(
            lambda: all(time.time() - lease.path.stat().st_mtime <= 600 for lease in leases),
            "the refresh thread to touch every lease",
        )
    finally:
        for lease in leases:
            lease.release()
    wait_for(
        lambda: all(t.name != THREAD_NAME for t in threading.enumerate()),
        "the refresh thread to end with the last lease",
    )


def test_a_live_readers_lease_removed_under_it_is_written_again(tmp_path: Path) -> None:
    """A lease swept while its reader lives comes back on the next refresh."""
    layout = Layout(tmp_path)
    lease = take_lease(
        layout, "20250101T000000000000Z-00000000", file_mode=0o600, dir_mode=0o700, refresh_s=0.05
    )
    try:
        lease.path.unlink()
        wait_for(lease.path.exists, "the lease to be written again")
        assert held_snapshot_ids(layout, stale_after_s=STALE_S) == {lease.snapshot_id}
    finally:
        lease.release()
    assert not lease.path.exists()


def test_a_many_snapshot_reader_process_has_one_refresh_thread(
    synced: tuple[Warehouse, list[str]], reader: Callable[..., Any]
) -> None:
    """A reader process with several leases runs exactly one refresh thread."""
    wh, ids = synced
    child = reader("lease", {"root": str(wh.root), "snapshot_ids": ids * 5})
    assert len(child.expect("held")["paths"]) == 10
    child.send("threads")
    assert child.expect("threads")["n"] == 1
    assert held_ids(wh) == set(ids)


def test_a_forked_child_never_removes_its_parents_leases(
    synced: tuple[Warehouse, list[str]], reader: Callable[..., Any]
) -> None:
    """A forked child that releases the leases it inherited, and exits, leaves them in place."""
    wh, ids = synced
    child = reader("lease", {"root": str(wh.root), "snapshot_ids": ids})
    paths = child.expect("held")["paths"]
    child.send("fork")
    assert child.expect("forked")["status"] == 0
    assert all(Path(p).exists() for p in paths)
    assert held_ids(wh) == set(ids)
    child.send("release")
    child.expect("released")
    assert held_ids(wh) == frozenset()


def test_lease_names_are_validated(tmp_path: Path) -> None:
    """Lease paths are built only from a valid snapshot id and a 32-hex-digit token."""
    layout = Layout(tmp_path)
    sid = "20250101T000000000000Z-00000000"
    assert layout.lease(sid, "a" * 32) == tmp_path / "leases" / f"{sid}.{'a' * 32}.json"
    for token in ("../../x", "A" * 32, "a" * 31, "a" * 32 + "/"):
        with pytest.raises(InvalidNameError):
            layout.lease(sid, token)
    with pytest.raises(InvalidNameError):
        layout.lease("../HEAD", "a" * 32)
