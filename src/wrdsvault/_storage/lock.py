"""The writer lock: one writer per vault, a complete owner record, recovery from dead owners.

Protocol (docs/locking.md has the argument why it is correct):

* **Acquire**: write the owner record to a private temp file, fsync it, ``link(temp, .lock)``.
  ``link`` fails with EEXIST while the lock is held, and the name only ever appears with a complete
  record behind it, so no contender judges a half-written record (the NFS-safe O_EXCL of open(2)).
* **Stale**: same host (host name, boot id and PID namespace all equal) and the owner process is
  gone, a zombie, or its start time differs (a reused PID). A live same-host owner is never
  broken. An owner from an earlier boot of this machine (same machine id and host name, another
  boot id, and no heartbeat since before this boot) died with that boot: stale at once. On
  another host the lock is stale only when its heartbeat (the file's mtime, touched by the
  holder) is older than ``stale_after_s`` by the *file server's* clock (the mtime of a probe file
  we touch), never by ours. An unreadable record is held for `UNREADABLE_GRACE_S`.
* **Break** (one winner per stale incarnation): a breaker writes its own record to a temp file
  and links it to ``.lock.claim.<nonce>.<k>`` (nonce = the stale record's token), k = 0, 1, ...; an
  existing claim whose claimer is provably dead is skipped (k + 1), a live one makes us lose. The
  claim winner re-reads ``.lock``: only if it is still the same incarnation (token and inode) and
  still stale does it ``rename(claim, .lock)``, so the name is never empty and the winner holds the
  lock at once. Claims of other incarnations are garbage that the next holder removes. No kernel
  lock is needed, so this also holds on NFS without working ``flock``.
* **Epoch**: each acquisition takes ``max(seen) + 1`` (``.lock.epoch``, never deleted, and any
  record seen), checks after winning that no one persisted that epoch meanwhile, and persists it
  (as the mtime of the empty ``.lock.epoch``: no file's content changes in a session that commits
  nothing).
* **Heartbeat**: a daemon thread ``futimens``-es an fd open on *our* inode every ``heartbeat_s``,
  so it can never refresh a successor's lock; the record itself is never rewritten.
* **Fencing**: before the commit point the writer checks `WriterLock.still_ours` (token and inode).
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import re
import secrets
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import datetime, timezone
from functools import cache
from pathlib import Path
from typing import Any, Final, TypeGuard

import attrs
import psutil

from wrdsvault._storage.atomic import NO_WRITE_ACCESS, fsync_dir, temp_name
from wrdsvault._storage.crashpoints import BreakPoint, breakpoint_hit
from wrdsvault.errors import LockBreakRefusedError, LockHeldError, VaultAccessError
from wrdsvault.reports import LockInfo

log = logging.getLogger(__name__)

#: Heartbeat age after which another host's lock is stale (docs/design/lock.md).
DEFAULT_STALE_AFTER_S: Final = 4 * 3600.0
#: How often a holder touches its lock file.
DEFAULT_HEARTBEAT_S: Final = 60.0
#: A record that cannot be parsed is treated as held for this long (a manual edit, or a lock file
#: from a tool that writes after O_EXCL); measured on the file server's clock.
UNREADABLE_GRACE_S: Final = 30.0
#: Longest sleep between two looks at a held lock.
MAX_BACKOFF_S: Final = 0.5
#: Owner record format (1: wrdsvault 0.1, no epoch; 2: epoch and heartbeat_s; 3: machine_id).
RECORD_FORMAT: Final = 3
#: Files that hold the machine id on Linux (systemd, then D-Bus), first readable one wins.
MACHINE_ID_FILES: Final = ("/etc/machine-id", "/var/lib/dbus/machine-id")
#: More dead claimers than this for one stale incarnation is damage, not a crash.
_MAX_CLAIMS: Final = 64
#: Attempts in a row that found the state changed under them before we back off anyway.
_MAX_IMMEDIATE_RETRIES: Final = 50
_TOKEN_RE: Final = re.compile(r"[0-9a-f]{8,64}")
_MACHINE_ID_RE: Final = re.compile(
    r"[0-9a-f]{32}|[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
)
#: A lock of an earlier boot is broken only after this many of its heartbeat intervals without a
#: beat (besides our uptime): a live clone that shares our machine id beats more often than that.
_EARLIER_BOOT_BEATS: Final = 3
#: ``.lock.epoch``'s mtime is this many seconds (2000-01-01T00:00:00Z) plus the last epoch: a date
#: every file system can store, and a copy that resets mtimes to "now" only makes epochs jump up.
_EPOCH_BASE_S: Final = 946_684_800


class _Again:
    """The lock changed under an attempt: look again at once."""


_AGAIN: Final = _Again()
_HELD: Final = True


# -- process identity (why these proofs: docs/design/lock.md) -------------------------------------


@cache
def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return f"boot-{psutil.boot_time():.0f}"


def _parse_machine_id(text: str) -> str | None:
    """A machine id from the text of a machine-id file (None: empty or not an id)."""
    value = text.strip().lower()
    return value if _MACHINE_ID_RE.fullmatch(value) else None


def _parse_ioreg(text: str) -> str | None:
    """The IOPlatformUUID from ``ioreg -rd1 -c IOPlatformExpertDevice`` output (macOS)."""
    match = re.search(r'"IOPlatformUUID"\s*=\s*"([0-9A-Fa-f-]{36})"', text)
    return match.group(1).lower() if match else None


@cache
def _machine_id() -> str | None:
    """This machine's stable id (survives reboots), or None where there is none.

    Linux: ``/etc/machine-id`` (or the D-Bus copy). macOS: the IOPlatformUUID. Elsewhere, or if
    unreadable: None, and locks of an earlier boot are judged by heartbeat age as on another host.
    """
    for name in MACHINE_ID_FILES:
        try:
            found = _parse_machine_id(Path(name).read_text())
        except (OSError, UnicodeDecodeError):
            continue
        if found is not None:
            return found
    if sys.platform == "darwin":
        try:
            out = subprocess.run(
                ["/usr/sbin/ioreg", "-rd1", "-c", "IOPlatformExpertDevice"],
                capture_output=True,
                text=True,
                timeout=5,
                check=False,
            )
        except (OSError, subprocess.SubprocessError):
            return None
        return _parse_ioreg(out.stdout)
    return None


def _uptime_s() -> float:
    """Seconds since this machine booted, sleep included (by its own clock, not the wall clock)."""
    try:
        return time.clock_gettime(time.CLOCK_BOOTTIME)
    except (AttributeError, OSError):  # not Linux
        return time.time() - psutil.boot_time()


@cache
def _pid_namespace() -> str:
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return ""


def _parse_stat(stat: str) -> tuple[str, str]:
    # comm (field 2) may contain spaces and ")": the fixed fields start after the last ")".
    fields = stat[stat.rfind(")") + 2 :].split()
    return fields[0], fields[19]  # state, starttime (clock ticks since boot)


def process_start(pid: int) -> str | None:
    """A stable start-time token for ``pid``: None if no such process exists (or a zombie).

    On Linux this is the start time in clock ticks since boot from /proc (immune to wall-clock
    steps, psutil #2526); elsewhere psutil's create_time rounded to 10 ms. "unknown" when the
    process exists but cannot be inspected (EPERM is not death): callers must treat it as alive.
    """
    if pid <= 0:
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass  # alive, owned by someone else
    try:
        state, ticks = _parse_stat(Path(f"/proc/{pid}/stat").read_text())
    except FileNotFoundError:
        if Path("/proc/self/stat").exists():
            # Linux, but /proc hides the process (hidepid) or it exited since kill(0).
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return None
            except PermissionError:
                pass
            return "unknown"
        try:
            return f"ct:{psutil.Process(pid).create_time():.2f}"
        except psutil.NoSuchProcess:
            return None
        except psutil.AccessDenied:
            return "unknown"
    except (OSError, IndexError):
        return "unknown"
    if state in ("Z", "X"):
        # Exited, waiting to be reaped: dead, unless a thread-group leader whose threads run on.
        try:
            if len(os.listdir(f"/proc/{pid}/task")) <= 1:
                return None
        except OSError:
            return None
    return f"ticks:{ticks}"


def _own_start() -> str | None:
    # /proc/self, not /proc/<getpid()>: in a PID namespace whose /proc is the parent's, getpid()
    # names another process there.
    try:
        return f"ticks:{_parse_stat(Path('/proc/self/stat').read_text())[1]}"
    except (OSError, IndexError):
        return process_start(os.getpid())


def own_identity() -> dict[str, Any]:
    """The fields that identify this process to other processes."""
    return {
        "pid": os.getpid(),
        "start": _own_start(),
        "host": socket.gethostname(),
        "boot_id": _boot_id(),
        "pid_ns": _pid_namespace(),
        "machine_id": _machine_id(),
    }


def _same_host(record: dict[str, Any]) -> bool:
    me = own_identity()
    return all(record.get(k) == me[k] for k in ("host", "boot_id", "pid_ns"))


def _earlier_boot(record: dict[str, Any]) -> bool:
    """Whether ``record`` was written on this machine (same machine id and host name) in an
    earlier boot: every process of that boot is gone. Records without a machine id (older
    wrdsvault, or a machine without one) are never judged so."""
    me = own_identity()
    machine = record.get("machine_id")
    return (
        isinstance(machine, str)
        and me["machine_id"] is not None
        and machine == me["machine_id"]
        and record.get("host") == me["host"]
        and record.get("boot_id") != me["boot_id"]
    )


def _now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _iso(ts: float) -> str:
    when = datetime.fromtimestamp(ts, timezone.utc)
    return when.isoformat(timespec="seconds").replace("+00:00", "Z")


# -- the files -----------------------------------------------------------------------------------


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


def _valid(record: dict[str, Any] | None) -> TypeGuard[dict[str, Any]]:
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
    if _valid(record):
        assert record is not None
        return str(record["token"])
    return f"ino{st.st_ino}"


def record_epoch(record: dict[str, Any] | None) -> int:
    epoch = (record or {}).get("epoch")
    return epoch if isinstance(epoch, int) and not isinstance(epoch, bool) and epoch > 0 else 0


def read_epoch(path: Path) -> int:
    """The last epoch persisted in ``.lock.epoch`` (0 if none).

    The epoch is the mtime of that empty, never-deleted file, in whole seconds after
    `_EPOCH_BASE_S`; its content never changes, so a writer session that commits nothing leaves
    every file of the vault byte-identical. Opened, not just stat-ed: on NFS, opening revalidates
    the cached attributes (close-to-open).
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return 0
    try:
        seconds = os.fstat(fd).st_mtime_ns // 1_000_000_000
    finally:
        os.close(fd)
    return max(0, int(seconds) - _EPOCH_BASE_S)


def _persist_epoch(path: Path, epoch: int, *, file_mode: int) -> None:
    """Durably raise ``.lock.epoch`` to ``epoch`` (temp file, mtime, fsync, rename, dir fsync).

    A fresh file that we own, not ``utime`` on the old one: setting an explicit mtime needs
    ownership, and in a group-shared vault another member may own the old file.
    """
    if read_epoch(path) >= epoch:
        return  # never lower it (only a holder paused past the timeout could try)
    tmp = temp_name(path)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, file_mode)
    try:
        os.fchmod(fd, file_mode)
        os.utime(fd, (_EPOCH_BASE_S + epoch, _EPOCH_BASE_S + epoch))
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    os.close(fd)
    try:
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


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
    probe = lock_path.with_name(lock_path.name + ".clock")
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


class _NoServerClock(Exception):
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
    if not _valid(record):
        age = now() - st.st_mtime
        if age > UNREADABLE_GRACE_S:
            return f"unreadable owner record, {age:.0f} s old"
        return None
    assert record is not None
    if _same_host(record):
        pid = record["pid"]
        start = process_start(pid)
        if start is None:
            return f"owner process {pid} is gone"
        if start not in (record.get("start"), "unknown"):
            return f"owner pid {pid} now belongs to another process (start time differs)"
        return None
    age = now() - st.st_mtime
    if _earlier_boot(record):
        # Its boot ended before ours began, so its last heartbeat is older than our uptime. A lock
        # that beat since (a clone sharing our machine id, or a boot id that is not stable) is
        # alive somewhere: it falls through to the heartbeat rule. Durations, not instants, are
        # compared, so the skew between the file server's clock and ours does not enter.
        uptime = _uptime_s()
        beat = record.get("heartbeat_s")
        beat_s = float(beat) if isinstance(beat, (int, float)) and beat > 0 else 0.0
        if age > max(uptime, _EARLIER_BOOT_BEATS * beat_s):
            return (
                f"owner pid {record['pid']} ran in an earlier boot of this machine (boot id "
                f"{record.get('boot_id')}); no heartbeat for {age:.0f} s, this boot is "
                f"{uptime:.0f} s old"
            )
    if age > stale_after_s:
        where = f"host {record.get('host')!r} (PID namespace {record.get('pid_ns')})"
        return f"no heartbeat from {where} for {age:.0f} s (limit {stale_after_s:g} s)"
    return None


#: link(2) errors meaning "this file system has no hard links" (FAT, some SMB/CIFS mounts).
_NO_LINKS: Final = frozenset({errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOSYS})


def _publish(temp: _Temp, dst: Path, *, file_mode: int) -> int | None:
    """Make ``dst`` appear with our complete record: its inode, or None if ``dst`` exists.

    ``link(temp, dst)`` publishes the fsynced record in one step. Where the file system has no
    hard links, fall back to O_CREAT|O_EXCL on ``dst`` and write the record into it: a contender
    may then see it empty or torn, which counts as held for `UNREADABLE_GRACE_S`. Never stats
    ``dst`` after a successful link: a claim may be swept by a new holder at any moment.
    """
    try:
        os.link(temp.path, dst)
    except FileExistsError:
        # NFSv2/3: a retransmitted LINK whose first reply was lost fails with EEXIST although it
        # worked; open(2) says to check the link count (we check that dst is our inode).
        try:
            return temp.ino if os.stat(dst).st_ino == temp.ino else None
        except OSError:
            return None
    except FileNotFoundError:
        return None  # our temp record was swept (by recovery, as garbage): try again
    except OSError as exc:
        if exc.errno not in _NO_LINKS:
            raise
        return _create_exclusive(dst, temp.data, file_mode=file_mode)
    return temp.ino


def _create_exclusive(dst: Path, data: bytes, *, file_mode: int) -> int | None:
    try:
        fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, file_mode)
    except FileExistsError:
        return None
    try:
        os.fchmod(fd, file_mode)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
        return os.fstat(fd).st_ino
    finally:
        os.close(fd)


def _unlink_if_inode(path: Path, ino: int) -> None:
    with contextlib.suppress(OSError):
        if os.stat(path, follow_symlinks=False).st_ino == ino:
            path.unlink()


# -- the lock ------------------------------------------------------------------------------------


@attrs.frozen
class _Temp:
    """Our owner record, written and fsynced to a private temp file."""

    path: Path
    data: bytes
    ino: int


class WriterLock:
    """The vault's exclusive writer lock (``<root>/.lock``).

    Attributes:
        token: the nonce of the current (or last) acquisition; new on every `acquire`.
        epoch: the fencing epoch of the current acquisition (strictly increasing per vault).
        broke: why the lock this acquisition replaced was stale (None: it was free).
    """

    def __init__(
        self,
        path: Path,
        *,
        operation: str,
        file_mode: int = 0o600,
        stale_after_s: float = DEFAULT_STALE_AFTER_S,
        heartbeat_s: float = DEFAULT_HEARTBEAT_S,
    ) -> None:
        self.path = path
        self.epoch_path = path.with_name(path.name + ".epoch")
        self.operation = operation
        self.file_mode = file_mode
        self.stale_after_s = stale_after_s
        self.heartbeat_s = heartbeat_s
        self.token = secrets.token_hex(16)
        self.epoch: int | None = None
        self.broke: str | None = None
        self._inode: int | None = None
        self._fd: int | None = None
        self._fd_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._seen_epoch = 0

    def __repr__(self) -> str:
        state = f"held, epoch {self.epoch}" if self.held else "not held"
        return f"WriterLock({str(self.path)!r}, {state})"

    @property
    def held(self) -> bool:
        return self._inode is not None

    def _now(self) -> float:
        return server_now(self.path, file_mode=self.file_mode)

    def _stale(self, record: dict[str, Any] | None, st: os.stat_result) -> str | None:
        return staleness(record, st, stale_after_s=self.stale_after_s, now=self._now)

    def _claim_path(self, nonce: str, k: int) -> Path:
        return self.path.with_name(f"{self.path.name}.claim.{nonce}.{k}")

    # -- acquiring ---------------------------------------------------------------------------

    def acquire(self, *, timeout_s: float = 0.0) -> None:
        """Take the lock, waiting up to ``timeout_s`` with jittered exponential backoff.

        Raises:
            LockHeldError: another live writer (or a live breaker of a stale lock) kept it for the
                whole wait; ``holder`` is its owner record.
            RuntimeError: this object already holds the lock.
        """
        if self.held:
            msg = f"{self.path} is already held by this WriterLock"
            raise RuntimeError(msg)
        self.token = secrets.token_hex(16)
        self.broke = None
        started = time.monotonic()
        deadline = started + timeout_s
        delay = 0.01
        immediate = 0
        holder: dict[str, Any] = {}
        while True:
            outcome = self._attempt()
            if outcome is _HELD:
                self._start_heartbeat()
                return
            if isinstance(outcome, dict):
                holder = outcome
            elif immediate < _MAX_IMMEDIATE_RETRIES:
                immediate += 1
                continue
            immediate = 0
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise LockHeldError(
                    lock_path=str(self.path), holder=holder, waited_s=time.monotonic() - started
                )
            time.sleep(min(delay, remaining) * (0.5 + secrets.randbelow(1000) / 1000))
            delay = min(delay * 2, MAX_BACKOFF_S)

    def _attempt(self) -> bool | _Again | dict[str, Any]:
        """One look at the lock: _HELD, _AGAIN, or the record of whoever keeps us out."""
        record, st = read_record(self.path)
        if st is None:
            epoch = self._next_epoch(None)
            temp = self._write_temp(epoch)
            try:
                ino = _publish(temp, self.path, file_mode=self.file_mode)
                if ino is not None:
                    return self._won(ino, epoch, broke=False)
            finally:
                temp.path.unlink(missing_ok=True)
            return _AGAIN
        self._seen_epoch = max(self._seen_epoch, record_epoch(record))
        why = self._stale(record, st)
        if why is None:
            return record if _valid(record) else {"unreadable": True, **(record or {})}
        return self._break(record, st, why)

    def _next_epoch(self, record: dict[str, Any] | None) -> int:
        return max(read_epoch(self.epoch_path), self._seen_epoch, record_epoch(record)) + 1

    def _write_temp(self, epoch: int) -> _Temp:
        """Write our full owner record to a fresh, fsynced temp file."""
        record = {
            "token": self.token,
            **own_identity(),
            "acquired_at": _now_iso(),
            "operation": self.operation,
            "epoch": epoch,
            "heartbeat_s": self.heartbeat_s,
            "format": RECORD_FORMAT,
        }
        data = json.dumps(record, sort_keys=True).encode()
        tmp = temp_name(self.path)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, self.file_mode)
        try:
            os.fchmod(fd, self.file_mode)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
            ino = os.fstat(fd).st_ino
        except BaseException:
            os.close(fd)
            tmp.unlink(missing_ok=True)
            raise
        os.close(fd)
        return _Temp(path=tmp, data=data, ino=ino)

    def _break(
        self, record: dict[str, Any] | None, st: os.stat_result, why: str, *, force: bool = False
    ) -> bool | _Again | dict[str, Any]:
        """Replace the stale incarnation at ``.lock`` by ours, unless another breaker wins."""
        breakpoint_hit(BreakPoint.STALE_JUDGED)
        nonce = incarnation(record, st)
        epoch = self._next_epoch(record)
        temp = self._write_temp(epoch)
        try:
            breakpoint_hit(BreakPoint.CLAIM_WRITTEN)
            claimed = self._claim(temp, nonce, force=force)
            if not isinstance(claimed, tuple):
                return claimed
            claim, ino = claimed
            breakpoint_hit(BreakPoint.CLAIM_LINKED)
            now, now_st = read_record(self.path)
            if now_st is None or now_st.st_ino != st.st_ino or incarnation(now, now_st) != nonce:
                _unlink_if_inode(claim, ino)  # another breaker replaced it, or it was released
                return _AGAIN
            if not force and self._stale(now, now_st) is None:
                _unlink_if_inode(claim, ino)  # a paused foreign holder came back and heartbeat
                return now if _valid(now) else {"unreadable": True}
            breakpoint_hit(BreakPoint.CLAIM_VERIFIED)
            try:
                os.replace(claim, self.path)
            except FileNotFoundError:
                # NFS: a retransmitted RENAME whose first reply was lost fails although it worked.
                try:
                    installed = os.stat(self.path).st_ino == ino
                except OSError:
                    installed = False
                if not installed:
                    return _AGAIN
            breakpoint_hit(BreakPoint.RECORD_INSTALLED)
            try:
                fsync_dir(self.path.parent)
            except BaseException:
                self._give_back(ino)
                raise
            breakpoint_hit(BreakPoint.DIR_FSYNCED)
            log.warning("broke the writer lock %s: %s", self.path, why)
            self.broke = why
            return self._won(ino, epoch, broke=True)
        finally:
            temp.path.unlink(missing_ok=True)

    def break_by_hand(
        self, record: dict[str, Any] | None, st: os.stat_result, *, why: str
    ) -> dict[str, Any]:
        """Take over the incarnation ``(record, st)`` for a human who vouched its owner is gone.

        The claim protocol of an automatic break, except that the lock need not be stale and
        live claimers on other hosts are stepped over (see `break_lock`, which checks the
        owner first). Afterwards `held` says whether this lock now holds it.

        Returns:
            The record of the live breaker or holder that keeps us out; ``{}`` when we hold the
            lock or it changed under us (look again).
        """
        outcome = self._break(record, st, why, force=True)
        return outcome if isinstance(outcome, dict) else {}

    def _claim(
        self, temp: _Temp, nonce: str, *, force: bool
    ) -> tuple[Path, int] | _Again | dict[str, Any]:
        """Link our record to the first free claim of ``nonce`` past provably dead claimers."""
        k = 0
        vanished = 0
        while k < _MAX_CLAIMS:
            claim = self._claim_path(nonce, k)
            ino = _publish(temp, claim, file_mode=self.file_mode)
            if ino is not None:
                return claim, ino
            crecord, cst = read_record(claim)
            if cst is None:
                vanished += 1  # installed or swept since our link: look at it again
                if vanished > 3:
                    return _AGAIN
                continue
            if (crecord or {}).get("token") == self.token:
                _unlink_if_inode(claim, cst.st_ino)  # ours, left by an attempt that raised
                continue
            alive = self._stale(crecord, cst) is None
            if alive and force:
                # A human breaking by hand cannot wait hours for a foreign claimer's timeout;
                # a live claimer on this host, or one still writing its record, goes on.
                alive = not _valid(crecord) or _same_host(crecord or {})
            if alive:
                return {**(crecord or {"unreadable": True}), "state": "breaking a stale lock"}
            breakpoint_hit(BreakPoint.DEAD_CLAIM_SKIPPED)
            k += 1
        return {"state": f"more than {_MAX_CLAIMS} dead breakers of one stale lock"}

    def _won(self, ino: int, epoch: int, *, broke: bool) -> bool | _Again:
        """``.lock`` names our inode: check the epoch is fresh, persist it, sweep old claims."""
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError:
            return _AGAIN
        if os.fstat(fd).st_ino != ino:
            os.close(fd)
            return _AGAIN
        try:
            persisted = read_epoch(self.epoch_path)
            if persisted >= epoch:
                # Someone took and released the lock with this epoch between our read of
                # .lock.epoch and our link. An epoch must never repeat: give this incarnation
                # back and take another.
                os.close(fd)
                self._seen_epoch = max(self._seen_epoch, persisted)
                self._give_back(ino)
                return _AGAIN
            self._fd = fd
            self._inode = ino
            self.epoch = epoch
            _persist_epoch(self.epoch_path, epoch, file_mode=self.file_mode)
            if broke:
                breakpoint_hit(BreakPoint.EPOCH_PERSISTED)
            self._sweep_claims()
        except BaseException:
            # ENOSPC, EIO, ...: the caller will not know it holds the lock, so do not keep it.
            if self._fd is None:
                with contextlib.suppress(OSError):
                    os.close(fd)
            self.release()
            self._give_back(ino)
            raise
        if broke:
            breakpoint_hit(BreakPoint.CLAIMS_REMOVED)
        return _HELD

    def _give_back(self, ino: int) -> None:
        """Remove ``.lock`` if it is our incarnation (token and inode)."""
        record, st = read_record(self.path)
        if st is not None and st.st_ino == ino and (record or {}).get("token") == self.token:
            self.path.unlink(missing_ok=True)
            fsync_dir(self.path.parent)

    def _sweep_claims(self) -> None:
        """Remove claims of incarnations other than ours: no breaker of those can win any more."""
        prefix = f"{self.path.name}.claim."
        with os.scandir(self.path.parent) as entries:
            names = [e.name for e in entries if e.name.startswith(prefix)]
        for name in names:
            if name[len(prefix) :].rsplit(".", 1)[0] != self.token:
                (self.path.parent / name).unlink(missing_ok=True)

    # -- holding -----------------------------------------------------------------------------

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
        """Refresh our lock file's mtime so hosts that cannot check our PID see us alive.

        Touches our own inode through an open fd, never the name: a holder whose lock was taken
        over cannot refresh its successor's lock.
        """
        with self._fd_lock:
            if self._fd is not None:
                with contextlib.suppress(OSError):
                    os.utime(self._fd)

    def _start_heartbeat(self) -> None:
        if self.heartbeat_s <= 0:
            return
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._heartbeat_loop,
            name=f"wrdsvault-lock-heartbeat-{self.token[:8]}",
            daemon=True,
        )
        self._thread.start()

    def _heartbeat_loop(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            try:
                ours = self.still_ours()
            except OSError:
                ours = True  # cannot tell (e.g. an NFS hiccup): keep beating our own inode
            if not ours:
                log.error(
                    "the writer lock %s was taken over by another process (this one was paused "
                    "past the stale-lock timeout); its commit will be refused",
                    self.path,
                )
                return
            self.heartbeat()

    def release(self) -> None:
        """Stop the heartbeat and remove the lock if it is still ours. Idempotent."""
        if self._inode is None:
            return
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=max(5.0, 2 * self.heartbeat_s))
            self._thread = None
        with self._fd_lock:
            if self._fd is not None:
                # Close before unlinking: on NFS an open file that is unlinked is silly-renamed.
                os.close(self._fd)
                self._fd = None
        try:
            if self.still_ours():
                self.path.unlink(missing_ok=True)
                try:
                    fsync_dir(self.path.parent)
                except OSError as exc:
                    # The work is done (committed or rolled back); if the removal is lost in a
                    # crash, the next writer finds a dead owner's lock and breaks it at once.
                    log.warning("could not make the release of %s durable: %s", self.path, exc)
        finally:
            self._inode = None

    def __enter__(self) -> WriterLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


# -- for the CLI ---------------------------------------------------------------------------------


def describe_lock(
    path: Path, *, stale_after_s: float = DEFAULT_STALE_AFTER_S, file_mode: int = 0o600
) -> LockInfo | None:
    """Describe the writer lock at ``path`` for a human (``wrdsvault status`` / ``unlock``).

    Needs no write access: without it (a member of the vault's group, a read-only mount) the
    file server's clock cannot be probed, so ``heartbeat_age_s`` is measured by this machine's
    clock (``clock``: ``"local"``) and a lock whose staleness depends on its age (another host's,
    an earlier boot's, an unreadable record) has ``state`` ``"unknown: ..."``.

    Args:
        path: the lock file (``<root>/.lock``).
        stale_after_s: heartbeat age after which another host's lock is stale.
        file_mode: mode of the clock probe file if this call creates it (the vault's file mode).

    Returns:
        None if the folder holding ``path`` does not exist; otherwise a `LockInfo` whose
        ``state`` is ``"free"``, ``"held"``, ``"stale: <why>"`` or ``"unknown: <why>"``.
    """
    path = Path(path)
    if not path.parent.is_dir():
        return None
    epoch_path = path.with_name(path.name + ".epoch")
    try:
        record, st = read_record(path)
    except PermissionError:
        # Written by a writer whose files this user may not read (another user, without group
        # access): it exists, but whose it is and whether it is stale cannot be told here.
        st = path.lstat()
        return LockInfo(
            state="unknown: cannot read the owner record (permission denied)",
            path=str(path),
            unreadable=True,
            heartbeat_at=_iso(st.st_mtime),
            heartbeat_age_s=round(time.time() - st.st_mtime, 3),
            clock="local",
            write_access=os.access(path.parent, os.W_OK),
            incarnation=f"ino{st.st_ino}",
        )
    if st is None:
        try:
            last_epoch = read_epoch(epoch_path)
        except PermissionError:  # another user's file: its mtime is all we need
            last_epoch = max(0, int(epoch_path.stat().st_mtime) - _EPOCH_BASE_S)
        return LockInfo(state="free", path=str(path), last_epoch=last_epoch)
    server: float | None
    try:
        server = server_now(path, file_mode=file_mode)
    except OSError as exc:
        if exc.errno not in NO_WRITE_ACCESS:
            raise
        server = None

    def judge_now() -> float:
        if server is None:
            raise _NoServerClock
        return server

    try:
        why = staleness(record, st, stale_after_s=stale_after_s, now=judge_now)
        state = "held" if why is None else f"stale: {why}"
    except _NoServerClock:
        state = (
            f"unknown: cannot judge whether it is stale without write access to {path.parent} "
            "(the age of another host's lock is measured by the file server's clock, read by "
            "touching a file there)"
        )
    now = time.time() if server is None else server
    valid = _valid(record)
    nonce = incarnation(record, st)
    prefix = f"{path.name}.claim.{nonce}."
    with os.scandir(path.parent) as entries:
        breakers = sorted(e.name for e in entries if e.name.startswith(prefix))
    return LockInfo(
        state=state,
        path=str(path),
        owner=record if valid and record is not None else {},
        unreadable=not valid,
        same_host=valid and _same_host(record or {}),
        heartbeat_at=_iso(st.st_mtime),
        heartbeat_age_s=round(now - st.st_mtime, 3),
        clock="local" if server is None else "server",
        write_access=server is not None,
        incarnation=nonce,
        breakers=tuple(breakers),
    )


def break_lock(
    path: Path,
    *,
    allow_live: bool = False,
    expect_token: str | None = None,
    stale_after_s: float = DEFAULT_STALE_AFTER_S,
    timeout_s: float = 2.0,
    file_mode: int = 0o600,
) -> LockInfo:
    """Break the writer lock by hand, after the caller has shown its owner to a human.

    The lock is broken with the same claim protocol as an automatic break (so it never races a
    breaker or a new holder), then released. A lock of another host younger than the heartbeat
    timeout is broken (the human vouches that its writer is gone); a live owner on this host is
    refused unless ``allow_live`` (its commit will then be refused by fencing).

    Args:
        path: the lock file (``<root>/.lock``).
        allow_live: also break a lock whose owner is a live process on this host.
        expect_token: break only this incarnation (the ``token`` shown to the human); if the lock
            changed since, refuse rather than break a lock nobody has looked at.
        stale_after_s: the heartbeat timeout used to describe the lock.
        timeout_s: how long to wait for a breaker that is working on the same lock right now.
        file_mode: the vault's file mode, for the files the break writes (claim, epoch).

    Returns:
        `describe_lock` of the lock that was broken (``state`` says why it was or was not stale)
        with ``broken`` True; or a free `LockInfo` with ``broken`` False if there was no lock.

    Raises:
        VaultAccessError: this process may not write the vault folder (breaking writes files
            there); nothing was changed.
        LockBreakRefusedError: the owner is alive on this host, or the lock changed since it was
            shown, or its staleness cannot be judged here, or another process kept breaking it
            for ``timeout_s``.
    """
    path = Path(path)
    deadline = time.monotonic() + timeout_s
    while True:
        shown = describe_lock(path, stale_after_s=stale_after_s, file_mode=file_mode)
        if shown is None or shown.free:
            if expect_token is not None:
                raise _changed(path, expect_token, shown)
            return attrs.evolve(shown or LockInfo(state="free", path=str(path)), broken=False)
        if expect_token is not None and shown.incarnation != expect_token:
            raise _changed(path, expect_token, shown)
        if not shown.write_access:
            raise _no_write_access(
                path, "a probe file to read the file server's clock; nothing was changed"
            )
        if shown.state.startswith("unknown"):
            raise LockBreakRefusedError(
                lock_path=str(path),
                holder=shown.to_json(),
                reason=f"{shown.state}. Run `wrdsvault unlock` as the user who owns the vault",
            )
        if shown.state == "held" and shown.same_host and not allow_live:
            raise LockBreakRefusedError(
                lock_path=str(path),
                holder=shown.to_json(),
                reason=f"its owner, pid {shown.pid} ({shown.operation}, since "
                f"{shown.acquired_at}), is alive on this host. Stop that process first",
            )
        record, st = read_record(path)
        if st is None:
            continue
        if expect_token is not None and incarnation(record, st) != expect_token:
            raise _changed(
                path,
                expect_token,
                describe_lock(path, stale_after_s=stale_after_s, file_mode=file_mode),
            )
        breaker = WriterLock(
            path,
            operation="wrdsvault unlock",
            file_mode=file_mode,
            stale_after_s=stale_after_s,
            heartbeat_s=0,
        )
        try:
            blocker = breaker.break_by_hand(record, st, why=f"broken by hand: {shown.state}")
        except OSError as exc:
            if exc.errno in NO_WRITE_ACCESS:
                raise _no_write_access(path, str(exc)) from exc
            raise
        if breaker.held:
            breaker.release()
            log.warning("broke the writer lock %s by hand: %s", path, shown.to_json())
            return attrs.evolve(shown, broken=True)
        if time.monotonic() >= deadline:
            raise LockBreakRefusedError(
                lock_path=str(path),
                holder=blocker,
                reason=f"another process is breaking or taking it right now "
                f"({blocker.get('state', 'held')}, pid {blocker.get('pid')}); run `wrdsvault "
                "status` and try again",
            )
        time.sleep(0.05 if blocker else 0.005)


def _no_write_access(path: Path, reason: str) -> VaultAccessError:
    return VaultAccessError(
        path=str(path.parent),
        operation="breaking the writer lock",
        reason=f"could not write {reason}",
    )


def _changed(path: Path, token: str, now: LockInfo | None) -> LockBreakRefusedError:
    return LockBreakRefusedError(
        lock_path=str(path),
        holder=now.to_json() if now else {},
        reason=f"it changed since it was shown (expected token {token}, now "
        f"{now.state if now else 'free'}, token {now.token if now else None}). Look at it again",
    )
