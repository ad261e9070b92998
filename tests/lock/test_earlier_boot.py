"""Locks left by an earlier boot of this machine: their owner died with that boot.

A record with our machine id and host name but another boot id was written by a kernel that is no
longer running, so every process of it is gone: the next writer breaks such a lock at once (with
the usual one-winner claim protocol; `test_storm.py` storms it too) instead of waiting hours for
the heartbeat timeout. The records are faked on disk exactly as a writer of an earlier boot would
have left them (its last heartbeat before this boot began), and real child processes judge them
with a heartbeat timeout far longer than the record's age, so only the boot rule can break them.
Everything that is not provably from an earlier boot of this machine keeps the heartbeat rule.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from _helpers import locks
from wrdsvault._storage.identity import _parse_ioreg, _parse_machine_id, own_identity
from wrdsvault._storage.lock_tools import describe_lock
from wrdsvault._storage.owner import read_record

#: Far beyond any record's age here: a break can only come from the earlier-boot rule.
MONTH_S = 30 * 24 * 3600.0

pytestmark = pytest.mark.skipif(
    own_identity()["machine_id"] is None, reason="this machine has no machine id"
)


def test_lock_of_an_earlier_boot_is_broken_at_once(lock_path: Path, spawn, sleeper) -> None:
    """A lock from an earlier boot of this machine is broken by the next writer without waiting."""
    # Its PID names a live process now: after a reboot a PID means nothing, and is not looked at.
    record = locks.earlier_boot_record(pid=sleeper.pid, operation="nightly sync")
    locks.write_lock(lock_path, json.dumps(record).encode(), age_s=locks.earlier_boot_age_s())
    shown = describe_lock(lock_path, stale_after_s=MONTH_S)
    assert shown is not None
    assert shown.state.startswith(f"stale: owner pid {sleeper.pid} ran in an earlier boot")

    writer = spawn("hold", {"path": str(lock_path), "stale_after_s": MONTH_S, "timeout_s": 0})
    held = writer.expect("held", "lock-held-error")
    assert held["event"] == "held", held
    assert "ran in an earlier boot of this machine" in held["broke"]
    assert held["epoch"] == record["epoch"] + 1
    now, _ = read_record(lock_path)
    assert now is not None and now["token"] == held["token"]
    assert now["machine_id"] == own_identity()["machine_id"] and now["format"] == 3


def test_earlier_boot_lock_that_still_beats_is_respected(lock_path: Path, spawn) -> None:
    """Same machine id, other boot, but a fresh heartbeat: a live clone, judged by heartbeat."""
    record = locks.earlier_boot_record(operation="sync on a cloned VM")
    locks.write_lock(lock_path, json.dumps(record).encode(), age_s=5.0)
    writer = spawn("hold", {"path": str(lock_path), "stale_after_s": MONTH_S, "timeout_s": 0})
    refused = writer.expect("held", "lock-held-error")
    assert refused["event"] == "lock-held-error", refused
    assert refused["holder"]["token"] == record["token"]
    assert read_record(lock_path)[0] == record


@pytest.mark.parametrize(
    "change",
    [
        pytest.param({"machine_id": None}, id="older-version-without-machine-id"),
        pytest.param({"machine_id": "f" * 32}, id="another-machine"),
        pytest.param({"host": "renamed.invalid"}, id="another-host-name"),
    ],
)
def test_other_boots_not_proven_to_be_this_machine_keep_the_heartbeat_rule(
    lock_path: Path, spawn, change: dict[str, object]
) -> None:
    """No machine id, another machine id or another host name: held until the heartbeat timeout."""
    record = locks.earlier_boot_record()
    record.update(change)
    if change.get("machine_id", "") is None:
        del record["machine_id"]  # a format 2 record has no such field at all
        record["format"] = 2
    locks.write_lock(lock_path, json.dumps(record).encode(), age_s=locks.earlier_boot_age_s())
    writer = spawn("hold", {"path": str(lock_path), "stale_after_s": MONTH_S, "timeout_s": 0})
    refused = writer.expect("held", "lock-held-error")
    assert refused["event"] == "lock-held-error", refused
    assert read_record(lock_path)[0] == record

    late = spawn("hold", {"path": str(lock_path), "stale_after_s": 1.0, "timeout_s": 0})
    held = late.expect("held", "lock-held-error")
    assert held["event"] == "held" and "no heartbeat from host" in held["broke"], held


def test_machine_id_parsing() -> None:
    """Machine ids come from systemd/D-Bus files or macOS's ioreg; placeholders are no id."""
    assert (
        _parse_machine_id("3D1219C7C4C5404AAA1F6D2A48ADFDA4\n")
        == "3d1219c7c4c5404aaa1f6d2a48adfda4"
    )
    assert _parse_machine_id("") is None
    assert _parse_machine_id("uninitialized\n") is None
    ioreg = (
        "+-o J314sAP  <class IOPlatformExpertDevice, id 0x100000209, registered>\n"
        '    "IOPlatformSerialNumber" = "C02XXXXXXXX"\n'
        '    "IOPlatformUUID" = "5A1C2E3F-0B4D-4E6F-8A9B-0C1D2E3F4A5B"\n'
    )
    assert _parse_ioreg(ioreg) == "5a1c2e3f-0b4d-4e6f-8a9b-0c1d2e3f4a5b"
    assert _parse_ioreg("no such device") is None
