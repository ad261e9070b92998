"""Durable file operations: temp file, fsync, rename, fsync of the directory.

After a failed fsync the data must be treated as lost (PostgreSQL's 2018 "fsyncgate"): nothing here
retries an fsync; the error propagates and the caller aborts the commit.
"""

from __future__ import annotations

import errno
import hashlib
import io
import os
import secrets
from pathlib import Path
from typing import Final

from wrdsvault._storage.crashpoints import CrashPoint, crashpoint

#: errnos meaning "this process may not write here": no permission (a reader in the vault's group,
#: another user), or a read-only mount.
NO_WRITE_ACCESS: Final = frozenset({errno.EACCES, errno.EPERM, errno.EROFS})


def fsync_dir(path: Path) -> None:
    """Make the directory entries of ``path`` durable (created, renamed or removed names)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def make_dirs(path: Path, *, mode: int) -> None:
    """Create ``path`` and its missing parents with ``mode`` (umask-proof), fsyncing each parent."""
    missing: list[Path] = []
    p = path
    while not p.exists():
        missing.append(p)
        p = p.parent
    for d in reversed(missing):
        try:
            d.mkdir(mode=mode)
        except FileExistsError:
            continue
        os.chmod(d, mode)
        fsync_dir(d.parent)


def temp_name(path: Path) -> Path:
    """A unique temp name beside ``path`` (same directory, so the rename is atomic)."""
    return path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")


def atomic_write_bytes(
    path: Path,
    data: bytes,
    *,
    mode: int,
    points: tuple[CrashPoint, CrashPoint, CrashPoint, CrashPoint] | None = None,
) -> None:
    """Replace ``path`` with ``data`` atomically and durably.

    ``points`` names the crash points hit after the temp write, its fsync, the rename and the
    directory fsync (only the commit's own files pass them).
    """
    tmp = temp_name(path)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    try:
        os.fchmod(fd, mode)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        if points:
            crashpoint(points[0])
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    os.close(fd)
    if points:
        crashpoint(points[1])
    try:
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if points:
        crashpoint(points[2])
    fsync_dir(path.parent)
    if points:
        crashpoint(points[3])


def publish(src: Path, dst: Path, *, points: tuple[CrashPoint, CrashPoint] | None = None) -> None:
    """Move a staged, already fsynced file to its final name and make the new entry durable.

    ``points`` names the crash points hit after the rename and after the directory fsync.
    """
    os.replace(src, dst)
    if points:
        crashpoint(points[0])
    fsync_dir(dst.parent)
    if points:
        crashpoint(points[1])


def remove_tree(path: Path) -> None:
    """Remove a folder tree without following symlinks (best effort, for garbage)."""
    if not path.exists() and not path.is_symlink():
        return
    if path.is_symlink() or not path.is_dir():
        path.unlink(missing_ok=True)
        return
    for child in path.iterdir():
        remove_tree(child)
    path.rmdir()


class HashingWriter(io.RawIOBase):
    """A write-only file that hashes (SHA-256) and counts the bytes as they are written.

    Parquet writers stream into it, so the checksum comes from the bytes written, with no second
    read of the file (docs/design/measured-facts.md#hashing).
    """

    def __init__(self, path: Path, *, mode: int) -> None:
        super().__init__()
        self.path = path
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
        os.fchmod(self._fd, mode)
        self._hash = hashlib.sha256()
        self.size_bytes = 0

    def writable(self) -> bool:
        return True

    def write(self, data: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
        view = memoryview(data).cast("B")
        self._hash.update(view)
        n = len(view)
        while view:
            view = view[os.write(self._fd, view) :]
        self.size_bytes += n
        return n

    def fsync(self) -> None:
        os.fsync(self._fd)

    def close(self) -> None:
        if not self.closed:
            os.close(self._fd)
        super().close()

    @property
    def sha256(self) -> str:
        return self._hash.hexdigest()


def sha256_file(path: Path, *, chunk_bytes: int = 1 << 20) -> tuple[str, int]:
    """Return (sha256 hex, size in bytes) of a file, read in chunks."""
    h = hashlib.sha256()
    size = 0
    with path.open("rb", buffering=0) as f:
        buf = bytearray(chunk_bytes)
        view = memoryview(buf)
        while n := f.readinto(buf):
            h.update(view[:n])
            size += n
    return h.hexdigest(), size
