"""Mutual exclusion, waiting and the owner record (docs/locking.md), with real processes.

The big test runs 16 processes x 100 acquisitions (1,600, ~20-30 s on 2 cores), the size the lock
is specified to survive. Every holder appends ``enter``/``exit`` lines with its
token and epoch to one O_APPEND log while it holds the lock; the log must never show two holders.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import pytest

from _helpers import locks
from _helpers.proc import wait_for
from wrdsvault._storage.identity import own_identity
from wrdsvault._storage.lock import WriterLock, read_epoch
from wrdsvault._storage.owner import read_record
from wrdsvault.errors import LockHeldError

PROCESSES = 16


def test_sixteen_processes_never_hold_the_lock_together(
    lock_path: Path, spawn, tmp_path: Path
) -> None:
    """16 processes x 100 acquisitions each: one holder at a time."""
    per_process = 100
    log = tmp_path / "holders.log"
    cfg = {"path": str(lock_path), "log": str(log), "n": per_process, "timeout_s": 300.0}
    children = [spawn("loop", {**cfg, "hold_ms": 2}) for _ in range(PROCESSES)]
    for child in children:
        assert child.expect("done", timeout_s=600)["broke"] == 0
        assert child.wait() == 0
    rows = locks.parse_log(log)
    assert len(rows) == 2 * PROCESSES * per_process
    locks.assert_one_holder_at_a_time(rows)
    epochs = [epoch for kind, _, epoch, _ in rows if kind == "enter"]
    assert epochs == sorted(set(epochs)), "fencing epochs must strictly increase"
    assert not lock_path.exists()
    assert read_epoch(lock_path.parent / ".lock.epoch") == epochs[-1]


def test_exclusion_holds_without_hard_links(lock_path: Path, spawn, tmp_path: Path) -> None:
    """Where link(2) fails (no hard links), O_CREAT|O_EXCL still admits one holder at a time."""
    log = tmp_path / "holders.log"
    cfg = {"path": str(lock_path), "log": str(log), "n": 20, "timeout_s": 120.0, "hold_ms": 2}
    children = [spawn("loop", {**cfg, "no_hard_links": True}) for _ in range(6)]
    for child in children:
        child.expect("done", timeout_s=120)
    rows = locks.parse_log(log)
    assert len(rows) == 2 * 6 * 20
    locks.assert_one_holder_at_a_time(rows)
    epochs = [epoch for kind, _, epoch, _ in rows if kind == "enter"]
    assert epochs == sorted(set(epochs))


def test_a_reader_never_sees_a_half_written_record(lock_path: Path, spawn, tmp_path: Path) -> None:
    """While writers come and go, every lock file a reader finds holds a complete record."""
    log = tmp_path / "holders.log"
    cfg = {"path": str(lock_path), "log": str(log), "n": 25, "timeout_s": 60.0, "hold_ms": 1}
    children = [spawn("loop", cfg) for _ in range(2)]
    seen = 0
    deadline = time.monotonic() + 60
    while any(c.proc.poll() is None for c in children) and time.monotonic() < deadline:
        record, st = read_record(lock_path)
        if st is not None:
            seen += 1
            assert record is not None, "a lock file without a complete record was visible"
            assert {"token", "pid", "start", "host", "boot_id", "pid_ns", "epoch"} <= set(record)
    for child in children:
        child.expect("done")
    assert seen > 0


def test_waiter_gets_lock_held_error_naming_the_holder(lock_path: Path, spawn) -> None:
    """A writer that waits out its limit gets LockHeldError naming pid, host, since, operation."""
    holder = spawn("hold", {"path": str(lock_path), "operation": "sync crsp.msf"})
    pid = holder.expect("held")["pid"]
    started = time.monotonic()
    with pytest.raises(LockHeldError) as err:
        WriterLock(lock_path, operation="second").acquire(timeout_s=0.3)
    assert 0.3 <= time.monotonic() - started < 2.0
    assert err.value.holder["pid"] == pid
    assert err.value.holder["operation"] == "sync crsp.msf"
    assert err.value.waited_s >= 0.3
    for text in (f"pid={pid}", f"host={own_identity()['host']}", "acquired_at=", "crsp.msf"):
        assert text in str(err.value)


def test_waiter_takes_the_lock_when_the_holder_releases(lock_path: Path, spawn) -> None:
    """A writer waiting with a limit gets the lock soon after the holder releases it."""
    holder = spawn("hold", {"path": str(lock_path)})
    first = holder.expect("held")
    threading.Timer(0.3, holder.send, args=("release",)).start()
    lock = WriterLock(lock_path, operation="waiter", heartbeat_s=0)
    lock.acquire(timeout_s=10)
    try:
        holder.expect("released")
        assert lock.still_ours()
        assert lock.broke is None
        assert lock.epoch == first["epoch"] + 1
    finally:
        lock.release()


def test_owner_record_is_complete_and_released_lock_is_gone(lock_path: Path) -> None:
    """The lock file carries the full owner record; release removes it and only it."""
    lock = WriterLock(lock_path, operation="sync comp.funda", heartbeat_s=0)
    lock.acquire()
    record = json.loads(lock_path.read_bytes())
    me = own_identity()
    assert record["token"] == lock.token
    assert {k: record[k] for k in me} == me
    assert record["operation"] == "sync comp.funda"
    assert record["epoch"] == lock.epoch == 1
    assert record["acquired_at"].endswith("Z")
    lock.release()
    lock.release()  # idempotent
    assert not lock_path.exists()
    assert read_epoch(lock_path.parent / ".lock.epoch") == 1
    assert (lock_path.parent / ".lock.epoch").read_bytes() == b""
    assert not [p.name for p in lock_path.parent.iterdir() if p.name.endswith(".tmp")]


def test_heartbeat_thread_refreshes_mtime_and_stops_on_release(lock_path: Path) -> None:
    """While held, a daemon thread keeps touching the lock file; release stops it."""
    lock = WriterLock(lock_path, operation="long sync", heartbeat_s=0.05)
    lock.acquire()
    old = time.time() - 3600
    os.utime(lock_path, (old, old))
    wait_for(lambda: time.time() - lock_path.stat().st_mtime < 5, "a heartbeat to touch the lock")
    assert any(t.name.startswith("wrdsvault-lock-heartbeat") for t in threading.enumerate())
    lock.release()
    assert not any(t.name.startswith("wrdsvault-lock-heartbeat") for t in threading.enumerate())


def test_a_failure_after_publishing_gives_the_lock_back(lock_path: Path) -> None:
    """If persisting the epoch fails after .lock appeared, acquire raises and leaves no lock."""
    (lock_path.parent / ".lock.epoch").mkdir()  # the rename of the new epoch file onto it fails
    lock = WriterLock(lock_path, operation="doomed", heartbeat_s=0.05)
    with pytest.raises(OSError):
        lock.acquire()
    assert not lock.held
    assert not lock_path.exists()
    assert not any(t.name.startswith("wrdsvault-lock-heartbeat") for t in threading.enumerate())
