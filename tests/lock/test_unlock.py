"""`describe_lock` and `break_lock`: what ``wrdsvault status`` and ``wrdsvault unlock`` call.

`break_lock` breaks a lock by hand with the same claim protocol as an automatic break, refuses a
live owner on this host unless told otherwise, and refuses a lock that changed since it was shown.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from _helpers import locks
from wrdsvault._storage.identity import own_identity
from wrdsvault._storage.lock import WriterLock
from wrdsvault._storage.lock_tools import break_lock, describe_lock
from wrdsvault.errors import LockBreakRefusedError


def test_describe_lock_says_free_held_or_stale_and_why(lock_path: Path, spawn) -> None:
    """describe_lock reports free, a live holder with its record, and a dead one as stale."""
    assert describe_lock(lock_path.parent / "missing" / ".lock") is None
    free = describe_lock(lock_path)
    assert free is not None and free.state == "free" and free.free and free.last_epoch == 0

    holder = spawn("hold", {"path": str(lock_path), "operation": "sync crsp.msf"})
    held = holder.expect("held")
    shown = describe_lock(lock_path)
    assert shown is not None
    assert shown.state == "held" and not shown.free and not shown.stale
    assert shown.pid == held["pid"] and shown.token == shown.incarnation == held["token"]
    assert shown.host == own_identity()["host"] and shown.same_host is True
    assert shown.operation == "sync crsp.msf" and shown.owner["epoch"] == held["epoch"]
    assert shown.heartbeat_age_s is not None and 0 <= shown.heartbeat_age_s < 60
    assert shown.heartbeat_at is not None and shown.heartbeat_at.endswith("Z")
    assert shown.breakers == () and shown.unreadable is False
    assert shown.clock == "server" and shown.write_access is True

    holder.proc.kill()
    holder.wait()
    stale = describe_lock(lock_path)
    assert stale is not None and stale.state == f"stale: owner process {held['pid']} is gone"
    assert stale.stale

    locks.write_lock(lock_path, b"", age_s=5)
    unreadable = describe_lock(lock_path)
    assert unreadable is not None and unreadable.state == "held" and unreadable.unreadable
    assert unreadable.incarnation == f"ino{lock_path.stat().st_ino}" and unreadable.owner == {}


def test_break_lock_refuses_a_live_owner_on_this_host(lock_path: Path, spawn) -> None:
    """A live same-host owner is refused; with allow_live it is broken and fails its fencing."""
    holder = spawn("hold", {"path": str(lock_path), "operation": "sync crsp.msf"})
    held = holder.expect("held")
    with pytest.raises(
        LockBreakRefusedError, match=f"pid {held['pid']}.*alive on this host"
    ) as err:
        break_lock(lock_path)
    assert err.value.holder["token"] == held["token"]
    holder.send("check")
    assert holder.expect("check")["ours"] is True

    broken = break_lock(lock_path, allow_live=True, expect_token=held["token"])
    assert broken.broken is True and broken.pid == held["pid"]
    assert not lock_path.exists()
    holder.send("check")
    assert holder.expect("check")["ours"] is False


def test_break_lock_breaks_a_dead_or_foreign_owner(lock_path: Path) -> None:
    """A dead owner, and another host's owner the human vouches for, are broken by hand."""
    dead = locks.owner_record(pid=locks.reaped_pid())
    locks.write_lock(lock_path, json.dumps(dead).encode())
    result = break_lock(lock_path, expect_token=dead["token"])
    assert result.broken and result.state.startswith("stale: owner process")
    assert not lock_path.exists()

    foreign = locks.owner_record(host="elsewhere.invalid", boot_id="other-boot")
    locks.write_lock(lock_path, json.dumps(foreign).encode())  # heartbeat fresh: held
    result = break_lock(lock_path)
    assert result.broken and result.state == "held" and result.same_host is False
    assert not lock_path.exists()
    assert break_lock(lock_path).broken is False

    lock = WriterLock(lock_path, operation="after", heartbeat_s=0)
    lock.acquire()
    assert lock.epoch is not None and lock.epoch >= 3  # the manual breaks took epochs too
    lock.release()


def test_break_lock_refuses_a_lock_that_changed_since_it_was_shown(lock_path: Path) -> None:
    """If another incarnation replaced the one the human saw, nothing is broken."""
    shown = locks.owner_record(pid=locks.reaped_pid())
    locks.write_lock(lock_path, json.dumps(shown).encode())
    newer = locks.owner_record(pid=locks.reaped_pid())
    locks.write_lock(lock_path, json.dumps(newer).encode())
    with pytest.raises(LockBreakRefusedError, match="changed since it was shown") as err:
        break_lock(lock_path, expect_token=shown["token"])
    assert err.value.holder["token"] == newer["token"] and "changed" in err.value.reason
    assert json.loads(lock_path.read_bytes())["token"] == newer["token"]


def test_break_lock_steps_over_a_foreign_breaker_that_died(lock_path: Path) -> None:
    """A claim left by a breaker on another host does not stop a human from unlocking."""
    stale = locks.owner_record(host="elsewhere.invalid", boot_id="other-boot")
    locks.write_lock(lock_path, json.dumps(stale).encode())
    claimer = locks.owner_record(host="third.invalid", boot_id="third-boot")
    claim = lock_path.with_name(f".lock.claim.{stale['token']}.0")
    locks.write_lock(claim, json.dumps(claimer).encode())
    shown = describe_lock(lock_path)
    assert shown is not None and shown.breakers == (claim.name,)
    started = time.monotonic()
    assert break_lock(lock_path).broken
    assert time.monotonic() - started < 1.0
    assert not lock_path.exists()
    assert not claim.exists()
    assert not [n for n in os.listdir(lock_path.parent) if ".claim." in n]


def test_lock_info_is_a_typed_record_whose_json_keeps_the_old_shape(
    tmp_path: Path, spawn, capsys: pytest.CaptureFixture[str]
) -> None:
    """Warehouse.lock_info and break_lock return LockInfo; --json prints the same flat dict."""
    from wrdsvault import LockInfo, Warehouse
    from wrdsvault.cli import main

    root = tmp_path / "vault"
    with Warehouse(root, create=True) as wh:
        free = wh.lock_info()
        assert isinstance(free, LockInfo) and free.free
        assert free.to_json() == {"state": "free", "path": str(root / ".lock"), "last_epoch": 0}

        holder = spawn("hold", {"path": str(root / ".lock"), "operation": "sync crsp.msf"})
        held = holder.expect("held")
        info = wh.lock_info()
        assert isinstance(info, LockInfo) and info.pid == held["pid"]
        record = json.loads((root / ".lock").read_bytes())
        flat = info.to_json()
        assert {k: flat[k] for k in record} == record  # every owner field, as written
        assert set(flat) - set(record) == {
            "state",
            "path",
            "unreadable",
            "same_host",
            "heartbeat_at",
            "heartbeat_age_s",
            "clock",
            "write_access",
            "incarnation",
            "breakers",
        }
        assert wh.status().to_json()["lock_holder"]["token"] == held["token"]

        assert main(["unlock", "--vault", str(root), "--json"]) == 1
        shown = json.loads(capsys.readouterr().out)
        assert shown["broken"] is False and shown["token"] == held["token"]
        assert shown["breakers"] == [] and shown["state"] == "held"

        holder.proc.kill()
        holder.wait()
        assert main(["unlock", "--vault", str(root), "--json", "--force", "--yes"]) == 0
        broken = json.loads(capsys.readouterr().out)
        assert broken["broken"] is True and broken["state"].startswith("stale: owner process")
        assert wh.lock_info().free
        assert main(["unlock", "--vault", str(root), "--json"]) == 0
        free_json = json.loads(capsys.readouterr().out)
        assert free_json == {**wh.lock_info().to_json(), "broken": False}
        assert free_json["path"] == str(root / ".lock")
