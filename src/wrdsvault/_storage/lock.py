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
  we touch), never by ours. An unreadable record is held for `owner.UNREADABLE_GRACE_S`.
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

Who a process is and when it is provably dead: `wrdsvault._storage.identity`. The owner record,
reading it and judging it stale: `wrdsvault._storage.owner`. Describing and breaking the lock for
a human (``wrdsvault status`` / ``unlock``): `wrdsvault._storage.lock_tools`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import threading
import time
from pathlib import Path
from typing import Any, Final

from wrdsvault._storage.atomic import (
    TempFile,
    atomic_write_bytes,
    fsync_dir,
    link_if_absent,
    publish,
    write_temp,
)
from wrdsvault._storage.crashpoints import BreakPoint, breakpoint_hit
from wrdsvault._storage.identity import same_host
from wrdsvault._storage.layout import LockFiles
from wrdsvault._storage.owner import (
    encode_record,
    incarnation,
    new_record,
    read_record,
    record_epoch,
    server_now,
    staleness,
    valid_record,
)
from wrdsvault.errors import LockHeldError

log = logging.getLogger(__name__)

#: Heartbeat age after which another host's lock is stale (docs/design/lock.md).
DEFAULT_STALE_AFTER_S: Final = 4 * 3600.0
#: How often a holder touches its lock file.
DEFAULT_HEARTBEAT_S: Final = 60.0
#: Longest sleep between two looks at a held lock.
MAX_BACKOFF_S: Final = 0.5
#: More dead claimers than this for one stale incarnation is damage, not a crash.
_MAX_CLAIMS: Final = 64
#: Attempts in a row that found the state changed under them before we back off anyway.
_MAX_IMMEDIATE_RETRIES: Final = 50
#: ``.lock.epoch``'s mtime is this many seconds (2000-01-01T00:00:00Z) plus the last epoch: a date
#: every file system can store, and a copy that resets mtimes to "now" only makes epochs jump up.
EPOCH_BASE_S: Final = 946_684_800


class _Again:
    """The lock changed under an attempt: look again at once."""


_AGAIN: Final = _Again()
_HELD: Final = True


# -- the epoch -----------------------------------------------------------------------------------


def read_epoch(path: Path) -> int:
    """The last epoch persisted in ``.lock.epoch`` (0 if none).

    The epoch is the mtime of that empty, never-deleted file, in whole seconds after
    `EPOCH_BASE_S`; its content never changes, so a writer session that commits nothing leaves
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
    return max(0, int(seconds) - EPOCH_BASE_S)


def _persist_epoch(path: Path, epoch: int, *, file_mode: int) -> None:
    """Durably raise ``.lock.epoch`` to ``epoch`` (a fresh empty file with that mtime, replaced).

    A fresh file that we own, not ``utime`` on the old one: setting an explicit mtime needs
    ownership, and in a group-shared vault another member may own the old file.
    """
    if read_epoch(path) >= epoch:
        return  # never lower it (only a holder paused past the timeout could try)
    atomic_write_bytes(path, b"", mode=file_mode, mtime=EPOCH_BASE_S + epoch)


def _publish(temp: TempFile, dst: Path, *, file_mode: int) -> int | None:
    """Make ``dst`` appear with our complete record: its inode, or None if ``dst`` exists.

    `link_if_absent`; where the file system has no hard links, ``dst`` is created with O_EXCL and
    the record written into it: a contender may then see it empty or torn, which counts as held
    for `owner.UNREADABLE_GRACE_S`.
    """
    try:
        return link_if_absent(temp, dst, fallback_mode=file_mode)
    except FileNotFoundError:
        return None  # our temp record was swept (by recovery, as garbage): try again


def _unlink_if_inode(path: Path, ino: int) -> None:
    with contextlib.suppress(OSError):
        if os.stat(path, follow_symlinks=False).st_ino == ino:
            path.unlink()


# -- the lock ------------------------------------------------------------------------------------


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
        self.files = LockFiles(path)
        self.epoch_path = self.files.epoch
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
            return record if valid_record(record) else {"unreadable": True, **(record or {})}
        return self._break(record, st, why)

    def _next_epoch(self, record: dict[str, Any] | None) -> int:
        return max(read_epoch(self.epoch_path), self._seen_epoch, record_epoch(record)) + 1

    def _write_temp(self, epoch: int) -> TempFile:
        """Write our full owner record to a fresh, fsynced temp file."""
        record = new_record(
            token=self.token, operation=self.operation, epoch=epoch, heartbeat_s=self.heartbeat_s
        )
        return write_temp(self.path, encode_record(record), mode=self.file_mode)

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
                return now if valid_record(now) else {"unreadable": True}
            breakpoint_hit(BreakPoint.CLAIM_VERIFIED)
            try:
                installed = publish(
                    claim,
                    self.path,
                    points=(BreakPoint.RECORD_INSTALLED, BreakPoint.DIR_FSYNCED),
                    src_ino=ino,
                )
            except BaseException:
                self._give_back(ino)  # installed but not durable: do not keep it unknowingly
                raise
            if not installed:
                return _AGAIN
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
        self, temp: TempFile, nonce: str, *, force: bool
    ) -> tuple[Path, int] | _Again | dict[str, Any]:
        """Link our record to the first free claim of ``nonce`` past provably dead claimers."""
        k = 0
        vanished = 0
        while k < _MAX_CLAIMS:
            claim = self.files.claim(nonce, k)
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
                alive = not valid_record(crecord) or same_host(crecord or {})
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
        prefix = self.files.claim_prefix()
        with os.scandir(self.path.parent) as entries:
            names = [e.name for e in entries if e.name.startswith(prefix)]
        for name in names:
            if self.files.claim_nonce(name) != self.token:
                self.files.sibling(name).unlink(missing_ok=True)

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
