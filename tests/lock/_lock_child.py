"""Child process for the lock tests: takes the real writer lock, driven by its parent.

Run by path (never imported by pytest)::

    python _lock_child.py MODE CONFIG_JSON

Every line it prints is one JSON object with an ``event`` key. ``"no_hard_links": true`` in the
config makes ``os.link`` fail with EPERM in this process, as on a file system without hard links
(FAT, some SMB mounts), so the lock must fall back to O_CREAT|O_EXCL. Modes:

``hold``
    Acquire (``timeout_s``, ``stale_after_s``, ``heartbeat_s``, ``file_mode``: the vault's mode for
    files, 0o600 unless given), print ``held`` (token, epoch, pid,
    broke), then obey stdin lines: ``check`` prints ``check`` with ``ours`` (`still_ours`),
    ``beating`` prints ``beating`` with ``alive`` (whether its heartbeat thread still runs: it
    stops for good once it finds the lock taken over), ``release`` releases and prints
    ``released``, ``vanish`` exits without releasing. EOF releases.
    A failed acquire prints ``lock-held-error`` and exits 3. With ``WRDSVAULT_TEST_CRASHPOINT`` set
    to a `BreakPoint` the child SIGKILLs itself inside the break protocol.
``loop``
    ``n`` times: acquire, append ``enter``/``exit`` lines (token, epoch, pid) to the O_APPEND
    ``log`` with a random 0-``hold_ms`` ms pause between them, release. Prints ``done``.
``storm``
    For each of ``rounds`` rounds: print ``ready``, pass the round's gate (a shared flock on
    ``gates[round % 2]`` that the parent holds exclusively until every worker is ready), then
    ``acquire(timeout_s=waits_s[round])``. The winner logs ``enter``, prints ``won`` and holds
    until the parent sends ``release``, then logs ``exit``, releases and prints ``released``; a
    loser prints ``lost`` with the time it waited and the holder it was shown.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import random
import sys
import threading
import time
from pathlib import Path
from typing import Any

#: The name the lock gives its heartbeat thread (followed by the token's first characters).
HEARTBEAT_THREAD = "wrdsvault-lock-heartbeat"


def emit(event: str, **fields: Any) -> None:
    print(json.dumps({"event": event, **fields}), flush=True)


def log_line(fd: int, kind: str, lock: Any) -> None:
    # One write(2) per line on an O_APPEND file: lines from different processes never interleave.
    os.write(fd, f"{kind} {lock.token} {lock.epoch} {os.getpid()}\n".encode())


def make_lock(cfg: dict[str, Any], operation: str) -> Any:
    from wrdsvault._storage.lock import WriterLock

    return WriterLock(
        Path(cfg["path"]),
        operation=operation,
        file_mode=cfg.get("file_mode", 0o600),
        stale_after_s=cfg.get("stale_after_s", 4 * 3600.0),
        heartbeat_s=cfg.get("heartbeat_s", 60.0),
    )


def hold(cfg: dict[str, Any]) -> int:
    from wrdsvault.errors import LockHeldError

    lock = make_lock(cfg, cfg.get("operation", "test hold"))
    try:
        lock.acquire(timeout_s=cfg.get("timeout_s", 0.0))
    except LockHeldError as exc:
        emit("lock-held-error", holder=exc.holder, waited_s=exc.waited_s, message=str(exc))
        return 3
    emit("held", token=lock.token, epoch=lock.epoch, pid=os.getpid(), broke=lock.broke)
    for line in sys.stdin:
        command = line.strip()
        if command == "check":
            emit("check", ours=lock.still_ours())
        elif command == "beating":
            beats = [t for t in threading.enumerate() if t.name.startswith(HEARTBEAT_THREAD)]
            emit("beating", alive=any(t.is_alive() for t in beats))
        elif command == "release":
            lock.release()
            emit("released")
        elif command == "vanish":
            os._exit(0)
    lock.release()
    return 0


def loop(cfg: dict[str, Any]) -> int:
    lock = make_lock(cfg, "test loop")
    fd = os.open(cfg["log"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    broke = 0
    for _ in range(cfg["n"]):
        lock.acquire(timeout_s=cfg["timeout_s"])
        broke += lock.broke is not None
        log_line(fd, "enter", lock)
        # A random time inside the lock: the overlap it would expose is what the test looks for.
        time.sleep(random.uniform(0, cfg["hold_ms"]) / 1000)  # noqa: S311
        log_line(fd, "exit", lock)
        lock.release()
    emit("done", broke=broke)
    return 0


def storm(cfg: dict[str, Any]) -> int:
    from wrdsvault.errors import LockHeldError

    fd = os.open(cfg["log"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    gates = [os.open(g, os.O_RDONLY) for g in cfg["gates"]]
    for round_ in range(cfg["rounds"]):
        lock = make_lock(cfg, f"storm round {round_}")
        emit("ready", round=round_)
        fcntl.flock(gates[round_ % 2], fcntl.LOCK_SH)
        fcntl.flock(gates[round_ % 2], fcntl.LOCK_UN)
        started = time.monotonic()
        try:
            lock.acquire(timeout_s=cfg["waits_s"][round_])
        except LockHeldError as exc:
            emit("lost", round=round_, waited_s=time.monotonic() - started, holder=exc.holder)
            continue
        log_line(fd, "enter", lock)
        emit("won", round=round_, token=lock.token, epoch=lock.epoch, broke=lock.broke)
        if sys.stdin.readline().strip() != "release":
            return 4
        log_line(fd, "exit", lock)
        lock.release()
        emit("released", round=round_)
    return 0


def _no_hard_links(*_args: Any, **_kwargs: Any) -> None:
    raise OSError(errno.EPERM, "Operation not permitted")


def main(argv: list[str]) -> int:
    mode, raw = argv
    cfg = json.loads(raw)
    if cfg.get("no_hard_links"):
        os.link = _no_hard_links  # noqa: TID251 - simulates a file system without hard links
    return {"hold": hold, "loop": loop, "storm": storm}[mode](cfg)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
