"""Stale-lock recovery and fencing (docs/locking.md), with real processes.

Same host: a lock is stale as soon as its owner is provably dead (gone, or its PID now belongs to
another process); a live owner is never broken. Another host (here: a real process in its own PID
namespace, whose PID means nothing to us): stale only when its heartbeat, the lock file's mtime, is
older than ``stale_after_s`` by the file server's clock. A holder paused past that timeout loses the
lock and its fencing check fails.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

from _helpers import locks
from _helpers.proc import wait_for
from wrdsvault._storage.lock import WriterLock
from wrdsvault._storage.owner import read_record
from wrdsvault.errors import LockHeldError


def test_sigkilled_holder_is_replaced_without_waiting_for_the_timeout(
    lock_path: Path, spawn
) -> None:
    """The next writer on the same host takes over a SIGKILLed holder's lock at once."""
    holder = spawn("hold", {"path": str(lock_path)})
    dead = holder.expect("held")
    holder.proc.kill()
    holder.wait()
    started = time.monotonic()
    lock = WriterLock(lock_path, operation="next", heartbeat_s=0)  # 4 h timeout
    lock.acquire(timeout_s=5)
    try:
        assert time.monotonic() - started < 1.0
        assert lock.broke == f"owner process {dead['pid']} is gone"
        assert lock.epoch == dead["epoch"] + 1
        assert lock.still_ours()
    finally:
        lock.release()
    assert not lock_path.exists()


def test_holder_that_vanished_without_release_is_replaced(lock_path: Path, spawn) -> None:
    """A holder that exited without releasing (os._exit) does not block the next writer."""
    holder = spawn("hold", {"path": str(lock_path)})
    holder.expect("held")
    holder.send("vanish")
    assert holder.wait() == 0
    lock = WriterLock(lock_path, operation="next", heartbeat_s=0)
    lock.acquire()
    assert lock.broke is not None and "is gone" in lock.broke
    lock.release()


def test_reused_pid_is_stale_but_the_true_owner_is_not(lock_path: Path, sleeper) -> None:
    """A record naming a live unrelated process with another start time is stale; its own is not."""
    reused = locks.owner_record(pid=sleeper.pid, start="ticks:1")
    locks.write_lock(lock_path, json.dumps(reused).encode())
    lock = WriterLock(lock_path, operation="next", heartbeat_s=0)
    lock.acquire()
    assert (
        lock.broke == f"owner pid {sleeper.pid} now belongs to another process (start time differs)"
    )
    lock.release()

    own = locks.owner_record(pid=sleeper.pid, start=f"ticks:{_ticks(sleeper.pid)}")
    locks.write_lock(lock_path, json.dumps(own).encode())
    with pytest.raises(LockHeldError):
        WriterLock(lock_path, operation="next").acquire(timeout_s=0.2)
    assert read_record(lock_path)[0] == own


def _ticks(pid: int) -> str:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat[stat.rfind(")") + 2 :].split()[19]


def test_live_same_host_holder_is_never_broken(lock_path: Path, spawn) -> None:
    """A live holder on this host keeps the lock however old its heartbeat and short the timeout."""
    holder = spawn("hold", {"path": str(lock_path), "heartbeat_s": 0})
    holder.expect("held")
    then = time.time() - 10 * 3600
    os.utime(lock_path, (then, then))
    contender = WriterLock(lock_path, operation="impatient", stale_after_s=1.0)
    with pytest.raises(LockHeldError):
        contender.acquire(timeout_s=0.5)
    holder.send("check")
    assert holder.expect("check")["ours"]


def test_foreign_lock_is_respected_until_its_heartbeat_is_older_than_the_timeout(
    lock_path: Path,
) -> None:
    """Another host's lock younger than stale_after_s is held; older is broken."""
    record = locks.owner_record(host="elsewhere.invalid", boot_id="other-boot")
    locks.write_lock(lock_path, json.dumps(record).encode(), age_s=3 * 3600)
    with pytest.raises(LockHeldError) as err:
        WriterLock(lock_path, operation="next").acquire(timeout_s=0.1)
    assert err.value.holder["host"] == "elsewhere.invalid"

    then = time.time() - 4 * 3600 - 60
    os.utime(lock_path, (then, then))
    lock = WriterLock(lock_path, operation="next", heartbeat_s=0)
    lock.acquire()
    assert lock.broke is not None and "no heartbeat from host 'elsewhere.invalid'" in lock.broke
    lock.release()


def test_foreign_age_is_measured_on_the_file_server_clock(
    lock_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A local clock 10 h fast or slow does not change the verdict on a foreign lock."""
    record = locks.owner_record(host="elsewhere.invalid", boot_id="other-boot")
    locks.write_lock(lock_path, json.dumps(record).encode(), age_s=60)
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + 10 * 3600)
    with pytest.raises(LockHeldError):
        WriterLock(lock_path, operation="fast clock").acquire(timeout_s=0.1)
    monkeypatch.undo()
    locks.write_lock(lock_path, json.dumps(record).encode(), age_s=5 * 3600)
    monkeypatch.setattr(time, "time", lambda: real() - 10 * 3600)
    lock = WriterLock(lock_path, operation="slow clock", heartbeat_s=0)
    lock.acquire()
    lock.release()


@pytest.mark.parametrize(
    "content", [b"", b'{"token": "abc', b"[1, 2]"], ids=["empty", "torn", "list"]
)
def test_unreadable_lock_is_held_during_the_grace_period_then_broken(
    lock_path: Path, content: bytes
) -> None:
    """An empty or garbage lock file younger than the grace period is held; older is broken."""
    locks.write_lock(lock_path, content, age_s=5)
    with pytest.raises(LockHeldError) as err:
        WriterLock(lock_path, operation="next").acquire(timeout_s=0.1)
    assert err.value.holder.get("unreadable") is True
    locks.write_lock(lock_path, content, age_s=31)
    lock = WriterLock(lock_path, operation="next", heartbeat_s=0)
    lock.acquire()
    assert lock.broke is not None and "unreadable owner record" in lock.broke
    lock.release()


@pytest.mark.parametrize("heartbeat", [True, False], ids=["heartbeat", "no-heartbeat-control"])
def test_heartbeat_keeps_a_long_running_foreign_holder_alive(
    lock_path: Path, spawn, other_host: list[str], heartbeat: bool
) -> None:
    """A holder in another PID namespace beating every 0.2 s outlives a 1 s timeout for 3 s."""
    cfg = {"path": str(lock_path), "stale_after_s": 1.0, "heartbeat_s": 0.2 if heartbeat else 0}
    holder = spawn("hold", cfg, prefix=other_host)
    held = holder.expect("held")
    assert read_record(lock_path)[0]["pid_ns"] != os.readlink("/proc/self/ns/pid")
    contender = WriterLock(lock_path, operation="contender", stale_after_s=1.0, heartbeat_s=0)
    deadline = time.monotonic() + 3.0
    broken = False
    while time.monotonic() < deadline and not broken:
        try:
            contender.acquire(timeout_s=0.1)
        except LockHeldError as exc:
            assert exc.holder["token"] == held["token"]
        else:
            broken = True
            assert contender.broke is not None and "no heartbeat" in contender.broke
    holder.send("check")
    assert holder.expect("check")["ours"] is heartbeat
    assert broken is not heartbeat
    contender.release()


def test_paused_writer_loses_the_lock_and_fails_its_fencing_check(
    lock_path: Path, spawn, other_host: list[str]
) -> None:
    """A writer SIGSTOPped past the timeout is replaced; after SIGCONT still_ours() is False."""
    cfg = {"path": str(lock_path), "stale_after_s": 1.0, "heartbeat_s": 0.2}
    paused = spawn("hold", cfg, prefix=other_host)
    first = paused.expect("held")
    paused.send("check")
    assert paused.expect("check")["ours"]
    paused.send("beating")
    assert paused.expect("beating")["alive"], "the child must show its heartbeat thread"
    paused.signal_group(signal.SIGSTOP)
    successor = WriterLock(lock_path, operation="successor", stale_after_s=1.0, heartbeat_s=0)
    started = time.monotonic()
    successor.acquire(timeout_s=10)
    try:
        # Stale 1.0 s after the last heartbeat, which came up to 0.2 s before the SIGSTOP.
        assert 0.75 <= time.monotonic() - started < 5.0
        assert successor.broke is not None and "no heartbeat" in successor.broke
        assert successor.epoch is not None and successor.epoch > first["epoch"]
        mine = lock_path.stat()
        paused.signal_group(signal.SIGCONT)
        paused.send("check")
        assert paused.expect("check")["ours"] is False  # its commit would be refused

        def stopped_beating() -> bool:
            """Its heartbeat thread ran again, found the lock taken over and stopped."""
            paused.send("beating")
            return not paused.expect("beating")["alive"]

        wait_for(stopped_beating, "the paused writer's heartbeat thread to give up")
        paused.send("release")
        paused.expect("released")
        assert successor.still_ours()
        assert lock_path.stat().st_mtime_ns == mine.st_mtime_ns
        assert lock_path.stat().st_ino == mine.st_ino
    finally:
        successor.release()
    assert not lock_path.exists()
