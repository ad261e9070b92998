"""The writer lock: one writer per vault, a complete owner record, recovery from dead owners.

Protocol (see docs/locking.md for the argument):

* Acquire: write the owner record to a private temp file, fsync it, then ``link(temp, .lock)``.
  ``link`` fails with EEXIST when the lock is held, and the name only ever appears with a complete
  record behind it, so no contender judges a half-written record (the NFS-safe create of open(2)).
* Stale: same host (host name, boot id and PID namespace all equal) and the owner process is gone
  or its start time differs (a reused PID). A live owner is never broken. On another host, the lock
  is stale only when its heartbeat (the file's mtime, touched by the holder) is older than
  ``stale_after_s`` (4 hours by default, as ADR-012 says).
* Break: breakers serialise on ``flock`` of a guard file that is never deleted, re-read the lock
  under the guard and remove it only if it is still the same stale incarnation (same token). The
  kernel drops the ``flock`` when a breaker dies, so a breaker killed halfway blocks nobody.
* Fencing: before the commit point the writer checks that ``.lock`` still holds its token and inode.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import secrets
import socket
import time
from datetime import datetime, timezone
from functools import cache
from pathlib import Path
from typing import Any, Final

import psutil

from wrdsvault._storage.atomic import fsync_dir, temp_name
from wrdsvault.errors import LockHeldError

log = logging.getLogger(__name__)

DEFAULT_STALE_AFTER_S: Final = 4 * 3600.0
#: A record that cannot be parsed is treated as held for this long (a manual edit in progress).
UNREADABLE_GRACE_S: Final = 30.0


@cache
def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return f"boot-{psutil.boot_time():.0f}"


@cache
def _pid_namespace() -> str:
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return ""


def process_start(pid: int) -> str | None:
    """A stable start-time token for ``pid``, or None if no such process exists.

    On Linux this is the start time in clock ticks since boot from /proc (immune to wall-clock
    steps, psutil #2526); elsewhere psutil's create_time rounded to 10 ms.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return None
    except OSError:
        stat = ""
    if stat:
        fields = stat[stat.rfind(")") + 2 :].split()
        return f"ticks:{fields[19]}"
    try:
        return f"ct:{psutil.Process(pid).create_time():.2f}"
    except psutil.NoSuchProcess:
        return None
    except psutil.AccessDenied:
        return "unknown"


def own_identity() -> dict[str, Any]:
    """The fields that identify this process to other processes."""
    pid = os.getpid()
    return {
        "pid": pid,
        "start": process_start(pid),
        "host": socket.gethostname(),
        "boot_id": _boot_id(),
        "pid_ns": _pid_namespace(),
    }


def _now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")


def read_record(path: Path) -> tuple[dict[str, Any] | None, os.stat_result | None]:
    """Read a lock file: (record or None if unparseable, stat or None if absent)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return None, None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return None, path.lstat()
        raise
    try:
        st = os.fstat(fd)
        raw = os.read(fd, 65536)
    finally:
        os.close(fd)
    try:
        record = json.loads(raw)
    except ValueError:
        return None, st
    return (record if isinstance(record, dict) else None), st


def staleness(
    record: dict[str, Any] | None, st: os.stat_result, *, stale_after_s: float
) -> str | None:
    """Why the lock described by ``record`` is stale, or None if it must be respected."""
    age = time.time() - st.st_mtime
    if record is None:
        return f"unreadable owner record, {age:.0f} s old" if age > UNREADABLE_GRACE_S else None
    me = own_identity()
    same_host = all(record.get(k) == me[k] for k in ("host", "boot_id", "pid_ns"))
    if same_host:
        pid = record.get("pid")
        if not isinstance(pid, int):
            return "owner record has no pid"
        start = process_start(pid)
        if start is None:
            return f"owner process {pid} is gone"
        if start not in (record.get("start"), "unknown"):
            return f"owner pid {pid} now belongs to another process (start time differs)"
        return None
    if age > stale_after_s:
        return f"no heartbeat from host {record.get('host')!r} for {age:.0f} s"
    return None


class WriterLock:
    """The vault's exclusive writer lock (``<root>/.lock``)."""

    def __init__(
        self,
        path: Path,
        *,
        operation: str,
        file_mode: int = 0o600,
        stale_after_s: float = DEFAULT_STALE_AFTER_S,
    ) -> None:
        self.path = path
        self.guard_path = path.with_name(path.name + ".guard")
        self.operation = operation
        self.file_mode = file_mode
        self.stale_after_s = stale_after_s
        self.token = secrets.token_hex(16)
        self._inode: int | None = None

    @property
    def held(self) -> bool:
        return self._inode is not None

    def acquire(self, *, timeout_s: float = 0.0) -> None:
        """Take the lock, waiting up to ``timeout_s`` with backoff.

        Raises:
            LockHeldError: another live writer kept it for the whole wait.
        """
        deadline = time.monotonic() + timeout_s
        delay = 0.01
        started = time.monotonic()
        while True:
            if self._try_create():
                return
            record, st = read_record(self.path)
            if st is not None:
                why = staleness(record, st, stale_after_s=self.stale_after_s)
                if why is not None:
                    self._break(record, why)
                    continue
            if st is None:
                continue  # released between our link and our read: try again at once
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise LockHeldError(
                    lock_path=str(self.path),
                    holder=record or {},
                    waited_s=time.monotonic() - started,
                )
            time.sleep(min(delay, remaining) * (0.5 + secrets.randbelow(1000) / 1000))
            delay = min(delay * 2, 0.5)

    def _try_create(self) -> bool:
        record = {
            "token": self.token,
            **own_identity(),
            "acquired_at": _now_iso(),
            "operation": self.operation,
            "format": 1,
        }
        tmp = temp_name(self.path)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, self.file_mode)
        try:
            os.fchmod(fd, self.file_mode)
            os.write(fd, json.dumps(record, sort_keys=True).encode())
            os.fsync(fd)
            st = os.fstat(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, self.path)
        except FileExistsError:
            return False
        except FileNotFoundError:
            return False  # our temp record vanished (a recovering writer swept it): try again
        finally:
            tmp.unlink(missing_ok=True)
        fsync_dir(self.path.parent)
        self._inode = st.st_ino
        return True

    def _break(self, seen: dict[str, Any] | None, why: str) -> None:
        fd = os.open(self.guard_path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, self.file_mode)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            record, st = read_record(self.path)
            if st is None:
                return
            # Same incarnation as the one judged stale, and still stale under the guard?
            if (record or {}).get("token") != (seen or {}).get("token"):
                return
            if staleness(record, st, stale_after_s=self.stale_after_s) is None:
                return
            log.warning("breaking stale writer lock %s: %s", self.path, why)
            self.path.unlink(missing_ok=True)
            fsync_dir(self.path.parent)
        finally:
            os.close(fd)  # releases the flock

    def still_ours(self) -> bool:
        """Fencing check: the lock file still carries our token and inode."""
        if self._inode is None:
            return False
        record, st = read_record(self.path)
        return (
            st is not None
            and st.st_ino == self._inode
            and record is not None
            and record.get("token") == self.token
        )

    def heartbeat(self) -> None:
        """Refresh the lock's mtime so hosts that cannot check our PID see us alive."""
        if self._inode is not None:
            with contextlib.suppress(OSError):
                os.utime(self.path)

    def release(self) -> None:
        """Release the lock if it is still ours. Idempotent."""
        if self._inode is None:
            return
        try:
            if self.still_ours():
                self.path.unlink(missing_ok=True)
                fsync_dir(self.path.parent)
        finally:
            self._inode = None
