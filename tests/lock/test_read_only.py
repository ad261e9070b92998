"""Reading a vault without write access: status, doctor and unlock work, or say what they cannot do.

Two real ways to lack write access, both with the lock held by a live writer:

* a member of the vault's group: the vault is given to another user (``nobody``) with the group
  read bits that ``group_access`` sets, and the CLI runs in a child that keeps our uid but drops
  every capability (``setpriv``), so the kernel checks the permission bits for it like for any user
  (root's capabilities would ignore them; a child running as ``nobody`` could not reach this
  interpreter, which lives under a home folder only root may enter);
* a read-only bind mount of the vault, made inside a private mount namespace (``unshare``) that
  only the child sees.

Nothing is mocked: the children are ``python -m wrdsvault`` on the real vault.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from _helpers import access, locks
from _helpers.disk import entry_stats
from _helpers.proc import child_env
from wrdsvault import VaultSettings, Warehouse
from wrdsvault.sources import SampleSource


def _run(prefix: list[str], *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*prefix, sys.executable, *argv],
        capture_output=True,
        text=True,
        env=child_env(),
        timeout=120,
        check=False,
    )


def _make_vault(root: Path) -> None:
    with Warehouse(
        root,
        source=SampleSource(years=range(2020, 2022)),
        settings=VaultSettings(group_access=True),
    ) as wh:
        wh.sync("crsp.msf")


@pytest.fixture
def group_member(tmp_path: Path) -> Iterator[tuple[Path, Callable[..., Any]]]:
    """A synced group-access vault owned by another user, and a CLI runner for a group member."""
    root = tmp_path / "vault"
    _make_vault(root)
    drop = access.group_member(root)

    def cli(*argv: str) -> subprocess.CompletedProcess[str]:
        return _run(drop, "-m", "wrdsvault", *argv, "--vault", str(root))

    yield root, cli


def _no_traceback(result: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in result.stderr, result.stderr


def test_status_doctor_unlock_work_for_a_group_member_during_a_sync(
    group_member: tuple[Path, Callable[..., Any]], spawn
) -> None:
    """A group member without write access sees the live lock; unlock says it needs write access."""
    root, cli = group_member
    nightly = {"path": str(root / ".lock"), "file_mode": 0o640, "operation": "nightly"}
    holder = spawn("hold", {**nightly, "heartbeat_s": 0})
    held = holder.expect("held")
    access.give_away(root)
    before = entry_stats(root)

    status = cli("status")
    _no_traceback(status)
    assert status.returncode == 0, status.stderr
    assert f"lock      held: pid {held['pid']} on " in status.stdout
    assert "(nightly)" in status.stdout and "by this machine's clock" in status.stdout

    as_json = cli("status", "--json")
    assert as_json.returncode == 0, as_json.stderr
    lock = json.loads(as_json.stdout)["lock_holder"]
    assert lock["state"] == "held" and lock["token"] == held["token"]
    assert lock["clock"] == "local" and lock["write_access"] is False

    doctor = cli("doctor")
    _no_traceback(doctor)
    assert doctor.returncode == 1  # a held lock is worth reporting
    assert "held-lock" in doctor.stdout and f"held by pid {held['pid']}" in doctor.stdout

    show = cli("unlock")
    _no_traceback(show)
    assert show.returncode == 1
    assert "breaking it needs write access to" in show.stdout

    force = cli("unlock", "--force", "--yes")
    _no_traceback(force)
    assert force.returncode == 1
    assert "breaking the writer lock needs write access to the vault folder" in force.stderr

    forced = cli("unlock", "--force", "--json")
    assert json.loads(forced.stdout)["error"] == "VaultAccessError"

    assert entry_stats(root) == before  # no probe, temp file or claim was left, nothing touched
    holder.send("check")
    assert holder.expect("check")["ours"] is True


def test_another_hosts_lock_is_unknown_without_write_access(
    group_member: tuple[Path, Callable[..., Any]],
) -> None:
    """Another host's lock cannot be judged without the server clock: status says so, no crash."""
    root, cli = group_member
    record = locks.owner_record(host="elsewhere.invalid", boot_id="b", pid_ns="pid:[1]")
    locks.write_lock(root / ".lock", json.dumps(record).encode(), age_s=5 * 3600.0)
    access.give_away(root)

    status = cli("status", "--json")
    _no_traceback(status)
    assert status.returncode == 0, status.stderr
    lock = json.loads(status.stdout)["lock_holder"]
    assert lock["state"].startswith("unknown: cannot judge whether it is stale without write")
    assert lock["host"] == "elsewhere.invalid" and lock["heartbeat_age_s"] > 4 * 3600

    doctor = cli("doctor", "--json")
    _no_traceback(doctor)
    [finding] = [f for f in json.loads(doctor.stdout)["findings"] if f["path"] == ".lock"]
    assert finding["kind"] == "held-lock" and finding["detail"].startswith("unknown: ")


def test_an_owner_record_the_reader_may_not_read_is_reported_not_raised(
    group_member: tuple[Path, Callable[..., Any]],
) -> None:
    """A lock written 0600 (by a writer without group access): status says it cannot read it."""
    root, cli = group_member
    locks.write_lock(root / ".lock", json.dumps(locks.owner_record()).encode())
    os.chmod(root / ".lock", 0o600)
    access.give_away(root)

    status = cli("status", "--json")
    _no_traceback(status)
    assert status.returncode == 0, status.stderr
    lock = json.loads(status.stdout)["lock_holder"]
    assert lock["state"] == "unknown: cannot read the owner record (permission denied)"

    (root / ".lock").unlink()
    os.chmod(root / ".lock.epoch", 0o600)
    free = cli("unlock", "--json")
    assert free.returncode == 0 and json.loads(free.stdout)["state"] == "free", free.stderr


def test_writes_without_write_access_raise_vault_access_error(
    group_member: tuple[Path, Callable[..., Any]], tmp_path: Path
) -> None:
    """A write (tag, creating a vault) by a user who may not write says it needs write access."""
    _root, cli = group_member
    tag = cli("tag", "before-upgrade", "latest", "--json")
    _no_traceback(tag)
    assert json.loads(tag.stdout)["error"] == "VaultAccessError", tag.stdout
    assert "tag before-upgrade" in tag.stderr and "needs write access" in tag.stderr

    empty = tmp_path / "not-mine"
    empty.mkdir(mode=0o755)
    os.chown(empty, access.NOBODY, access.NOBODY)
    create = _run(
        access.DROP,
        "-c",
        "import sys\n"
        "from wrdsvault import Warehouse, WrdsVaultError\n"
        "try:\n"
        f"    Warehouse({str(empty)!r}, create=True)\n"
        "except WrdsVaultError as exc:\n"
        "    print(type(exc).__name__, exc)\n",
    )
    _no_traceback(create)
    assert create.stdout.startswith("VaultAccessError creating a vault needs write access")
    assert os.listdir(empty) == []


def test_read_only_mount_during_a_sync(tmp_path: Path, spawn) -> None:
    """On a read-only mount, status and doctor work while a writer holds the lock; unlock and
    writes say they need write access."""
    root = tmp_path / "vault"
    _make_vault(root)
    ro = access.read_only_mount(root)

    def cli(*argv: str) -> subprocess.CompletedProcess[str]:
        return _run(ro, "-m", "wrdsvault", *argv, "--vault", str(root))

    nightly = {"path": str(root / ".lock"), "file_mode": 0o640, "operation": "nightly"}
    holder = spawn("hold", {**nightly, "heartbeat_s": 0})
    held = holder.expect("held")
    before = entry_stats(root)

    status = cli("status", "--json")
    _no_traceback(status)
    assert status.returncode == 0, status.stderr
    lock = json.loads(status.stdout)["lock_holder"]
    assert lock["state"] == "held" and lock["pid"] == held["pid"] and lock["clock"] == "local"

    doctor = cli("doctor")
    _no_traceback(doctor)
    assert "held-lock" in doctor.stdout

    force = cli("unlock", "--force", "--yes")
    _no_traceback(force)
    assert force.returncode == 1 and "needs write access" in force.stderr
    assert entry_stats(root) == before

    holder.send("release")
    holder.expect("released")
    tag = cli("tag", "v1", "latest")
    _no_traceback(tag)
    assert tag.returncode == 1 and "tag v1 needs write access" in tag.stderr
    assert "Read-only file system" in tag.stderr


def test_probe_and_epoch_files_honour_group_access(tmp_path: Path, spawn) -> None:
    """In a group-access vault the clock probe (made by readers) and the epoch file written by
    `unlock` are group-readable like every other file, whatever the umask."""
    root = tmp_path / "vault"
    Warehouse(root, settings=VaultSettings(group_access=True), create=True).close()
    old_umask = os.umask(0o077)
    try:
        holder = spawn("hold", {"path": str(root / ".lock"), "heartbeat_s": 0})
        holder.expect("held")
        with Warehouse(root) as wh:
            assert wh.lock_info().state == "held"
        assert stat.S_IMODE((root / ".lock.clock").stat().st_mode) == 0o640

        holder.proc.kill()
        holder.wait()
        (root / ".lock.epoch").unlink()
        with Warehouse(root) as wh:
            assert wh.break_lock().broken is True
        assert stat.S_IMODE((root / ".lock.epoch").stat().st_mode) == 0o640
    finally:
        os.umask(old_umask)
