"""Backups in object storage (``s3://bucket/prefix``, any fsspec file system): docs/backup.md.

A remote backup has the layout of a vault (``vault.json``, ``data/...``, ``snapshots/<id>.json``,
``tags/<name>``, ``HEAD``) under its prefix, one object per file. It is written in the order of a
local backup: the data objects the prefix lacks (listed once, compared by content-addressed name
and size), then the manifests (the source's bytes), then the tags, then ``HEAD``. A PUT is atomic
per object (readers see the old object or the new one, never a torn one), so ``HEAD`` is the
commit point as on disk: a backup interrupted anywhere before it leaves the previous ``HEAD``,
and everything it names, in place; the next backup reuses the objects already uploaded.

Object storage has no ``link(2)`` and no rename, so there is no writer lock: run one backup into a
prefix at a time (one cron job). A backup never moves ``HEAD`` back (it reads ``HEAD`` again just
before writing it), so of two that overlap the newer snapshot wins.

Before a data object is uploaded, its source file is hashed and checked against the manifest: a
damaged vault file is never uploaded. ``verify=True`` re-hashes every object the backup holds by
reading it back (and uploads a damaged one again when the source still has it).

`restore` copies a remote (or local) backup into a new local vault; `RemoteVault` is also the
`BackupFiles` a repair reads from.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final

from wrdsvault._backup import BackupProgress, checked_manifest, finished_report, pin_snapshots
from wrdsvault._optional import require
from wrdsvault._storage.atomic import (
    atomic_write_bytes,
    make_dirs,
    publish_all,
    sha256_file,
    temp_name,
)
from wrdsvault._storage.catalog import Catalog
from wrdsvault._storage.crashpoints import BackupPoint, crashpoint
from wrdsvault._storage.layout import Layout, validate_snapshot_id, validate_tag
from wrdsvault._storage.lease import Lease
from wrdsvault._storage.writer import Operation, open_writer
from wrdsvault.errors import BackupError, InvalidNameError, VaultFormatError, WrdsVaultError
from wrdsvault.manifest import Manifest
from wrdsvault.reports import BackupReport, FileFault
from wrdsvault.settings import VaultSettings

__all__ = ["RemoteVault", "backup_remote", "is_remote", "remote_errors", "restore"]

#: Parallel uploads, downloads and read-back hashes (network-bound: more than the cores).
_WORKERS: Final = 8
_CHUNK: Final = 4 << 20


def is_remote(target: object) -> bool:
    """Whether ``target`` is an object-storage URL (``scheme://...``, not ``file://``)."""
    if not isinstance(target, str) or "://" not in target:
        return False
    return target.split("://", 1)[0].lower() not in ("", "file", "local")


@contextmanager
def remote_errors(where: str, what: str) -> Iterator[None]:
    """Turn a failure of the object store (network, credentials, a missing bucket) into
    `BackupError`; the previous backup stays current."""
    try:
        yield
    except WrdsVaultError:
        raise
    except Exception as exc:  # botocore, aiohttp and fsspec raise many unrelated types
        raise BackupError(
            destination=where,
            reason=f"{type(exc).__name__}: {exc} during the {what} (credentials, the bucket, the "
            "network?); the previous backup stays current and complete, run it again once the "
            "store is reachable",
        ) from exc


class RemoteVault:
    """A vault's files under an fsspec URL: listing, reading, writing whole objects.

    ``storage_options`` go to the file system (for s3fs: ``key``, ``secret``, ``profile``,
    ``client_kwargs={"endpoint_url": ...}``, ...). Raises `MissingExtraError` without the
    ``s3`` extra (``fsspec``, ``s3fs``), `BackupError` for a URL fsspec cannot open.
    """

    def __init__(self, url: str, storage_options: Mapping[str, Any] | None = None) -> None:
        fsspec = require("fsspec", "s3")
        self.where = url
        scheme = url.split("://", 1)[0]
        try:
            fs, root = fsspec.core.url_to_fs(url, **dict(storage_options or {}))
        except ImportError as exc:
            require({"s3": "s3fs", "s3a": "s3fs", "gs": "gcsfs"}.get(scheme, scheme), "s3")
            raise BackupError(destination=url, reason=f"cannot open it ({exc})") from exc
        except (ValueError, TypeError, OSError) as exc:
            raise BackupError(destination=url, reason=f"cannot open it ({exc})") from exc
        self.fs = fs
        self.root = str(root).rstrip("/")
        with remote_errors(url, "listing"):
            fs.invalidate_cache()

    def _path(self, rel: str) -> str:
        return f"{self.root}/{rel}"

    def read(self, rel: str) -> bytes | None:
        """The object ``rel``, or None if it does not exist."""
        try:
            data = self.fs.cat_file(self._path(rel))
        except FileNotFoundError:
            return None
        return bytes(data)

    def write(self, rel: str, data: bytes) -> None:
        """PUT the object ``rel`` (atomic: readers see the old object or this one)."""
        self.fs.pipe_file(self._path(rel), data)

    def upload(self, local: Path, rel: str) -> None:
        """PUT the local file ``local`` as the object ``rel``."""
        self.fs.put_file(str(local), self._path(rel))

    def listing(self, folder: str) -> dict[str, int]:
        """Vault-relative name -> size of every object under ``folder`` (one listing)."""
        base = self._path(folder)
        try:
            found = self.fs.find(base, detail=True)
        except FileNotFoundError:
            return {}
        out: dict[str, int] = {}
        prefix = self.root + "/"
        for name, info in found.items():
            name = str(name)
            if info.get("type", "file") == "file" and name.startswith(prefix):
                out[name[len(prefix) :]] = int(info.get("size") or 0)
        return out

    def head(self) -> str | None:
        raw = self.read("HEAD")
        if raw is None:
            return None
        try:
            return validate_snapshot_id(raw.decode("ascii").strip())
        except (UnicodeDecodeError, InvalidNameError) as exc:
            raise BackupError(
                destination=self.where, reason=f"its HEAD is damaged ({exc}); fix or remove it"
            ) from exc

    def manifest_sizes(self) -> dict[str, int]:
        """Snapshot id -> size of every ``snapshots/<id>.json`` object."""
        out: dict[str, int] = {}
        for rel, size in self.listing("snapshots").items():
            name = rel.rsplit("/", 1)[-1]
            if name.endswith(".json") and rel.count("/") == 1:
                out[name[: -len(".json")]] = size
        return out

    def tags(self) -> dict[str, str]:
        """Tag name -> snapshot id (unreadable tag objects are left out)."""
        out: dict[str, str] = {}
        for rel in self.listing("tags"):
            name = rel.rsplit("/", 1)[-1]
            raw = self.read(rel)
            if raw is None:
                continue
            try:
                out[validate_tag(name)] = validate_snapshot_id(raw.decode("ascii").strip())
            except (UnicodeDecodeError, InvalidNameError):
                continue
        return out

    def committed(self) -> list[str]:
        """The snapshot ids up to ``HEAD`` (a remote backup is never gc'd), oldest first."""
        head = self.head()
        if head is None:
            return []
        return sorted(sid for sid in self.manifest_sizes() if sid <= head)

    def hash(self, rel: str) -> tuple[str, int]:
        """(sha256, size) of the object ``rel``, read back in chunks."""
        h = hashlib.sha256()
        size = 0
        with self.fs.open(self._path(rel), "rb", block_size=_CHUNK) as f:
            while chunk := f.read(_CHUNK):
                h.update(chunk)
                size += len(chunk)
        return h.hexdigest(), size

    # -- BackupFiles (repair, restore) --------------------------------------------------------

    def manifest_bytes(self, snapshot_id: str) -> bytes | None:
        try:
            return self.read(f"snapshots/{validate_snapshot_id(snapshot_id)}.json")
        except Exception:  # a repair reports what it could not restore; it never stops here
            return None

    def has(self, relpath: str, size: int) -> bool:
        try:
            return int(self.fs.size(self._path(relpath))) == size
        except Exception:
            return False

    def fetch(self, relpath: str, dst: Path, *, mode: int) -> tuple[Path, str, int]:
        """Download ``relpath`` to a fresh temp name beside ``dst``, hashing the bytes as they
        are written; fsynced. On any error the temp file is removed."""
        tmp = temp_name(dst)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
        try:
            os.fchmod(fd, mode)
            h = hashlib.sha256()
            size = 0
            with self.fs.open(self._path(relpath), "rb", block_size=_CHUNK) as f:
                while chunk := f.read(_CHUNK):
                    h.update(chunk)
                    size += len(chunk)
                    view = memoryview(chunk)
                    while view:
                        view = view[os.write(fd, view) :]
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            tmp.unlink(missing_ok=True)
            raise
        os.close(fd)
        return tmp, h.hexdigest(), size


def _check_remote(
    remote: RemoteVault,
    src_raw: dict[str, bytes],
    src_manifests: dict[str, Manifest],
    expired: set[str],
) -> tuple[str | None, dict[str, int]]:
    """Refuse a prefix that holds what this vault never committed; return its HEAD and the
    sizes of its manifests. The rules of a local destination, by name and size (``verify``
    compares the bytes)."""
    head = remote.head()
    sizes = remote.manifest_sizes()
    if head is None and not sizes and remote.listing("data"):
        raise BackupError(
            destination=remote.where,
            reason="the prefix holds data/ objects but no HEAD nor manifests; it is not a backup "
            "of this vault. Choose another prefix",
        )
    for sid, size in sizes.items():
        raw = src_raw.get(sid)
        if raw is not None and len(raw) != size:
            raise BackupError(
                destination=remote.where,
                reason=f"its manifest {sid} differs from the source's; it is not a backup of "
                "this vault (or was altered). Choose another prefix",
            )
        if raw is None and (head is None or sid > head):
            raise BackupError(
                destination=remote.where,
                reason=f"it holds snapshot {sid}, newer than its HEAD, that this vault never "
                "committed; it is not a backup of this vault. Choose another prefix",
            )
    if head is None or head in src_raw or head in expired:
        return head, sizes
    parents = {m.parent for m in src_manifests.values() if m.parent}
    if head in parents and head < max(src_raw, default=""):
        return head, sizes
    raise BackupError(
        destination=remote.where,
        reason=f"its HEAD {head} is not a snapshot this vault committed (another vault was "
        "backed up into it, or this vault was restored from an older copy). Choose another "
        "prefix",
    )


def backup_remote(
    layout: Layout,
    catalog: Catalog,
    remote: RemoteVault,
    *,
    take_lease: Callable[[str], Lease | None],
    verify: bool = False,
    progress: BackupProgress | None = None,
) -> BackupReport:
    """Copy every committed snapshot of the vault at ``layout`` to the prefix of ``remote``.

    See the module docstring. Raises `BackupError` (a refused prefix, a damaged vault file, an
    unreachable store).
    """
    started = time.monotonic()
    where = remote.where
    leases: list[Lease] = []
    try:
        pinned = pin_snapshots(catalog, take_lease, leases)
        src_raw = {sid: layout.manifest(sid).read_bytes() for sid in pinned}
        src_manifests = {sid: catalog.manifest(sid) for sid in pinned}
        pinned_set = set(pinned)
        src_tags = {t: sid for t, sid in catalog.tags().items() if sid in pinned_set}
        crashpoint(BackupPoint.PINNED)
        with remote_errors(where, "backup"):
            head, sizes = _check_remote(remote, src_raw, src_manifests, set(catalog.expired()))
            if remote.read("vault.json") is None:
                remote.write("vault.json", layout.vault_json.read_bytes())
            counts = _upload_files(layout, remote, src_manifests, verify=verify, progress=progress)
            faults: list[FileFault] = []
            new = [sid for sid in pinned if sid not in sizes]
            for sid in new:
                remote.write(f"snapshots/{sid}.json", src_raw[sid])
                crashpoint(BackupPoint.MANIFEST_WRITTEN)
            remote_tags = remote.tags()
            moved = sorted(t for t, sid in src_tags.items() if remote_tags.get(t) != sid)
            for tag in moved:
                remote.write(f"tags/{tag}", src_tags[tag].encode() + b"\n")
                crashpoint(BackupPoint.TAG_WRITTEN)
            if pinned and (head is None or pinned[-1] > head):
                # The commit point: one PUT. The HEAD crash points are hit just before it (the
                # previous HEAD is current) and just after (this backup is).
                now = remote.head()  # another backup may have moved it meanwhile: never back
                if now is None or pinned[-1] > now:
                    crashpoint(BackupPoint.HEAD_TEMP_WRITTEN)
                    remote.write("HEAD", pinned[-1].encode() + b"\n")
                    crashpoint(BackupPoint.HEAD_RENAMED)
                head = pinned[-1] if now is None or pinned[-1] > now else now
            if verify:
                older = [sid for sid in remote.committed() if sid not in pinned_set]
                faults += _verify_only_remote(remote, older)
                counts["verified"] += sum(
                    len(_remote_manifest(remote, sid).files()) for sid in older
                )
    finally:
        for lease in leases:
            lease.release()
    return finished_report(where, pinned, new, moved, head, counts, faults, started=started)


def _remote_manifest(remote: RemoteVault, sid: str) -> Manifest:
    raw = remote.manifest_bytes(sid)
    manifest = None if raw is None else checked_manifest(raw, sid, where=remote.where)
    if manifest is None:
        raise BackupError(
            destination=remote.where,
            reason=f"its manifest of committed snapshot {sid} is missing or damaged",
        )
    return manifest


def _upload_files(
    layout: Layout,
    remote: RemoteVault,
    manifests: dict[str, Manifest],
    *,
    verify: bool,
    progress: BackupProgress | None,
) -> dict[str, int]:
    """Upload each data file the prefix lacks (or, with ``verify``, holds damaged)."""
    files: dict[str, tuple[str, int]] = {}
    for m in manifests.values():
        for p in m.files():
            files.setdefault(p.path, (p.sha256, p.size_bytes))
    have = remote.listing("data")
    counts = dict.fromkeys(
        ("copied", "copied_bytes", "skipped", "skipped_bytes", "replaced", "verified"), 0
    )
    total = sum(size for _, size in files.values())
    done = [0, 0]

    def report(size: int) -> None:
        done[0] += 1
        done[1] += size
        if progress is not None:
            progress(done[0], len(files), done[1], total)

    def one(item: tuple[str, tuple[str, int]]) -> tuple[str, str | None]:
        """-> (what happened, a damaged source file's problem)."""
        rel, (sha256, size) = item
        replace = False
        if have.get(rel) == size:
            if not verify:
                return "skipped", None
            if remote.hash(rel) == (sha256, size):
                return "verified", None
            replace = True
        elif rel in have:
            replace = True
        try:
            source = Path(layout.resolve_relpath_str(rel))
        except InvalidNameError as exc:
            return "bad", f"{rel} ({exc})"
        try:
            digest, got = sha256_file(source)
        except OSError as exc:
            return "bad", f"{rel} ({type(exc).__name__}: {exc})"
        if (digest, got) != (sha256, size):
            return "bad", f"{rel} (sha256 or size differs from the manifest)"
        remote.upload(source, rel)
        crashpoint(BackupPoint.FILE_COPIED)
        return ("replaced" if replace else "copied"), None

    damaged: list[str] = []
    items = sorted(files.items())
    with ThreadPoolExecutor(max_workers=_WORKERS, thread_name_prefix="wrdsvault-upload") as pool:
        for (rel, (_, size)), (what, problem) in zip(items, pool.map(one, items), strict=True):
            del rel
            if problem is not None:
                damaged.append(problem)
                continue
            if what in ("skipped", "verified"):
                counts["skipped"] += 1
                counts["skipped_bytes"] += size
                counts["verified"] += what == "verified"
            else:
                counts["copied"] += 1
                counts["copied_bytes"] += size
                counts["replaced"] += what == "replaced"
                if verify and what == "replaced":
                    counts["verified"] += 1  # it was read back and found damaged
            report(size)
    if damaged:
        more = f" and {len(damaged) - 5} more" if len(damaged) > 5 else ""
        raise BackupError(
            destination=remote.where,
            reason=f"{len(damaged)} file(s) of the vault do not match their manifests: "
            f"{'; '.join(damaged[:5])}{more}. Nothing was committed in the backup (the uploaded "
            "objects stay for the next backup); run `wrdsvault verify --all`, then "
            "`wrdsvault repair --from` an earlier backup or re-sync the datasets with full=True",
        )
    return counts


def _verify_only_remote(remote: RemoteVault, snapshot_ids: list[str]) -> list[FileFault]:
    """Re-hash the objects of snapshots only the backup keeps; their faults (nothing to copy)."""
    files: dict[str, tuple[str, int, str]] = {}
    for sid in snapshot_ids:
        for p in _remote_manifest(remote, sid).files():
            files.setdefault(p.path, (p.sha256, p.size_bytes, sid))

    def one(item: tuple[str, tuple[str, int, str]]) -> FileFault | None:
        rel, (sha256, size, sid) = item
        try:
            got = remote.hash(rel)
        except FileNotFoundError:
            return FileFault(
                path=rel, problem="missing", detail="object is missing", snapshots=(sid,)
            )
        if got != (sha256, size):
            return FileFault(
                path=rel,
                problem="sha256",
                detail="object differs from the manifest",
                snapshots=(sid,),
            )
        return None

    with ThreadPoolExecutor(max_workers=_WORKERS) as pool:
        return [f for f in pool.map(one, sorted(files.items())) if f is not None]


def restore(
    remote: RemoteVault,
    dest: Path,
    *,
    timeout_s: float,
    open_vault: Callable[[Path, VaultSettings], tuple[Layout, VaultSettings, Catalog]],
    progress: BackupProgress | None = None,
) -> BackupReport:
    """Copy every committed snapshot of the remote backup into the new local vault ``dest``.

    ``dest`` must be absent or an empty folder. ``open_vault`` creates the new vault there with
    the settings of the backup's ``vault.json``; then, under the new vault's writer lock, each data
    object is downloaded to staging, hashed as it is written, checked against its manifest and
    fsynced; the files are renamed into place (one fsync per folder), then the manifests, the
    tags, and ``HEAD`` last. An interrupted restore leaves a vault without ``HEAD`` (or with
    none of it at all): run it again into a new folder.
    """
    started = time.monotonic()
    where = remote.where
    with remote_errors(where, "restore"):
        head = remote.head()
        if head is None:
            raise BackupError(
                destination=where, reason="it has no HEAD: not a backup (or none finished yet)"
            )
        ids = remote.committed()
        raw = {sid: remote.manifest_bytes(sid) for sid in ids}
        manifests = {sid: _remote_manifest(remote, sid) for sid in ids}
        vault_json = remote.read("vault.json")
        if vault_json is None:
            raise BackupError(destination=where, reason="it has no vault.json: not a backup")
        try:
            backup_settings = VaultSettings.from_json(
                json.loads(vault_json)["settings"], where=f"{where}/vault.json"
            )
        except (ValueError, KeyError, TypeError, VaultFormatError) as exc:
            raise BackupError(
                destination=where, reason=f"its vault.json is damaged ({exc})"
            ) from exc
        tags = {t: sid for t, sid in remote.tags().items() if sid in raw}
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise BackupError(
            destination=str(dest),
            reason="a restore needs a new or empty folder; this one is a file or has content",
        )
    layout, settings, catalog = open_vault(dest, backup_settings)
    files: dict[str, tuple[str, int]] = {}
    for m in manifests.values():
        for p in m.files():
            files.setdefault(p.path, (p.sha256, p.size_bytes))
    total = sum(size for _, size in files.values())
    with (
        remote_errors(where, "restore"),
        open_writer(
            layout,
            settings,
            operation=Operation("backup", where),
            timeout_s=timeout_s,
            catalog=catalog,
        ) as writer,
    ):
        mode = settings.file_mode

        def one(item: tuple[str, tuple[str, int]]) -> tuple[Path, Path]:
            rel, (sha256, size) = item
            final = layout.resolve_relpath(rel)
            tmp, digest, got = remote.fetch(rel, writer.staging / final.name, mode=mode)
            if (digest, got) != (sha256, size):
                tmp.unlink(missing_ok=True)
                raise BackupError(
                    destination=where,
                    reason=f"its object {rel} does not match its manifest (damaged); nothing "
                    "was restored. Restore from another backup",
                )
            return tmp, final

        items = sorted(files.items())
        with ThreadPoolExecutor(max_workers=_WORKERS) as pool:
            moves = list(pool.map(one, items))
        publish_all(moves, dir_mode=settings.dir_mode)
        if progress is not None:
            progress(len(files), len(files), total, total)
        make_dirs(layout.snapshots_dir, mode=settings.dir_mode)
        for sid in ids:
            data = raw[sid]
            assert data is not None  # checked by _remote_manifest
            atomic_write_bytes(layout.manifest(sid), data, mode=mode)
        for tag, sid in sorted(tags.items()):
            writer.write_tag(tag, sid)
        atomic_write_bytes(layout.head, head.encode() + b"\n", mode=mode)
    return BackupReport(
        destination=str(dest),
        snapshots=tuple(ids),
        new_snapshots=tuple(ids),
        tags=tuple(sorted(tags)),
        head=head,
        copied_files=len(files),
        copied_bytes=total,
        skipped_files=0,
        skipped_bytes=0,
        duration_s=time.monotonic() - started,
    )
