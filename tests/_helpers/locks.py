"""The writer lock's tests' helpers: lock-child processes, stale locks on disk, holder logs.

Nothing here mocks the lock. The lock child (``tests/lock/_lock_child.py``, run as an
`EventChild`) takes the real lock; stale locks are built as files on disk exactly as a dead writer
would have left them (a record naming a reaped process, a live but unrelated process, another
host, or garbage), with old mtimes (`disk.set_age`); `leave_dead_lock` has a real process take
the lock and exit.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from _helpers.disk import set_age
from _helpers.proc import TESTS_DIR, child_env
from wrdsvault._storage.identity import own_identity, process_start

#: The lock tests' child script (run by path).
LOCK_CHILD: Path = TESTS_DIR / "lock" / "_lock_child.py"


def which(name: str) -> str:
    path = shutil.which(name)
    assert path is not None, f"{name} not on PATH"
    return path


def reaped_pid() -> int:
    """The PID of a process that has exited and been reaped."""
    proc = subprocess.Popen([which("true")])
    proc.wait()
    assert process_start(proc.pid) is None
    return proc.pid


def write_lock(path: Path, content: bytes, *, age_s: float = 0.0) -> None:
    """Put ``content`` at ``path`` atomically, with its mtime ``age_s`` seconds in the past."""
    tmp = path.with_name(f".setup.{secrets.token_hex(4)}")
    tmp.write_bytes(content)
    if age_s:
        set_age(tmp, age_s)
    os.replace(tmp, path)  # noqa: TID251 - plants a lock file as a dead writer left it


def owner_record(**overrides: Any) -> dict[str, Any]:
    """A complete owner record of this host (the fields a real writer writes), with overrides."""
    record = {
        "token": secrets.token_hex(16),
        **own_identity(),
        "acquired_at": "2026-01-01T00:00:00.000000Z",
        "operation": "sync crsp.msf",
        "epoch": 1,
        "heartbeat_s": 60.0,
        "format": 3,
    }
    record.update(overrides)
    return record


def uptime_s() -> float:
    """Seconds since this machine booted (the clock the lock compares an earlier boot's age to)."""
    return time.clock_gettime(time.CLOCK_BOOTTIME)


def earlier_boot_record(**overrides: Any) -> dict[str, Any]:
    """The record a writer of an earlier boot of this machine left: same machine id and host,
    another boot id; its PID (here a live process's, by default this one's) means nothing now."""
    return owner_record(boot_id="00000000-0000-4000-8000-000000000000", **overrides)


def earlier_boot_age_s() -> float:
    """An age for an earlier boot's lock: its last heartbeat came a minute before this boot."""
    return uptime_s() + 60.0


def stale_lock(path: Path, kind: str, *, live_pid: int) -> str:
    """Leave a stale lock of ``kind`` at ``path``; return its incarnation (token or inode name)."""
    age_s = 0.0
    if kind in ("dead", "dead-claimer"):
        record = owner_record(pid=reaped_pid())
    elif kind == "reused":
        record = owner_record(pid=live_pid, start="ticks:1")
    elif kind == "foreign":
        record = owner_record(host="elsewhere.invalid", boot_id="b", pid_ns="pid:[1]")
        age_s = 5 * 3600.0
    elif kind == "earlier-boot":
        record = earlier_boot_record(pid=live_pid)
        age_s = earlier_boot_age_s()
    elif kind in ("empty", "garbage"):
        write_lock(path, b"" if kind == "empty" else b'{"token": "trunc', age_s=120.0)
        return f"ino{path.stat().st_ino}"
    else:
        raise ValueError(kind)
    write_lock(path, json.dumps(record).encode(), age_s=age_s)
    if kind == "dead-claimer":
        claimer = owner_record(pid=reaped_pid(), operation="breaker that died")
        claim = path.with_name(f"{path.name}.claim.{record['token']}.0")
        write_lock(claim, json.dumps(claimer).encode())
    return str(record["token"])


def parse_log(path: Path) -> list[tuple[str, str, int, int]]:
    """The (kind, token, epoch, pid) lines of an enter/exit log."""
    rows = []
    for line in path.read_text().splitlines():
        kind, token, epoch, pid = line.split()
        rows.append((kind, token, int(epoch), int(pid)))
    return rows


def assert_one_holder_at_a_time(rows: list[tuple[str, str, int, int]]) -> None:
    """Each ``enter`` is followed by the ``exit`` of the same token before any other ``enter``."""
    inside: str | None = None
    for i, (kind, token, _epoch, _pid) in enumerate(rows):
        if kind == "enter":
            assert inside is None, f"line {i}: {token} entered while {inside} held the lock"
            inside = token
        else:
            assert inside == token, f"line {i}: {token} left but {inside} was the holder"
            inside = None
    assert inside is None


def namespace_prefix() -> list[str] | None:
    if shutil.which("unshare") is None:
        return None
    probe = "import os; print(os.readlink('/proc/self/ns/pid'))"
    base = ["unshare", "--pid", "--fork", "--kill-child", "--mount-proc"]
    for prefix in (base, [*base[:1], "--user", "--map-root-user", *base[1:]]):
        try:
            out = subprocess.run(
                [*prefix, sys.executable, "-c", probe],
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            )
        except OSError:
            continue
        if out.returncode == 0 and out.stdout.strip() != os.readlink("/proc/self/ns/pid"):
            return prefix
    return None


def leave_dead_lock(lock_path: Path, operation: str = "dies") -> None:
    """Have a real process of this host take the lock at ``lock_path`` and exit holding it."""
    code = (
        "import sys; from pathlib import Path; from wrdsvault._storage.lock import WriterLock; "
        "WriterLock(Path(sys.argv[1]), operation=sys.argv[2], heartbeat_s=0).acquire()"
    )
    argv = [sys.executable, "-c", code, str(lock_path), operation]
    subprocess.run(argv, env=child_env(), check=True, timeout=60)
    assert lock_path.exists(), "the child exited without leaving its lock"


def flock_waiters(path: Path) -> set[int]:
    """PIDs blocked in flock(2) on ``path``'s inode (the ``->`` lines of /proc/locks)."""
    ino = os.stat(path).st_ino
    out: set[int] = set()
    for line in Path("/proc/locks").read_text().splitlines():
        fields = line.split()
        if len(fields) >= 7 and fields[1] == "->" and fields[2] == "FLOCK":
            pid, dev_ino = fields[5], fields[6]
            if int(dev_ino.rsplit(":", 1)[1]) == ino:
                out.add(int(pid))
    return out
