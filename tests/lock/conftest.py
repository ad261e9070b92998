"""Fixtures for the writer-lock tests: real child processes, stale records, a PID namespace.

Nothing here mocks the lock. Children run ``_lock_child.py`` by path and take the real lock; stale
locks are built as files on disk exactly as a dead writer would have left them (a record naming a
reaped process, a live but unrelated process, another host, or garbage), with old mtimes set by
``os.utime``. The "other host" of the heartbeat tests is a real process in its own PID namespace
(``unshare``), which wrdsvault must not judge by PID.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from wrdsvault._storage.identity import own_identity, process_start

CHILD: Path = Path(__file__).with_name("_lock_child.py")


class Child:
    """A ``_lock_child.py`` process: JSON events from its stdout, commands to its stdin."""

    def __init__(self, argv: list[str], *, env: dict[str, str] | None = None) -> None:
        self.events: queue.Queue[dict[str, Any]] = queue.Queue()
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            start_new_session=True,  # its own process group: SIGSTOP reaches unshare's child too
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.events.put(json.loads(line))
        self.events.put({"event": "eof"})

    def expect(self, *events: str, timeout_s: float = 30.0) -> dict[str, Any]:
        """The next event, which must be one of ``events``."""
        try:
            got = self.events.get(timeout=timeout_s)
        except queue.Empty:
            pytest.fail(f"child {self.proc.pid} sent nothing within {timeout_s} s")
        if got["event"] not in events:
            err = self.proc.stderr.read() if got["event"] == "eof" and self.proc.stderr else ""
            pytest.fail(f"expected {events}, child sent {got}; stderr: {err}")
        return got

    def send(self, command: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()

    def signal_group(self, sig: int) -> None:
        os.killpg(self.proc.pid, sig)

    def wait(self, timeout_s: float = 30.0) -> int:
        return self.proc.wait(timeout=timeout_s)

    def kill(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        for stream in (self.proc.stdin, self.proc.stderr):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        self._reader.join(timeout=5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


@pytest.fixture
def lock_path(tmp_path: Path) -> Path:
    """The lock file of a fresh, empty vault folder."""
    root = tmp_path / "vault"
    root.mkdir()
    return root / ".lock"


@pytest.fixture
def spawn() -> Iterator[Callable[..., Child]]:
    """Start ``_lock_child.py MODE CONFIG`` (optionally under a prefix such as ``unshare``)."""
    children: list[Child] = []

    def start(
        mode: str,
        cfg: dict[str, Any],
        *,
        prefix: list[str] | None = None,
        crashpoint: str | None = None,
    ) -> Child:
        env = {k: v for k, v in os.environ.items() if not k.startswith("WRDSVAULT_")}
        if crashpoint is not None:
            env["WRDSVAULT_TEST_CRASHPOINT"] = crashpoint
        argv = [*(prefix or []), sys.executable, str(CHILD), mode, json.dumps(cfg)]
        child = Child(argv, env=env)
        children.append(child)
        return child

    yield start
    for child in children:
        child.kill()


def _which(name: str) -> str:
    path = shutil.which(name)
    assert path is not None, f"{name} not on PATH"
    return path


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    """A live process unrelated to any lock (its PID stands for a reused PID)."""
    proc = subprocess.Popen([_which("sleep"), "600"])
    yield proc
    proc.kill()
    proc.wait()


def reaped_pid() -> int:
    """The PID of a process that has exited and been reaped."""
    proc = subprocess.Popen([_which("true")])
    proc.wait()
    assert process_start(proc.pid) is None
    return proc.pid


def write_lock(path: Path, content: bytes, *, age_s: float = 0.0) -> None:
    """Put ``content`` at ``path`` atomically, with its mtime ``age_s`` seconds in the past."""
    tmp = path.with_name(f".setup.{secrets.token_hex(4)}")
    tmp.write_bytes(content)
    if age_s:
        then = time.time() - age_s
        os.utime(tmp, (then, then))
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


def _namespace_prefix() -> list[str] | None:
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


@pytest.fixture(scope="session")
def other_host() -> list[str]:
    """An argv prefix that runs a child in its own PID namespace: to the lock, another host.

    Containers on one kernel share host name and boot id; only the PID namespace tells them apart,
    and a PID from another namespace proves nothing here, so such an owner is judged by heartbeat
    alone, exactly like one on another machine.
    """
    prefix = _namespace_prefix()
    if prefix is None:
        pytest.skip("needs unshare(1) with PID namespaces (root or user namespaces)")
    return prefix


class Kit:
    """The helpers above, for test modules (which cannot import conftest under importlib mode)."""

    reaped_pid = staticmethod(reaped_pid)
    uptime_s = staticmethod(uptime_s)
    earlier_boot_record = staticmethod(earlier_boot_record)
    earlier_boot_age_s = staticmethod(earlier_boot_age_s)
    write_lock = staticmethod(write_lock)
    owner_record = staticmethod(owner_record)
    stale_lock = staticmethod(stale_lock)
    parse_log = staticmethod(parse_log)
    assert_one_holder_at_a_time = staticmethod(assert_one_holder_at_a_time)


@pytest.fixture
def kit() -> type[Kit]:
    """Helpers to build on-disk lock states and to check enter/exit logs."""
    return Kit
