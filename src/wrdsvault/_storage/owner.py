"""Owner records: the JSON a writer puts in a lock (or claim) file, and how others judge it.

A record is written once, complete, to a private temp file and published by ``link(2)`` (so no
reader sees half of one); it is never rewritten. Its file's mtime is the writer's heartbeat. The
format (docs/locking.md, "The owner record") is `RECORD_FORMAT`: a random ``token`` naming the
incarnation, the writer's `own_identity`, ``acquired_at``, ``operation``, ``epoch``,
``heartbeat_s`` and ``format``.

`staleness` decides whether a record's writer is provably gone (`wrdsvault._storage.identity`
for a writer on this host or of an earlier boot of this machine) or, for another host, has not
beaten for longer than the timeout by the file server's clock (`server_now`).
"""

from __future__ import annotations

import errno
import json
import os
import re
import stat
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Final, TypeGuard

from wrdsvault._storage.atomic import temp_name
from wrdsvault._storage.identity import (
    earlier_boot_death,
    own_identity,
    same_host,
    same_host_death,
)
from wrdsvault._storage.layout import LockFiles

#: Owner record format (1: wrdsvault 0.1, no epoch; 2: epoch and heartbeat_s; 3: machine_id).
RECORD_FORMAT: Final = 3
#: A record that cannot be parsed is treated as held for this long (a manual edit, or a lock file
#: from a tool that writes after O_EXCL); measured on the file server's clock.
UNREADABLE_GRACE_S: Final = 30.0
_TOKEN_RE: Final = re.compile(r"[0-9a-f]{8,64}")


def new_record(*, token: str, operation: str, epoch: int, heartbeat_s: float) -> dict[str, Any]:
    """The owner record of this process for one acquisition (``token``, fencing ``epoch``)."""
    return {
        "token": token,
        **own_identity(),
        "acquired_at": now_iso(),
        "operation": operation,
        "epoch": epoch,
        "heartbeat_s": heartbeat_s,
        "format": RECORD_FORMAT,
    }


def encode_record(record: dict[str, Any]) -> bytes:
    """The bytes of ``record`` as written to disk."""
    return json.dumps(record, sort_keys=True).encode()


def read_record(path: Path) -> tuple[dict[str, Any] | None, os.stat_result | None]:
    """Read a lock file: (record or None if unparseable, stat or None if absent).

    Opening the file revalidates its attributes on NFS (close-to-open), so the mtime is fresh.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return None, None
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # a symlink: judged as an unreadable record
            try:
                return None, path.lstat()
            except FileNotFoundError:
                return None, None
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):  # a folder (or worse) at .lock: an unreadable record
            return None, st
        raw = os.read(fd, 65536)
    finally:
        os.close(fd)
    try:
        record = json.loads(raw)
    except (ValueError, RecursionError):
        return None, st
    return (record if isinstance(record, dict) else None), st


def valid_record(record: dict[str, Any] | None) -> TypeGuard[dict[str, Any]]:
    """Whether ``record`` names its writer (token, positive pid, host): else it is unreadable."""
    if record is None:
        return False
    token, pid = record.get("token"), record.get("pid")
    return (
        isinstance(token, str)
        and _TOKEN_RE.fullmatch(token) is not None
        and isinstance(pid, int)
        and not isinstance(pid, bool)
        and pid > 0
        and isinstance(record.get("host"), str)
    )


def incarnation(record: dict[str, Any] | None, st: os.stat_result) -> str:
    """The name of one incarnation of the lock file: its token, or its inode if it has none."""
    if valid_record(record):
        assert record is not None
        return str(record["token"])
    return f"ino{st.st_ino}"


def record_epoch(record: dict[str, Any] | None) -> int:
    """The fencing epoch a record carries (0: none, or not a positive int)."""
    epoch = (record or {}).get("epoch")
    return epoch if isinstance(epoch, int) and not isinstance(epoch, bool) and epoch > 0 else 0


def server_now(lock_path: Path, *, file_mode: int = 0o600) -> float:
    """The file server's clock: the mtime of a probe file touched just now on the lock's mount.

    Heartbeats are mtimes set by that clock, so ages compare like with like however far the
    clocks of the holder's host and ours drift apart. The shared probe ``.lock.clock`` is created
    with ``file_mode`` (the vault's); if it cannot be touched (another user's, in a group-shared
    vault), a private temp file is created and removed instead.

    Raises:
        OSError: neither can be written (errno in `NO_WRITE_ACCESS`: no write access to the
            vault folder, or a read-only mount), or another I/O error.
    """
    probe = LockFiles(lock_path).clock
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, file_mode)
    except OSError:
        fd = -1
    if fd >= 0:
        try:
            st = os.fstat(fd)
            if st.st_uid == os.geteuid() and stat.S_IMODE(st.st_mode) != file_mode:
                os.fchmod(fd, file_mode)  # umask-proof, and an older probe made with 0600
            os.utime(fd)
            return os.fstat(fd).st_mtime
        except OSError:
            pass  # another user's probe in a group-shared vault: fall back to a private one
        finally:
            os.close(fd)
    private = temp_name(lock_path)
    fd = os.open(private, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, file_mode)
    try:
        return os.fstat(fd).st_mtime
    finally:
        os.close(fd)
        private.unlink(missing_ok=True)


class NoServerClock(Exception):
    """Judging needs the file server's clock, which this process cannot read (no write access)."""


def staleness(
    record: dict[str, Any] | None,
    st: os.stat_result,
    *,
    stale_after_s: float,
    now: Callable[[], float],
) -> str | None:
    """Why the lock described by ``record`` is stale, or None if it must be respected.

    Args:
        record: the parsed owner record (None: unreadable).
        st: the lock file's stat (its mtime is the heartbeat).
        stale_after_s: heartbeat age after which another host's lock is stale.
        now: the file server's current time (called only when the answer depends on it).
    """
    if not valid_record(record):
        age = now() - st.st_mtime
        if age > UNREADABLE_GRACE_S:
            return f"unreadable owner record, {age:.0f} s old"
        return None
    assert record is not None
    if same_host(record):
        return same_host_death(record)
    age = now() - st.st_mtime
    why = earlier_boot_death(record, age)
    if why is not None:
        return why
    if age > stale_after_s:
        where = f"host {record.get('host')!r} (PID namespace {record.get('pid_ns')})"
        return f"no heartbeat from {where} for {age:.0f} s (limit {stale_after_s:g} s)"
    return None


def now_iso() -> str:
    """Now, in UTC, to the microsecond (``acquired_at``)."""
    return datetime.now(timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")


def iso(ts: float) -> str:
    """A POSIX time in UTC, to the second (for humans)."""
    when = datetime.fromtimestamp(ts, timezone.utc)
    return when.isoformat(timespec="seconds").replace("+00:00", "Z")
