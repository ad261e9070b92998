"""Durable file operations: temp file, fsync, rename (or link), fsync of the directory.

This is the only module that renames or hard-links files (ruff bans ``os.rename``,
``os.replace`` and ``os.link`` elsewhere): `atomic_write_bytes` replaces a file, `publish` moves a
staged file or folder into place, `publish_link` gives a file a durable second name,
`put_if_absent` creates a file only if absent, and `write_temp` with `link_if_absent` are the two
halves of a put-if-absent for callers that need a step in between (the writer lock's claims).
`append_durably` appends whole lines to an append-only log (gc's expiry log, the sync run log).
`stage_copy` copies a file to a fresh temp name and hashes the copy (fsynced later, so a
backup can batch its fsyncs), `copy_to_temp` does the same and fsyncs at once (repair), and
`publish_all` renames many staged files into place with one fsync per folder (backup).

After a failed fsync the data must be treated as lost (PostgreSQL's 2018 "fsyncgate"): nothing here
retries an fsync; the error propagates and the caller aborts the commit.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import io
import os
import secrets
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Final, TypeAlias

import attrs

from wrdsvault._storage.crashpoints import BackupPoint, BreakPoint, CrashPoint, crashpoint

#: A crash point of any step list (sync, lock break, backup).
AnyPoint: TypeAlias = "CrashPoint | BreakPoint | BackupPoint"

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
    for created in _create_dirs(path, mode=mode):
        fsync_dir(created.parent)


def temp_name(path: Path) -> Path:
    """A unique temp name beside ``path`` (same directory, so the rename is atomic)."""
    return path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")


@attrs.frozen
class TempFile:
    """A complete, fsynced file under a private temp name, waiting to be published.

    Its owner removes it (``path.unlink(missing_ok=True)``) once published or given up.
    """

    path: Path
    data: bytes
    ino: int


def write_temp(
    path: Path,
    data: bytes,
    *,
    mode: int,
    mtime: float | None = None,
    written: AnyPoint | None = None,
) -> TempFile:
    """Write ``data`` to a fresh temp file beside ``path`` (``mode``, umask-proof) and fsync it.

    ``mtime`` also sets the file's atime and mtime (before the fsync); ``written`` is the crash
    point hit after the write, before the fsync. On any error the temp file is removed.
    """
    tmp = temp_name(path)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    try:
        os.fchmod(fd, mode)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        if mtime is not None:
            os.utime(fd, (mtime, mtime))
        if written is not None:
            crashpoint(written)
        os.fsync(fd)
        ino = os.fstat(fd).st_ino
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    os.close(fd)
    return TempFile(path=tmp, data=data, ino=ino)


def atomic_write_bytes(
    path: Path,
    data: bytes,
    *,
    mode: int,
    mtime: float | None = None,
    points: tuple[AnyPoint, AnyPoint, AnyPoint, AnyPoint] | None = None,
) -> None:
    """Replace ``path`` with ``data`` atomically and durably.

    ``mtime`` sets the new file's atime and mtime. ``points`` names the crash points hit after the
    temp write, its fsync, the rename and the directory fsync (only the commit's own files pass
    them).
    """
    temp = write_temp(path, data, mode=mode, mtime=mtime, written=points[0] if points else None)
    if points:
        crashpoint(points[1])
    try:
        publish(temp.path, path, points=(points[2], points[3]) if points else None)
    except BaseException:
        temp.path.unlink(missing_ok=True)
        raise


def publish(
    src: Path,
    dst: Path,
    *,
    points: tuple[AnyPoint, AnyPoint] | None = None,
    src_ino: int | None = None,
) -> bool:
    """Move a staged, already fsynced file (or folder) to its final name and make it durable.

    ``points`` names the crash points hit after the rename and after the directory fsync.

    With ``src_ino`` (the inode of ``src``), a rename that fails with ENOENT but left ``dst``
    naming that inode counts as done: on NFS a retransmitted RENAME whose first reply was lost
    fails although it worked. Returns False only then, when ``src`` vanished and ``dst`` is not
    it (someone else moved or removed it); True otherwise.
    """
    try:
        os.replace(src, dst)
    except FileNotFoundError:
        if src_ino is None:
            raise
        try:
            installed = os.stat(dst).st_ino == src_ino
        except OSError:
            installed = False
        if not installed:
            return False
    if points:
        crashpoint(points[0])
    fsync_dir(dst.parent)
    if points:
        crashpoint(points[1])
    return True


def publish_link(src: Path, dst: Path) -> None:
    """Make ``dst`` a durable new name of the fsynced file ``src`` (a hard link; ``src`` stays).

    An existing ``dst`` is replaced atomically: the link is made under a temp name beside ``dst``
    and renamed over it, then the directory is fsynced.
    """
    tmp = temp_name(dst)
    os.link(src, tmp)
    try:
        publish(tmp, dst)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def hard_link(src: Path, dst: Path) -> None:
    """``link(src, dst)``: a new name for ``src`` (FileExistsError if ``dst`` exists).

    Not durable by itself: the caller publishes ``dst`` (or fsyncs its folder) later.
    """
    os.link(src, dst)


#: link(2) errors meaning "this file system has no hard links" (FAT, some SMB/CIFS mounts).
NO_LINKS: Final = frozenset({errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOSYS})


def link_if_absent(temp: TempFile, dst: Path, *, fallback_mode: int | None = None) -> int | None:
    """Make ``dst`` appear with ``temp``'s complete content unless it exists: put-if-absent.

    ``link(temp, dst)`` publishes the fsynced file in one step and fails with EEXIST if ``dst``
    exists (the NFS-safe O_EXCL of open(2)). Returns the inode now at ``dst`` that is ours, or
    None if ``dst`` already existed. Not durable by itself: fsync ``dst.parent`` (or publish
    something else in that folder) to make it so. Never stats ``dst`` after a successful link (it
    may be gone at once, e.g. a lock claim swept by a new holder).

    Where the file system has no hard links (errno in `NO_LINKS`): with ``fallback_mode``, create
    ``dst`` with O_CREAT|O_EXCL and that mode and write the content into it (a reader may then see
    it empty or torn, so use it only where a torn file is judged safely); without, raise.

    Raises:
        FileNotFoundError: ``temp`` vanished (swept as garbage) or ``dst``'s folder is gone.
        OSError: any other failure of link(2).
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
    except OSError as exc:
        if exc.errno not in NO_LINKS or fallback_mode is None:
            raise
        return _create_exclusive(dst, temp.data, mode=fallback_mode)
    return temp.ino


def _create_exclusive(dst: Path, data: bytes, *, mode: int) -> int | None:
    try:
        fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    except FileExistsError:
        return None
    try:
        os.fchmod(fd, mode)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
        return os.fstat(fd).st_ino
    finally:
        os.close(fd)


def put_if_absent(path: Path, data: bytes, *, mode: int) -> bool:
    """Create ``path`` with ``data`` atomically and durably unless it exists.

    Temp file, fsync, ``link`` (never a torn or half-written ``path``, even to a reader racing the
    creator), directory fsync. Returns True if this call created it, False if it existed (another
    process's file, left as it is; the folder is fsynced all the same).

    Raises:
        OSError: the file could not be written or linked (also on a file system without hard
            links: there is no safe put-if-absent there).
    """
    temp = write_temp(path, data, mode=mode)
    try:
        created = link_if_absent(temp, path) is not None
    except FileNotFoundError:
        if not path.exists():
            raise
        created = False
    finally:
        temp.path.unlink(missing_ok=True)
    fsync_dir(path.parent)
    return created


def append_durably(
    path: Path, data: bytes, *, mode: int, after_write: Callable[[], None] | None = None
) -> None:
    """Append ``data`` (whole lines, ending in a newline) to ``path`` with one write and fsync it
    (and its folder, when the file is new).

    Appenders take turns under an exclusive ``flock`` on the file (the expiry log has one writer
    anyway, under the writer lock; the sync run log is also written by runs that never got the
    writer lock). So a last line without its newline is the remains of an append cut short by a
    crash or power loss, never acknowledged: it is cut off first. Earlier lines are never
    rewritten. ``after_write`` runs between the write and the fsync (a crash point).
    """
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, mode)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # released when fd is closed
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            os.ftruncate(fd, os.pread(fd, size, 0).rfind(b"\n") + 1)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        if after_write is not None:
            after_write()
        os.fsync(fd)
    finally:
        os.close(fd)
    if size == 0:
        fsync_dir(path.parent)


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


@attrs.define
class StagedCopy:
    """A copy under a private temp name, hashed but not yet fsynced (see `stage_copy`).

    ``fd`` is open for writing until `StagedCopy.fsync` or `StagedCopy.discard` closes it (each
    closes it at most once, so a second call never closes an fd another thread opened since).
    """

    path: Path
    sha256: str
    size: int
    fd: int
    closed: bool = False

    def _close(self) -> None:
        if not self.closed:
            self.closed = True
            os.close(self.fd)

    def fsync(self, *, point: AnyPoint | None = None) -> None:
        """Wait until the copy is durable, then close it; ``point`` is hit after the fsync."""
        try:
            os.fsync(self.fd)
        finally:
            self._close()
        if point is not None:
            crashpoint(point)

    def discard(self) -> None:
        """Close and remove the copy (a mismatch, or a run that failed before publishing it)."""
        with contextlib.suppress(OSError):
            self._close()
        self.path.unlink(missing_ok=True)


def stage_copy(src: Path, dst: Path, *, mode: int, copied: AnyPoint | None = None) -> StagedCopy:
    """Copy ``src`` to a fresh temp name beside ``dst`` (``mode``) and hash the copy; no fsync.

    The copy runs in the kernel (``copy_file_range``: no trip through user space, a reflink
    where the file system offers one), falling back to read/write. The copy is then read back
    and hashed at once, while its pages are still in the page cache, so the hash is of the bytes
    *at the destination*. Then its writeback is started (``posix_fadvise(DONTNEED)`` on Linux
    starts writing the dirty pages and keeps the backup from crowding the page cache) without
    waiting for it: the caller fsyncs later, after more copies were issued, so the disk writes
    while other files are copied and hashed. ``copied`` is the crash point hit after the copy.
    On any error the temp file is removed.
    """
    tmp = temp_name(dst)
    with src.open("rb", buffering=0) as f:
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
        try:
            os.fchmod(fd, mode)
            _copy_fd(f.fileno(), fd, os.fstat(f.fileno()).st_size)
        except BaseException:
            os.close(fd)
            tmp.unlink(missing_ok=True)
            raise
    try:
        if copied is not None:
            crashpoint(copied)
        digest, size = _sha256_fd(fd)
        _start_writeback(fd)
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    return StagedCopy(path=tmp, sha256=digest, size=size, fd=fd)


def _start_writeback(fd: int) -> None:
    """Ask the kernel to start writing ``fd``'s dirty pages now, without waiting for them."""
    advise = getattr(os, "posix_fadvise", None)
    if advise is not None:
        with contextlib.suppress(OSError):
            advise(fd, 0, 0, os.POSIX_FADV_DONTNEED)


def copy_to_temp(
    src: Path,
    dst: Path,
    *,
    mode: int,
    points: tuple[AnyPoint, AnyPoint] | None = None,
) -> tuple[Path, str, int]:
    """Copy ``src`` to a fresh temp name beside ``dst`` (``mode``), hash the copy, fsync it.

    Returns (temp path, sha256 hex of the bytes *at the destination*, size): `stage_copy`
    followed by its fsync. ``points`` names the crash points hit after the copy and after its
    fsync. Nothing is published: the caller checks the hash and then `publish`es the temp file
    over ``dst`` (never writing into ``dst`` itself, which may be a damaged file someone still
    reads). On any error the temp file is removed.
    """
    staged = stage_copy(src, dst, mode=mode, copied=points[0] if points else None)
    try:
        staged.fsync(point=points[1] if points else None)
    except BaseException:
        staged.path.unlink(missing_ok=True)
        raise
    return staged.path, staged.sha256, staged.size


def publish_all(
    moves: Sequence[tuple[Path, Path]],
    *,
    dir_mode: int,
    points: tuple[AnyPoint, AnyPoint] | None = None,
    fsync_many: Callable[[Callable[[Path], None], list[Path]], object] | None = None,
) -> None:
    """Move staged, already fsynced files to their final names, then make the names durable.

    Each final folder is created as needed (``dir_mode``); then every file is renamed; then
    each folder that gained a name (the final folders, the parents of created folders) is
    fsynced once. One journal commit can then carry all the renames, where a `publish` per file
    waits for one each. ``fsync_many(fn, folders)`` runs ``fn`` on every folder and returns when
    all are done (e.g. on a thread pool, so the file system can merge the waits; default: one
    after the other). ``points`` names the crash points hit after each rename and after each
    folder's fsync. Nothing is durable until this returns.
    """
    touched: dict[Path, None] = {}
    for src, dst in moves:
        for created in _create_dirs(dst.parent, mode=dir_mode):
            touched[created.parent] = None
        os.replace(src, dst)
        touched[dst.parent] = None
        if points:
            crashpoint(points[0])

    def durable(folder: Path) -> None:
        fsync_dir(folder)
        if points:
            crashpoint(points[1])

    if fsync_many is None:
        for folder in touched:
            durable(folder)
    else:
        fsync_many(durable, list(touched))


def _create_dirs(path: Path, *, mode: int) -> list[Path]:
    """Create ``path`` and its missing parents with ``mode``; return those created (no fsync)."""
    missing: list[Path] = []
    p = path
    while not p.exists():
        missing.append(p)
        p = p.parent
    created: list[Path] = []
    for d in reversed(missing):
        try:
            d.mkdir(mode=mode)
        except FileExistsError:
            continue
        os.chmod(d, mode)
        created.append(d)
    return created


#: copy_file_range errors meaning "not here": another file system, an old kernel, a FUSE mount.
_NO_COPY_RANGE: Final = frozenset(
    {errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EPERM}
)


def _copy_fd(src: int, dst: int, size: int, *, chunk_bytes: int = 1 << 20) -> None:
    """Copy ``src`` to ``dst`` (both at offset 0): in the kernel if it can, else read/write."""
    copied = 0
    copy_range = getattr(os, "copy_file_range", None)
    if copy_range is not None:
        try:
            while copied < size:
                n = copy_range(src, dst, size - copied)
                if n == 0:
                    break
                copied += n
        except OSError as exc:
            if exc.errno not in _NO_COPY_RANGE or copied:
                raise
    os.lseek(src, copied, os.SEEK_SET)
    os.lseek(dst, copied, os.SEEK_SET)
    buf = bytearray(chunk_bytes)
    view = memoryview(buf)
    while n := os.readv(src, [buf]):
        out = view[:n]
        while out:
            out = out[os.write(dst, out) :]


def _sha256_fd(fd: int, *, chunk_bytes: int = 1 << 20) -> tuple[str, int]:
    """Return (sha256 hex, size in bytes) of the open file ``fd``, read from offset 0."""
    h = hashlib.sha256()
    size = 0
    buf = bytearray(chunk_bytes)
    view = memoryview(buf)
    while n := os.preadv(fd, [buf], size):
        h.update(view[:n])
        size += n
    return h.hexdigest(), size


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
