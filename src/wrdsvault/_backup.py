"""Backups into another vault, and the repair of a vault from one (docs/backup.md).

A backup is a vault in the same format. It is written like a sync writes: under the
*destination's* writer lock, data files first (each copied to the destination's staging folder,
re-hashed there and checked against the manifest, fsynced, then renamed to its
content-addressed name; in batches, see `_copy_files`), then the manifests (byte for byte the
source's), then the tags, then the destination's ``HEAD``, the commit point. The source is
only read, under reader leases taken at the start on every committed snapshot (the pinned set),
never under its writer lock: a sync committing meanwhile is not in this backup and is in the
next one.

An interrupted backup leaves the destination's ``HEAD`` where it was, so the previous backup
stays current and complete; the manifests (and tags) it wrote past ``HEAD`` are byte-identical
copies of the source's committed manifests, and the next backup accepts them as its own and
commits them (`_check_destination`). Anything else newer than the destination's ``HEAD``, or a
``HEAD`` the source never had, means another vault was backed up into the destination: refused.

A repair takes the *vault's* writer lock, puts back missing or damaged manifests of committed
snapshots, then every data file ``verify`` finds missing or damaged, each by its hash from the
backup: copied to the vault's staging folder, fsynced, checked, renamed over the damaged name
(never written into it).
"""

from __future__ import annotations

import errno
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from contextlib import contextmanager
from pathlib import Path
from typing import Final, Protocol, TypeVar

import attrs
import psutil

from wrdsvault._storage.atomic import (
    NO_WRITE_ACCESS,
    StagedCopy,
    atomic_write_bytes,
    copy_to_temp,
    make_dirs,
    publish,
    publish_all,
    stage_copy,
)
from wrdsvault._storage.catalog import Catalog
from wrdsvault._storage.crashpoints import BackupPoint, crashpoint
from wrdsvault._storage.layout import Layout
from wrdsvault._storage.lease import Lease
from wrdsvault._storage.pinned import PinnedFileCheck
from wrdsvault._storage.writer import Operation, Writer, open_writer
from wrdsvault._verify import verify as verify_files
from wrdsvault.errors import (
    BackupError,
    DiskSpaceError,
    InvalidNameError,
    SnapshotNotFoundError,
    VaultAccessError,
    VaultFormatError,
    WrdsVaultError,
)
from wrdsvault.manifest import Manifest
from wrdsvault.reports import BackupReport, FileFault, RepairReport
from wrdsvault.retention import ExpiredSnapshot
from wrdsvault.settings import VaultSettings

__all__ = [
    "BackupFiles",
    "BackupProgress",
    "LocalBackup",
    "backup",
    "check_destination_path",
    "checked_manifest",
    "os_errors",
    "pin_snapshots",
    "repair",
    "repair_report",
]

#: Called after each data file with (files done, files total, bytes done, bytes total).
BackupProgress = Callable[[int, int, int, int], None]

#: errnos meaning "the destination is full": no space, over quota, or a file size limit.
_FULL: Final = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})

#: Copy threads: one per core copying or hashing, and one more for a thread waiting on the disk.
_WORKERS: Final = min(4, (os.cpu_count() or 1) + 1)
#: fsync threads: an fsync only waits (for the disk, a journal commit, a cache flush), and many
#: waiting together share one commit and one flush.
_SYNCERS: Final = 16
#: Files per batch: their fds stay open from the copy until the batch's fsyncs.
_BATCH_FILES: Final = 64

_HEAD_POINTS: Final = (
    BackupPoint.HEAD_TEMP_WRITTEN,
    BackupPoint.HEAD_TEMP_FSYNCED,
    BackupPoint.HEAD_RENAMED,
    BackupPoint.HEAD_DIR_FSYNCED,
)


def check_destination_path(source_root: Path, dest: Path) -> Path:
    """Refuse a destination that cannot be a backup of ``source_root``; return its real path.

    Checked before anything is created: the vault itself or a folder inside it, a file, a
    folder with content that holds no ``vault.json``, or a symlinked ``vault.json``.
    """
    real = Path(os.path.realpath(dest))
    where = str(dest)
    if real == source_root or source_root in real.parents:
        raise BackupError(
            destination=where,
            reason="the destination is the vault itself or a folder inside it; choose a folder "
            "on another disk",
        )
    if real in source_root.parents:
        raise BackupError(
            destination=where,
            reason="the destination holds the vault; choose a folder outside it",
        )
    try:
        st = os.stat(real)
    except FileNotFoundError:
        return real
    except OSError as exc:
        raise BackupError(destination=where, reason=f"cannot look at it ({exc})") from exc
    if not os.path.isdir(real):
        raise BackupError(destination=where, reason="it is a file, not a folder")
    del st
    vault_json = real / "vault.json"
    if vault_json.is_symlink():
        raise BackupError(
            destination=where, reason="its vault.json is a symlink; symlinks are refused in a vault"
        )
    if not vault_json.exists() and any(real.iterdir()):
        raise BackupError(
            destination=where,
            reason="the folder has content and is not a vault (no vault.json); choose an empty "
            "or new folder, or an earlier backup",
        )
    return real


def _refuse_symlinks(layout: Layout, where: str) -> None:
    """Refuse a destination with a symlink where the backup writes (HEAD, the folders)."""
    for path in (
        layout.head,
        layout.snapshots_dir,
        layout.tags_dir,
        layout.data_dir,
        layout.tmp_dir,
        layout.leases_dir,
    ):
        if path.is_symlink():
            raise BackupError(
                destination=where,
                reason=f"{layout.relative(path)} is a symlink; symlinks are refused inside a "
                "vault (replace it with a real folder or file)",
            )


@contextmanager
def os_errors(where: Path, what: str) -> Iterator[None]:
    """Turn an OS error at the destination into the error a user can act on."""
    try:
        yield
    except WrdsVaultError:
        raise
    except OSError as exc:
        if exc.errno in _FULL:
            try:
                free: int | None = int(psutil.disk_usage(str(where)).free)
            except OSError:
                free = None
            raise DiskSpaceError(
                path=str(where),
                needed_bytes=None,
                free_bytes=free,
                reason=f"the destination filled up during the {what} "
                f"({errno.errorcode.get(exc.errno or 0, exc.errno)}: {exc.strerror}); the "
                "previous backup stays current",
            ) from exc
        if exc.errno in NO_WRITE_ACCESS:
            raise VaultAccessError(path=str(where), operation=what, reason=str(exc)) from exc
        raise BackupError(
            destination=str(where),
            reason=f"{type(exc).__name__}: {exc} during the {what} (a vanished or failing "
            "destination?); the previous backup stays current and complete, run the backup "
            "again once the destination is back",
        ) from exc


def pin_snapshots(
    catalog: Catalog, take_lease: Callable[[str], Lease | None], leases: list[Lease]
) -> list[str]:
    """Take a reader lease on every committed snapshot; return those still committed after."""
    before = [sid for sid, _ in catalog.committed()]
    gone: set[str] = set()
    for sid in before:
        try:
            lease = take_lease(sid)
        except SnapshotNotFoundError:
            gone.add(sid)  # expired by gc while we listed: not in this backup
            continue
        if lease is not None:
            leases.append(lease)
    after = {sid for sid, _ in catalog.committed()}
    return [sid for sid in before if sid in after and sid not in gone]


def _check_destination(
    dest: Catalog,
    src_raw: dict[str, bytes],
    src_manifests: dict[str, Manifest],
    src_expired: dict[str, ExpiredSnapshot],
    where: str,
) -> str | None:
    """Refuse a destination that holds what this source never committed; return its HEAD.

    Accepted: a new vault; a backup of this source (its HEAD is one of the pinned snapshots, or
    one the source has since expired: named by the source's expiry log with the same
    fingerprint, or found through the chain of parents, `_ancestors`);
    manifests newer than its HEAD that are byte-identical copies of pinned ones (the leftovers of
    an interrupted backup). Any manifest that shares an id with a pinned one must be identical.
    """
    try:
        head = dest.head()
        dest_ids = dest.manifest_ids()
    except VaultFormatError as exc:
        raise BackupError(
            destination=where,
            reason=f"the destination is damaged ({exc.problem}); run `wrdsvault doctor` on it",
        ) from exc
    src_head = max(src_raw, default=None)
    for sid in dest_ids:
        raw = src_raw.get(sid)
        if raw is not None:
            if dest.layout.manifest(sid).read_bytes() != raw:
                raise BackupError(
                    destination=where,
                    reason=f"its manifest {sid} differs from the source's; it is not a backup "
                    "of this vault (or was altered). Choose another destination",
                )
        elif head is None or sid > head:
            raise BackupError(
                destination=where,
                reason=f"it holds snapshot {sid}, newer than its HEAD, that this vault never "
                "committed; it is not a backup of this vault. Choose another destination",
            )
    if head is None or head in src_raw:
        return head
    if src_head is None or head > src_head:
        raise BackupError(
            destination=where,
            reason=f"its HEAD {head} is newer than this vault's latest snapshot "
            f"{src_head or '(none)'}: it "
            "is the backup of another vault, or this vault was restored from an older copy. "
            "Choose another destination",
        )
    logged = src_expired.get(head)
    if logged is not None and _fingerprint(dest, head) == logged.fingerprint:
        return head  # a snapshot this vault committed and gc expired since: the backup keeps it
    if head in _ancestors(dest, src_manifests):
        return head
    raise BackupError(
        destination=where,
        reason=f"its HEAD {head} is not an ancestor of this vault's snapshots (another vault "
        "was backed up into it, or this vault expired every snapshot between the backup's "
        "HEAD and its own oldest one). Choose another destination",
    )


def _fingerprint(catalog: Catalog, snapshot_id: str) -> str | None:
    try:
        return catalog.manifest(snapshot_id).fingerprint
    except VaultFormatError:
        return None


def _ancestors(dest: Catalog, src_manifests: dict[str, Manifest]) -> set[str]:
    """Every snapshot id the source's history provably passes through.

    The source's own ids and the parents they name; then, from the parent of the source's
    oldest snapshot on, the chain of parents the destination's manifests record (snapshots the
    source has expired since the backup copied them).
    """
    known = set(src_manifests) | {m.parent for m in src_manifests.values() if m.parent}
    if not src_manifests:
        return known
    sid = src_manifests[min(src_manifests)].parent
    have = set(dest.manifest_ids())
    while sid is not None and sid in have:
        known.add(sid)
        try:
            sid = dest.manifest(sid).parent
        except VaultFormatError:
            break
    return known


def backup(
    layout: Layout,
    catalog: Catalog,
    dest: Path,
    *,
    dest_settings: VaultSettings,
    dest_layout: Layout,
    take_lease: Callable[[str], Lease | None],
    timeout_s: float,
    verify: bool = False,
    progress: BackupProgress | None = None,
) -> BackupReport:
    """Copy every committed snapshot of the vault at ``layout`` into the vault ``dest_layout``.

    See the module docstring for the order and the guarantees. Raises `BackupError`,
    `DiskSpaceError` or `VaultAccessError`; `LockHeldError` if another backup writes the
    destination for longer than ``timeout_s``.
    """
    started = time.monotonic()
    where = str(dest)
    leases: list[Lease] = []
    try:
        pinned = pin_snapshots(catalog, take_lease, leases)
        src_raw: dict[str, bytes] = {}
        src_manifests: dict[str, Manifest] = {}
        for sid in pinned:
            src_manifests[sid] = catalog.manifest(sid)
            src_raw[sid] = layout.manifest(sid).read_bytes()
        pinned_set = set(pinned)
        src_tags = {t: sid for t, sid in catalog.tags().items() if sid in pinned_set}
        crashpoint(BackupPoint.PINNED)
        _refuse_symlinks(dest_layout, where)
        dest_catalog = Catalog(dest_layout)
        with (
            os_errors(dest, "backup"),
            open_writer(
                dest_layout,
                dest_settings,
                operation=Operation("backup", str(layout.root)),
                timeout_s=timeout_s,
                catalog=dest_catalog,
            ) as writer,
        ):
            dest_head = _check_destination(
                dest_catalog, src_raw, src_manifests, catalog.expired(), where
            )
            # Snapshots the backup's own gc expired stay expired: not copied again.
            dest_expired = dest_catalog.expired()
            pinned = [sid for sid in pinned if sid not in dest_expired]
            kept = {sid: src_manifests[sid] for sid in pinned}
            counts = _copy_files(
                layout, writer, kept, where=where, verify=verify, progress=progress
            )
            settings = dest_settings
            make_dirs(dest_layout.snapshots_dir, mode=settings.dir_mode)
            have = set(dest_catalog.manifest_ids())
            new = [sid for sid in pinned if sid not in have]
            for sid in new:
                atomic_write_bytes(dest_layout.manifest(sid), src_raw[sid], mode=settings.file_mode)
                crashpoint(BackupPoint.MANIFEST_WRITTEN)
            dest_tags = dest_catalog.tags()
            moved = sorted(
                t
                for t, sid in src_tags.items()
                if dest_tags.get(t) != sid and sid not in dest_expired
            )
            for tag in moved:
                writer.write_tag(tag, src_tags[tag])
                crashpoint(BackupPoint.TAG_WRITTEN)
            head = dest_head
            if pinned and (dest_head is None or pinned[-1] > dest_head):
                if not writer.lock.still_ours():
                    raise BackupError(
                        destination=where,
                        reason="the destination's writer lock was taken over while this backup "
                        "ran; nothing was committed, run the backup again",
                    )
                atomic_write_bytes(
                    dest_layout.head,
                    pinned[-1].encode() + b"\n",
                    mode=settings.file_mode,
                    points=_HEAD_POINTS,
                )
                head = pinned[-1]
            faults: tuple[FileFault, ...] = ()
            if verify:
                kept_only = [
                    dest_catalog.manifest(sid)
                    for sid, _ in dest_catalog.committed()
                    if sid not in kept
                ]
                faults = verify_files(dest_layout, kept_only).faults
                counts["verified"] += sum(len(m.files()) for m in kept_only)
    finally:
        for lease in leases:
            lease.release()
    return finished_report(
        str(dest_layout.root), pinned, new, moved, head, counts, faults, started=started
    )


def finished_report(
    destination: str,
    snapshots: Sequence[str],
    new: Sequence[str],
    tags: Sequence[str],
    head: str | None,
    counts: Mapping[str, int],
    faults: Sequence[FileFault],
    *,
    started: float,
) -> BackupReport:
    """The report of a finished backup, local or remote, from the copy counters of either."""
    return BackupReport(
        destination=destination,
        snapshots=tuple(snapshots),
        new_snapshots=tuple(new),
        tags=tuple(tags),
        head=head,
        copied_files=counts["copied"],
        copied_bytes=counts["copied_bytes"],
        skipped_files=counts["skipped"],
        skipped_bytes=counts["skipped_bytes"],
        replaced_files=counts["replaced"],
        verified_files=counts["verified"],
        faults=tuple(faults),
        duration_s=time.monotonic() - started,
    )


@attrs.frozen
class _Copy:
    """One data file to copy: its manifest path, identity, and both absolute paths."""

    rel: str
    sha256: str
    size: int
    final: Path
    source: str
    replace: bool


def _copy_files(
    layout: Layout,
    writer: Writer,
    manifests: dict[str, Manifest],
    *,
    where: str,
    verify: bool,
    progress: BackupProgress | None,
) -> dict[str, int]:
    """Copy each data file the destination lacks (or holds damaged); return the counts."""
    dest_layout = writer.layout
    mode = writer.settings.file_mode
    files: dict[str, tuple[str, int]] = {}
    for m in manifests.values():
        for p in m.files():
            files.setdefault(p.path, (p.sha256, p.size_bytes))
    counts = dict.fromkeys(
        ("copied", "copied_bytes", "skipped", "skipped_bytes", "replaced", "verified"), 0
    )
    total_bytes = sum(size for _, size in files.values())
    done_bytes = 0
    done = 0
    src_check = PinnedFileCheck(layout)
    dest_check = PinnedFileCheck(dest_layout)
    damaged_source: list[str] = []
    jobs: list[_Copy] = []
    # First the cheap checks, serially (they share what they learned about folders) ...
    for rel, (sha256, size) in sorted(files.items()):
        try:
            final = dest_layout.resolve_relpath(rel)
            source = layout.resolve_relpath_str(rel)
        except InvalidNameError as exc:
            raise BackupError(
                destination=where, reason=f"a source manifest names a bad path ({exc})"
            ) from exc
        problem = dest_check.check(str(final), size)
        if problem is None and verify:
            counts["verified"] += 1
            _, problem = dest_check.hash(str(final), sha256)
        if problem is None:
            counts["skipped"] += 1
            counts["skipped_bytes"] += size
            done += 1
            done_bytes += size
            if progress is not None:
                progress(done, len(files), done_bytes, total_bytes)
            continue
        if problem.kind in ("not-a-file", "unreadable"):
            raise BackupError(
                destination=where,
                reason=f"{problem.path} {problem.detail}; fix the destination and run the "
                "backup again",
            )
        src_problem = src_check.check(source, size)
        if src_problem is not None:
            damaged_source.append(f"{rel} ({src_problem.detail})")
            continue
        jobs.append(_Copy(rel, sha256, size, final, source, replace=problem.kind != "missing"))

    # ... then the copies, in batches (docs/backup.md#throughput). Each file is copied in the
    # kernel and hashed at once on a small thread pool (copy_file_range, hashlib and file I/O
    # all release the GIL); the batch's fsyncs are issued only after all its copies, so the
    # kernel writes them back together while the next files are copied; then the batch is
    # renamed into place with one fsync per folder. Every file of every batch is durable,
    # checked and in place before the first manifest is written.
    def stage(job: _Copy) -> StagedCopy:
        return stage_copy(
            Path(job.source),
            writer.staging / job.final.name,
            mode=mode,
            copied=BackupPoint.FILE_COPIED,
        )

    def fsync(staged: StagedCopy) -> None:
        staged.fsync(point=BackupPoint.FILE_FSYNCED)

    with (
        ThreadPoolExecutor(max_workers=_WORKERS, thread_name_prefix="wrdsvault-backup") as pool,
        ThreadPoolExecutor(max_workers=_SYNCERS, thread_name_prefix="wrdsvault-fsync") as syncers,
    ):

        def fsync_many(fn: Callable[[Path], None], folders: list[Path]) -> None:
            _run_all(syncers, fn, folders)

        for first in range(0, len(jobs), _BATCH_FILES):
            batch = jobs[first : first + _BATCH_FILES]
            good: list[tuple[_Copy, StagedCopy]] = []
            results = _run_all(pool, stage, batch)
            for job, staged in zip(batch, results, strict=True):
                if (staged.sha256, staged.size) == (job.sha256, job.size):
                    good.append((job, staged))
                    continue
                # The hash is of the copy: the source file, or the copy, is not the
                # manifest's. Which one, the source's own hash tells.
                staged.discard()
                _, src_problem = src_check.hash(job.source, job.sha256)
                if src_problem is None:
                    for other in results:
                        other.discard()  # each fd is closed once, whatever came before
                    raise BackupError(
                        destination=where,
                        reason=f"{job.rel} does not hash back to its manifest after it was "
                        "copied; the destination disk is failing or another process altered it",
                    )
                damaged_source.append(f"{job.rel} (sha256 differs from the manifest)")
            _run_all(syncers, fsync, [staged for _, staged in good])
            publish_all(
                [(staged.path, job.final) for job, staged in good],
                dir_mode=writer.settings.dir_mode,
                points=(BackupPoint.FILE_RENAMED, BackupPoint.FILE_DIR_FSYNCED),
                fsync_many=fsync_many,
            )
            writer.lock.heartbeat()
            for job, _ in good:
                counts["copied"] += 1
                counts["copied_bytes"] += job.size
                counts["replaced"] += job.replace
                done += 1
                done_bytes += job.size
                if progress is not None:
                    progress(done, len(files), done_bytes, total_bytes)
    if damaged_source:
        listed = "; ".join(damaged_source[:5])
        more = f" and {len(damaged_source) - 5} more" if len(damaged_source) > 5 else ""
        raise BackupError(
            destination=where,
            reason=f"{len(damaged_source)} file(s) of the vault do not match their manifests: "
            f"{listed}{more}. Nothing was committed at the destination (the copied files stay "
            "for the next backup); run `wrdsvault verify --all`, then `wrdsvault repair --from` "
            "an earlier backup or re-sync the datasets with full=True",
        )
    return counts


_T = TypeVar("_T")
_R = TypeVar("_R")


def _run_all(pool: ThreadPoolExecutor, fn: Callable[[_T], _R], items: Sequence[_T]) -> list[_R]:
    """``fn`` of every item on ``pool``, in order; on a failure, wait for the rest, then raise.

    Waiting for every task first means no copy is still being written when the caller (or the
    destination's recovery) removes the staging folder; results that did come back are
    `StagedCopy`s whose files are discarded (their fds closed) before the error propagates.
    """
    futures = [pool.submit(fn, item) for item in items]
    wait(futures)
    failed = next((f.exception() for f in futures if f.exception() is not None), None)
    if failed is None:
        return [f.result() for f in futures]
    for f in futures:
        result = None if f.exception() is not None else f.result()
        if isinstance(result, StagedCopy):
            result.discard()
    raise failed


class BackupFiles(Protocol):
    """Read access to a backup vault's files by their vault-relative names (repair, restore).

    `LocalBackup` reads a backup folder; ``_remote.RemoteVault`` an object-storage prefix.
    """

    where: str

    def manifest_bytes(self, snapshot_id: str) -> bytes | None:
        """The bytes of ``snapshots/<id>.json``; None if the backup has none or cannot read it."""
        ...

    def has(self, relpath: str, size: int) -> bool:
        """Whether the backup holds a data file ``relpath`` of ``size`` bytes."""
        ...

    def fetch(self, relpath: str, dst: Path, *, mode: int) -> tuple[Path, str, int]:
        """Copy ``relpath`` to a fresh, fsynced temp name beside ``dst``: (temp, sha256, size)."""
        ...


class LocalBackup:
    """`BackupFiles` of a backup vault in a local folder (another disk, an NFS or SMB mount)."""

    def __init__(self, layout: Layout) -> None:
        self.layout = layout
        self.where = str(layout.root)
        self._check = PinnedFileCheck(layout)

    def manifest_bytes(self, snapshot_id: str) -> bytes | None:
        try:
            return self.layout.manifest(snapshot_id).read_bytes()
        except (OSError, InvalidNameError):
            return None

    def has(self, relpath: str, size: int) -> bool:
        try:
            source = self.layout.resolve_relpath_str(relpath)
        except InvalidNameError:
            return False
        return self._check.check(source, size) is None

    def fetch(self, relpath: str, dst: Path, *, mode: int) -> tuple[Path, str, int]:
        source = Path(self.layout.resolve_relpath_str(relpath))
        return copy_to_temp(source, dst, mode=mode)


def checked_manifest(raw: bytes, snapshot_id: str, *, where: str) -> Manifest | None:
    """``raw`` parsed as the manifest of ``snapshot_id``; None if it is damaged or another's."""
    try:
        manifest = Manifest.from_json(raw, where=where)
    except VaultFormatError:
        return None
    return manifest if manifest.snapshot_id == snapshot_id else None


def repair(
    layout: Layout,
    catalog: Catalog,
    writer: Writer,
    backup: BackupFiles,
    *,
    verify_all: Callable[[], Sequence[FileFault]],
) -> tuple[list[str], int, list[FileFault], int]:
    """Restore missing or damaged manifests and data files from the backup; run under the lock.

    Returns (restored paths, restored bytes, faults left, files checked).
    """
    mode = writer.settings.file_mode
    restored: list[str] = []
    restored_bytes = 0
    head = catalog.head()
    # Manifests first: the data files are found through them.
    if head is not None:
        have = set(catalog.manifest_ids())
        named = {head, *catalog.tags().values()}
        readable: dict[str, Manifest] = {}
        for sid in have:
            try:
                readable[sid] = catalog.manifest(sid)
            except VaultFormatError:
                named.add(sid)  # damaged: its name says which manifest it was
        named |= {m.parent for m in readable.values() if m.parent is not None}
        expired = catalog.expired()  # gc removed their manifests on purpose
        for sid in sorted(named):
            if sid in readable or sid > head or sid in expired:
                continue
            raw = backup.manifest_bytes(sid)
            if raw is None or checked_manifest(raw, sid, where=backup.where) is None:
                continue  # left for verify to report
            atomic_write_bytes(layout.manifest(sid), raw, mode=mode)
            restored.append(f"snapshots/{sid}.json")
            restored_bytes += len(raw)
    catalog.clear_cache()  # a damaged manifest may have been replaced
    faults = verify_all()
    expected: dict[str, tuple[str, int]] = {}
    for sid, _ in catalog.committed():
        try:
            for p in catalog.manifest(sid).files():
                expected.setdefault(p.path, (p.sha256, p.size_bytes))
        except VaultFormatError:
            continue
    left: list[FileFault] = []
    check = PinnedFileCheck(layout)
    for fault in faults:
        want = expected.get(fault.path)
        if fault.problem == "manifest" or want is None:
            left.append(_why(fault, "the backup has no intact copy of this manifest"))
            continue
        sha256, size = want
        try:
            final = layout.resolve_relpath(fault.path)
        except InvalidNameError:
            left.append(_why(fault, "the manifest names a path outside data/"))
            continue
        problem = check.check(str(final), size)
        if problem is not None and problem.path != fault.path:
            left.append(_why(fault, f"{problem.path} {problem.detail}; remove it by hand"))
            continue
        if final.is_dir() and not final.is_symlink():
            left.append(_why(fault, "a folder stands where the file should be; remove it"))
            continue
        if not backup.has(fault.path, size):
            left.append(_why(fault, "the backup does not have this file"))
            continue
        tmp, digest, got = backup.fetch(fault.path, writer.staging / final.name, mode=mode)
        if (digest, got) != (sha256, size):
            tmp.unlink(missing_ok=True)
            left.append(_why(fault, "the backup's copy is damaged too"))
            continue
        make_dirs(final.parent, mode=writer.settings.dir_mode)
        publish(tmp, final)
        restored.append(fault.path)
        restored_bytes += size
        writer.lock.heartbeat()
    return restored, restored_bytes, left, len(expected)


def _why(fault: FileFault, reason: str) -> FileFault:
    return FileFault(
        path=fault.path,
        problem=fault.problem,
        detail=f"{fault.detail}; not restored: {reason}",
        dataset=fault.dataset,
        year=fault.year,
        snapshots=fault.snapshots,
    )


def repair_report(
    source: str | Path, started: float, result: tuple[list[str], int, list[FileFault], int]
) -> RepairReport:
    restored, restored_bytes, left, checked = result
    return RepairReport(
        source=str(source),
        checked_files=checked,
        restored=tuple(restored),
        restored_bytes=restored_bytes,
        not_restored=tuple(left),
        duration_s=time.monotonic() - started,
    )
