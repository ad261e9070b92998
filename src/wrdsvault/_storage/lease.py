"""Reader leases: every open snapshot says so on disk, so that gc never deletes what it reads.

One small file per open snapshot, ``leases/<snapshot id>.<token>.json`` (docs/format.md), holds
the identity of the process that opened it (host, boot id, machine id, PID namespace, pid and
process start time: the writer lock's owner identity) and the snapshot id. Protocol
(docs/retention.md has the argument):

* **Take**: write the record to a temp file in ``leases/``, fsync it, rename it to its unique
  name, fsync ``leases/``. Durable and visible before `take_lease` returns; only then does the
  reader check that the snapshot is still committed. gc writes its expiry record before it reads
  the leases, so of a reader and a gc that race, one of them sees the other.
* **Refresh**: one daemon thread per process touches the mtime of every lease it holds every
  ``refresh_s`` (the file server sets the time, as for the lock's heartbeat). A lease removed
  under a live reader (swept by hand, or judged dead while its host was paused past the grace)
  is written again and a warning logged.
* **Release**: `Lease.release`, on ``Snapshot.close()`` (or when the last query that still runs
  on a closed snapshot ends), when the `Lease` is garbage-collected, and at interpreter exit
  (``weakref.finalize``). A process killed with SIGKILL leaves its lease behind, and that lease
  is provably dead.
* **Judge**: a lease protects its snapshot unless its owner is provably dead, by the writer
  lock's rules and code (`owner.staleness`): same host (host name, boot id, PID namespace) and the
  pid is gone, a zombie, or has another start time; an earlier boot of this machine; or, on
  another host, no refresh for ``stale_after_s`` by the file server's clock. An unreadable lease
  file protects the snapshot its name names for `owner.UNREADABLE_GRACE_S`.

No crash point: taking or releasing a lease changes no committed record (HEAD, manifests, tags,
data). A crash at any step leaves either no lease (the reader never started reading), a temp
file (garbage after a grace), or the lease of a dead process (judged dead, swept).
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import secrets
import stat
import threading
import time
import weakref
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Final

import attrs

from wrdsvault._storage.atomic import NO_WRITE_ACCESS, atomic_write_bytes, fsync_dir, make_dirs
from wrdsvault._storage.identity import own_identity
from wrdsvault._storage.layout import LEASE_NAME_RE, Layout
from wrdsvault._storage.owner import read_record, server_now, staleness

__all__ = [
    "DEFAULT_REFRESH_S",
    "DEFAULT_STALE_AFTER_S",
    "Lease",
    "LeaseState",
    "held_snapshot_ids",
    "scan_leases",
    "sweep_dead_leases",
    "take_lease",
    "try_take_lease",
]

log = logging.getLogger(__name__)

#: How often a reader touches its leases.
DEFAULT_REFRESH_S: Final = 60.0
#: Refresh age after which another host's lease no longer counts (the writer lock's 4 h: a host
#: paused for less, a suspended laptop or a VM being migrated, still finds its files on waking).
DEFAULT_STALE_AFTER_S: Final = 4 * 3600.0
#: Lease record format.
RECORD_FORMAT: Final = 1
#: The name of the refresh thread (one per process, whatever the number of leases).
THREAD_NAME: Final = "wrdsvault-lease-refresh"


def _remove(path: Path, pid: int) -> None:
    """Remove a lease file, only in the process that took it (a forked child inherits the object,
    not the lease). Not fsynced: a removal lost in a crash leaves the lease of a dead process."""
    if os.getpid() == pid:
        with contextlib.suppress(OSError):
            path.unlink(missing_ok=True)


class Lease:
    """One open snapshot's reader lease (``leases/<snapshot id>.<token>.json``).

    Attributes:
        snapshot_id: the snapshot it protects.
        path: the lease file.
        refresh_s: how often the process's refresh thread touches it.
    """

    def __init__(
        self, path: Path, snapshot_id: str, data: bytes, *, file_mode: int, refresh_s: float
    ) -> None:
        self.path = path
        self.snapshot_id = snapshot_id
        self.refresh_s = refresh_s
        self._data = data
        self._file_mode = file_mode
        self._pid = os.getpid()
        self._next = time.monotonic() + refresh_s
        self._released = False
        self._lock = threading.Lock()  # a refresh that writes the file again vs. release
        self._finalizer = weakref.finalize(self, _remove, path, self._pid)

    def __repr__(self) -> str:
        state = "released" if self._released else "held"
        return f"Lease({self.snapshot_id!r}, {state})"

    @property
    def released(self) -> bool:
        return self._released

    def refresh(self) -> None:
        """Touch the lease file's mtime (the file server's clock); write it again if it vanished."""
        with self._lock:
            if not self._released and os.getpid() == self._pid:
                self._refresh()

    def _refresh(self) -> None:
        try:
            os.utime(self.path)
        except FileNotFoundError:
            log.warning(
                "the reader lease %s was removed while snapshot %s is still open (judged dead "
                "by another process, or deleted by hand); writing it again. Files gc deleted "
                "meanwhile are lost to this reader",
                self.path,
                self.snapshot_id,
            )
            try:
                _write(self.path, self._data, file_mode=self._file_mode)
            except OSError as exc:
                log.warning("could not write the reader lease %s again: %s", self.path, exc)
        except OSError as exc:  # an NFS hiccup: the next refresh tries again
            log.debug("could not refresh the reader lease %s: %s", self.path, exc)

    def release(self) -> None:
        """Remove the lease file and stop refreshing it. Idempotent; never raises."""
        if os.getpid() != self._pid:
            # A forked child's copy: not its lease (and the lock may have been copied held).
            self._released = True
            return
        with self._lock:
            if self._released:
                return
            self._released = True
            self._finalizer()
        _REFRESHER.remove(self)


def _write(path: Path, data: bytes, *, file_mode: int) -> None:
    """Put ``data`` at ``path`` durably: temp file, fsync, rename, fsync of the folder."""
    atomic_write_bytes(path, data, mode=file_mode)


def take_lease(
    layout: Layout, snapshot_id: str, *, file_mode: int, dir_mode: int, refresh_s: float
) -> Lease:
    """Take a reader lease on ``snapshot_id``: durable (file and folder fsynced) on return.

    Args:
        layout: the vault.
        snapshot_id: the snapshot to protect (validated).
        file_mode: the vault's file mode; ``dir_mode``: its folder mode (for ``leases/``).
        refresh_s: how often the process's refresh thread touches the lease (> 0).

    Raises:
        InvalidNameError: ``snapshot_id`` is malformed.
        ValueError: ``refresh_s`` is not > 0.
        OSError: the lease could not be written (errno in `NO_WRITE_ACCESS`: the process may not
            write the vault; ENOSPC, EIO, ...); no lease file is left.
    """
    if not refresh_s > 0:
        msg = f"refresh_s must be > 0, got {refresh_s!r}"
        raise ValueError(msg)
    token = secrets.token_hex(16)
    path = layout.lease(snapshot_id, token)
    record = {
        "kind": "reader-lease",
        "format": RECORD_FORMAT,
        "snapshot_id": snapshot_id,
        "token": token,
        **own_identity(),
        "created_at": datetime.now(timezone.utc)
        .isoformat(timespec="seconds")
        .replace("+00:00", "Z"),
        "refresh_s": refresh_s,
    }
    data = json.dumps(record, sort_keys=True).encode()
    make_dirs(layout.leases_dir, mode=dir_mode)
    _write(path, data, file_mode=file_mode)
    lease = Lease(path, snapshot_id, data, file_mode=file_mode, refresh_s=refresh_s)
    _REFRESHER.add(lease)
    return lease


_warned: set[tuple[str, int]] = set()
_warned_lock = threading.Lock()


def try_take_lease(
    layout: Layout, snapshot_id: str, *, file_mode: int, dir_mode: int, refresh_s: float
) -> Lease | None:
    """`take_lease`, or None (and a warning, once per vault and reason) if it cannot be written.

    A reader without write access to the vault (a member of its group, a read-only mount), or
    on a full disk, still reads; it is not protected from gc (docs/retention.md).
    """
    try:
        return take_lease(
            layout, snapshot_id, file_mode=file_mode, dir_mode=dir_mode, refresh_s=refresh_s
        )
    except OSError as exc:
        key = (str(layout.root), exc.errno or 0)
        with _warned_lock:
            first = key not in _warned
            _warned.add(key)
        if first:
            why = (
                "this process may not write the vault"
                if exc.errno in NO_WRITE_ACCESS
                else f"{errno.errorcode.get(exc.errno or 0, 'error')}: {exc.strerror or exc}"
            )
            log.warning(
                "cannot take a reader lease in %s (%s): snapshots opened by this process are "
                "read without one, so `wrdsvault gc` run meanwhile may delete files they read",
                layout.leases_dir,
                why,
            )
        return None


# -- the refresh thread ------------------------------------------------------------------------


class _Refresher:
    """The one thread per process that refreshes every lease the process holds.

    Holds its leases weakly: a `Lease` nobody references any more is finalized (its file
    removed), not kept alive by the refresher. The thread ends when the last lease is released
    and starts again with the next one.
    """

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self._cond = threading.Condition()
        self._leases: weakref.WeakSet[Lease] = weakref.WeakSet()
        self._thread: threading.Thread | None = None

    def add(self, lease: Lease) -> None:
        with self._cond:
            self._leases.add(lease)
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name=THREAD_NAME, daemon=True)
                self._thread.start()
            self._cond.notify_all()

    def remove(self, lease: Lease) -> None:
        with self._cond:
            self._leases.discard(lease)
            self._cond.notify_all()

    def threads(self) -> int:
        """How many refresh threads run (0 or 1; for tests and diagnostics)."""
        with self._cond:
            return int(self._thread is not None and self._thread.is_alive())

    def _loop(self) -> None:
        while True:
            with self._cond:
                leases = list(self._leases)
                if not leases:
                    self._thread = None
                    return
                now = time.monotonic()
                due = [lease for lease in leases if lease._next <= now]
                wait = min(lease._next for lease in leases) - now
                del leases  # no strong reference while waiting: a dropped Lease is finalized
                if not due:
                    self._cond.wait(timeout=wait)
                    continue  # look again: leases may have come or gone
            for lease in due:
                lease._next = now + lease.refresh_s
                lease.refresh()
            del due, lease


_REFRESHER: Final = _Refresher()
if hasattr(os, "register_at_fork"):
    # A forked child holds none of its parent's leases, and has no refresh thread.
    os.register_at_fork(after_in_child=_REFRESHER._reset)


# -- judging -----------------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class LeaseState:
    """One lease file as judged now.

    Attributes:
        path: the lease file.
        snapshot_id: the snapshot it protects (from its name, which the record must match).
        record: the parsed record (None: unreadable, or not matching its name).
        dead: why its owner is provably gone (None: it protects its snapshot).
        refreshed_at: the file's mtime (its last refresh), seconds since the epoch.
        unknown: why it could not be judged (it counts as held), if so.
    """

    path: Path
    snapshot_id: str
    record: dict[str, Any] | None
    dead: str | None
    refreshed_at: float
    unknown: str | None = None

    @property
    def held(self) -> bool:
        return self.dead is None


def _judge_record(
    record: dict[str, Any] | None, snapshot_id: str, token: str
) -> dict[str, Any] | None:
    """The record as `owner.staleness` judges it, or None if it does not match its file name."""
    if record is None or record.get("snapshot_id") != snapshot_id or record.get("token") != token:
        return None
    refresh = record.get("refresh_s")
    # staleness() reads an earlier boot's heartbeat interval from "heartbeat_s".
    return {**record, "heartbeat_s": refresh if isinstance(refresh, (int, float)) else 0.0}


def _vault_file_mode(layout: Layout) -> int:
    """The vault's file mode, as ``vault.json`` was created with it (0o600 if unknown)."""
    try:
        return stat.S_IMODE(layout.vault_json.stat().st_mode) & 0o666 or 0o600
    except OSError:
        return 0o600


class _NoClock(Exception):
    """The file server's clock cannot be read (no write access)."""


def scan_leases(
    layout: Layout,
    *,
    stale_after_s: float,
    file_mode: int | None = None,
    now: Callable[[], float] | None = None,
) -> list[LeaseState]:
    """Every lease file under ``leases/``, judged, by file name.

    Files whose name is not a lease name (temp files, strangers) are left out.

    Args:
        layout: the vault.
        stale_after_s: refresh age after which another host's lease is dead.
        file_mode: mode of the clock probe if this call creates it (default: vault.json's).
        now: the file server's clock (default: `owner.server_now`, read only if a lease's
            judgement depends on it). Without write access it cannot be read: such leases count
            as held, with ``unknown`` saying why.
    """
    try:
        names = sorted(os.listdir(layout.leases_dir))
    except (FileNotFoundError, NotADirectoryError):
        return []
    mode = _vault_file_mode(layout) if file_mode is None else file_mode
    clock: list[float] = []

    def server() -> float:
        if now is not None:
            return now()
        if not clock:
            try:
                clock.append(server_now(layout.lock, file_mode=mode))
            except OSError as exc:
                if exc.errno not in NO_WRITE_ACCESS:
                    raise
                raise _NoClock from exc
        return clock[0]

    out: list[LeaseState] = []
    for name in names:
        match = LEASE_NAME_RE.fullmatch(name)
        if match is None:
            continue
        path = layout.lease(match["snapshot"], match["token"])
        sid = match["snapshot"]
        unknown = None
        dead: str | None = None
        try:
            record, st = read_record(path)
        except PermissionError:
            # Another user's lease this user may not read: not proof of anything.
            record, unknown = None, "cannot read the lease (permission denied)"
            try:
                st = path.lstat()
            except FileNotFoundError:
                st = None
        if st is None:
            continue  # released while we listed
        judged = _judge_record(record, sid, match["token"])
        if unknown is None:
            try:
                dead = staleness(judged, st, stale_after_s=stale_after_s, now=server)
            except _NoClock:
                unknown = "no write access to read the file server's clock"
        out.append(
            LeaseState(
                path=path,
                snapshot_id=sid,
                record=judged,
                dead=dead,
                refreshed_at=st.st_mtime,
                unknown=unknown,
            )
        )
    return out


def held_snapshot_ids(
    layout: Layout, *, stale_after_s: float, file_mode: int | None = None
) -> frozenset[str]:
    """Ids of the snapshots some lease still protects: every lease but the provably dead ones.

    Raises:
        OSError: ``leases/`` or a lease cannot be read, or the file server's clock cannot be
            probed (gc, the caller, holds the writer lock and so has write access).
    """
    return frozenset(
        s.snapshot_id
        for s in scan_leases(layout, stale_after_s=stale_after_s, file_mode=file_mode)
        if s.held
    )


def sweep_dead_leases(
    layout: Layout, *, stale_after_s: float, file_mode: int | None = None
) -> list[str]:
    """Remove the leases whose owners are provably dead; return their paths relative to the root.

    Safe at any time, with or without the writer lock: a dead owner never refreshes or releases
    its lease again, and a live one whose lease was removed (another host paused past
    ``stale_after_s``) writes it again on its next refresh.
    """
    removed: list[str] = []
    for state in scan_leases(layout, stale_after_s=stale_after_s, file_mode=file_mode):
        if state.dead is None:
            continue
        with contextlib.suppress(FileNotFoundError):
            state.path.unlink()
            removed.append(layout.relative(state.path))
            log.info("removed dead reader lease %s: %s", state.path.name, state.dead)
    if removed:
        fsync_dir(layout.leases_dir)
    return removed
