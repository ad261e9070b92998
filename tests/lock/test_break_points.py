"""A breaker SIGKILLed at every step of the break protocol never wedges the vault.

Each case leaves a stale lock on disk (an owner that is gone, plus a claim of a breaker that died
before), starts a real child that breaks it with ``WRDSVAULT_TEST_CRASHPOINT`` armed at one
`BreakPoint`, and checks that the child died there (SIGKILL, no cleanup ran). Then the next writer
must get the lock within its wait, no claim file may survive its acquisition, and its epoch must be
above every epoch handed out before. Temp records the dead breaker left behind block nobody (the
writer's recovery removes them after a minute).
"""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import pytest

from _helpers import locks
from wrdsvault._storage.crashpoints import BreakPoint
from wrdsvault._storage.lock import WriterLock, read_epoch
from wrdsvault._storage.owner import read_record

WAIT_S = 5.0


def _claims(lock_path: Path) -> list[str]:
    return sorted(p.name for p in lock_path.parent.iterdir() if ".claim." in p.name)


@pytest.mark.crash
@pytest.mark.parametrize("point", list(BreakPoint), ids=[p.value for p in BreakPoint])
def test_breaker_killed_at_each_break_point_does_not_wedge_the_vault(
    lock_path: Path, spawn, sleeper, point: BreakPoint
) -> None:
    """A breaker killed at this step leaves a vault whose next writer gets the lock at once."""
    token = locks.stale_lock(lock_path, "dead-claimer", live_pid=sleeper.pid)
    breaker = spawn("hold", {"path": str(lock_path), "timeout_s": WAIT_S}, crashpoint=point.value)
    assert breaker.wait() == -signal.SIGKILL
    assert breaker.expect("eof")
    record, _ = read_record(lock_path)
    assert record is not None  # the name is never empty, whatever step the breaker died at
    assert (record["token"] != token) == _after(point, BreakPoint.RECORD_INSTALLED)

    started = time.monotonic()
    lock = WriterLock(lock_path, operation="next writer", heartbeat_s=0)
    lock.acquire(timeout_s=WAIT_S)
    try:
        assert time.monotonic() - started < 2.0
        assert lock.broke is not None and "is gone" in lock.broke
        assert _claims(lock_path) == []
        assert lock.epoch is not None and lock.epoch > max(record["epoch"], 1)
        assert read_epoch(lock_path.with_name(".lock.epoch")) == lock.epoch
    finally:
        lock.release()
    assert not lock_path.exists()


def _after(point: BreakPoint, step: BreakPoint) -> bool:
    """Whether a breaker reaches ``point`` only once it has done ``step``."""
    order = list(BreakPoint)
    return order.index(point) >= order.index(step)


@pytest.mark.crash
def test_a_chain_of_dead_claimers_is_skipped(lock_path: Path, spawn, sleeper) -> None:
    """Breakers that died holding claims 0, 1 and 2 of one stale lock do not stop the fourth."""
    token = locks.stale_lock(lock_path, "dead-claimer", live_pid=sleeper.pid)
    for _ in range(2):
        breaker = spawn("hold", {"path": str(lock_path)}, crashpoint="break-claim-linked")
        assert breaker.wait() == -signal.SIGKILL
    assert _claims(lock_path) == [f".lock.claim.{token}.{k}" for k in range(3)]
    lock = WriterLock(lock_path, operation="fourth", heartbeat_s=0)
    lock.acquire()
    assert _claims(lock_path) == []
    assert json.loads(lock_path.read_bytes())["token"] == lock.token
    lock.release()


@pytest.mark.crash
def test_a_breaker_killed_after_installing_is_itself_a_dead_owner(
    lock_path: Path, spawn, sleeper
) -> None:
    """Killed right after its rename, the breaker is the owner, broken like any dead owner."""
    locks.stale_lock(lock_path, "dead", live_pid=sleeper.pid)
    breaker = spawn("hold", {"path": str(lock_path)}, crashpoint="break-record-installed")
    assert breaker.wait() == -signal.SIGKILL
    record, _ = read_record(lock_path)
    assert record is not None and record["pid"] == breaker.proc.pid
    lock = WriterLock(lock_path, operation="next", heartbeat_s=0)
    lock.acquire()
    assert lock.broke == f"owner process {breaker.proc.pid} is gone"
    lock.release()
