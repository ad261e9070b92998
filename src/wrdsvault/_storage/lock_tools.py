"""The writer lock for humans: describe it (``wrdsvault status``), break it by hand (``unlock``).

Breaking by hand goes through the same claim protocol as an automatic break
(`WriterLock.break_by_hand`), so it never races a breaker or a new holder (docs/locking.md,
"Breaking a lock by hand").
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import attrs

from wrdsvault._storage.atomic import NO_WRITE_ACCESS
from wrdsvault._storage.identity import same_host
from wrdsvault._storage.layout import LockFiles
from wrdsvault._storage.lock import DEFAULT_STALE_AFTER_S, EPOCH_BASE_S, WriterLock, read_epoch
from wrdsvault._storage.owner import (
    NoServerClock,
    incarnation,
    iso,
    read_record,
    server_now,
    staleness,
    valid_record,
)
from wrdsvault.errors import LockBreakRefusedError, VaultAccessError
from wrdsvault.reports import LockInfo

log = logging.getLogger(__name__)


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
    files = LockFiles(path)
    epoch_path = files.epoch
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
            heartbeat_at=iso(st.st_mtime),
            heartbeat_age_s=round(time.time() - st.st_mtime, 3),
            clock="local",
            write_access=os.access(path.parent, os.W_OK),
            incarnation=f"ino{st.st_ino}",
        )
    if st is None:
        try:
            last_epoch = read_epoch(epoch_path)
        except PermissionError:  # another user's file: its mtime is all we need
            last_epoch = max(0, int(epoch_path.stat().st_mtime) - EPOCH_BASE_S)
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
            raise NoServerClock
        return server

    try:
        why = staleness(record, st, stale_after_s=stale_after_s, now=judge_now)
        state = "held" if why is None else f"stale: {why}"
    except NoServerClock:
        state = (
            f"unknown: cannot judge whether it is stale without write access to {path.parent} "
            "(the age of another host's lock is measured by the file server's clock, read by "
            "touching a file there)"
        )
    now = time.time() if server is None else server
    valid = valid_record(record)
    nonce = incarnation(record, st)
    prefix = files.claim_prefix(nonce)
    with os.scandir(path.parent) as entries:
        breakers = sorted(e.name for e in entries if e.name.startswith(prefix))
    return LockInfo(
        state=state,
        path=str(path),
        owner=record if valid and record is not None else {},
        unreadable=not valid,
        same_host=valid and same_host(record or {}),
        heartbeat_at=iso(st.st_mtime),
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
