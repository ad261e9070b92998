"""Garbage collection: expire snapshots by a retention policy, delete what nothing needs.

The order that makes it safe (docs/retention.md), under the writer lock:

1. plan: the committed snapshots, the tags, the leases and the export records
   (`wrdsvault.exports`) say what the policy keeps;
2. append the expired snapshots to the expiry log and fsync it (from here they are not listed,
   and a reader that leases one afterwards sees the expiry and gives its lease up);
3. read the leases again: a reader that leased a snapshot before step 2 is seen now;
4. delete the data files that no manifest still on disk names, except the manifests of expired
   snapshots no reader holds (one classifier: `catalog.find_garbage`);
5. delete those manifests.

A kill at any step leaves every retained snapshot complete: nothing is deleted before the
expiry is durable, and only files no retained or held manifest names are deleted. The next gc,
or ``doctor --repair``, finishes the job (the expired manifests still on disk are garbage to
both, and the files only they named become orphans once they are gone).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from datetime import datetime, timezone
from pathlib import Path

from wrdsvault._storage.atomic import fsync_dir
from wrdsvault._storage.catalog import Catalog, find_garbage
from wrdsvault._storage.crashpoints import GcPoint, gc_point
from wrdsvault._storage.expiry import append_expired
from wrdsvault._storage.layout import Layout
from wrdsvault._storage.lease import held_snapshot_ids
from wrdsvault.exports import export_holds
from wrdsvault.retention import (
    ExpiredSnapshot,
    GcPlan,
    GcReport,
    KeptSnapshot,
    RetentionPolicy,
    select_kept,
)
from wrdsvault.settings import VaultSettings

__all__ = ["execute", "leased_ids", "plan", "reclaimable_bytes"]

log = logging.getLogger(__name__)


def leased_ids(layout: Layout, settings: VaultSettings) -> frozenset[str]:
    """The snapshot ids live readers hold (their leases), read now.

    Raises:
        OSError: the leases cannot be read (gc then deletes nothing).
    """
    return held_snapshot_ids(
        layout, stale_after_s=settings.lease_stale_after_s, file_mode=settings.file_mode
    )


def leased_ids_if_readable(layout: Layout, settings: VaultSettings) -> frozenset[str] | None:
    """`leased_ids`, or None if they cannot be read now (a reader without write access, an
    I/O error): read-only callers then judge nothing that a lease could protect."""
    try:
        return leased_ids(layout, settings)
    except OSError:
        return None


def plan(catalog: Catalog, policy: RetentionPolicy, *, leased: frozenset[str] | None) -> GcPlan:
    """What a gc by ``policy`` expires and deletes now, given the leased ids (None: unknown;
    then no expired manifest is counted as deletable). Reads manifests, lists ``data/`` and
    stats the files it would delete; never opens a data file."""
    committed = catalog.committed()
    kept = select_kept(
        committed,
        policy,
        tags=catalog.tags(),
        leased=leased or (),
        held=export_holds(catalog.layout),
    )
    expire = tuple(sid for sid, _ in committed if sid not in kept)
    files: list[str] = []
    manifests: list[str] = []
    freed = 0
    root = catalog.layout.root
    for item in find_garbage(catalog, leased=leased, expiring=frozenset(expire)):
        if item.kind == "orphan-file":
            files.append(str(item.path.relative_to(root)))
        elif item.kind == "expired-manifest":
            manifests.append(item.path.name.removesuffix(".json"))
        else:
            continue  # a writer's leftovers: recovery removes them before every write
        freed += _size(item.path)
    when = dict(committed)
    return GcPlan(
        policy=policy,
        kept=tuple(
            KeptSnapshot(snapshot_id=sid, committed_at=when[sid], reasons=why)
            for sid, why in kept.items()
        ),
        expired=expire,
        manifests=tuple(manifests),
        files=tuple(files),
        freed_bytes=freed,
    )


def execute(
    catalog: Catalog, settings: VaultSettings, policy: RetentionPolicy, *, now: datetime
) -> GcReport:
    """Run a gc; the caller holds the writer lock and recovery has run (module docstring)."""
    layout = catalog.layout
    first = plan(catalog, policy, leased=leased_ids(layout, settings))
    gc_point(GcPoint.PLANNED)
    records = []
    for sid in first.expired:
        manifest = catalog.manifest(sid)
        records.append(
            ExpiredSnapshot(
                snapshot_id=sid,
                sequence=manifest.sequence,
                committed_at=manifest.committed_at,
                fingerprint=manifest.fingerprint,
                expired_at=now,
                policy=policy.to_json(),
            )
        )
    append_expired(layout, records, file_mode=settings.file_mode)
    # Only now, with the expiry durable, do the leases count: a reader either leased before
    # this point (seen below) or will see the expiry when it checks after leasing.
    leased = leased_ids(layout, settings)
    gc_point(GcPoint.LEASES_READ)
    garbage = list(find_garbage(catalog, leased=leased))
    files = [g.path for g in garbage if g.kind == "orphan-file"]
    dead = [g.path for g in garbage if g.kind == "expired-manifest"]
    freed = 0
    deleted_files: list[str] = []
    for path in files:
        freed += _size(path)
        path.unlink(missing_ok=True)
        deleted_files.append(str(path.relative_to(layout.root)))
        gc_point(GcPoint.FILE_DELETED)
    _sync_parents(files, stop=layout.data_dir)
    gc_point(GcPoint.FILES_DELETED)
    deleted_manifests: list[str] = []
    for path in dead:
        freed += _size(path)
        path.unlink(missing_ok=True)
        deleted_manifests.append(path.name.removesuffix(".json"))
        gc_point(GcPoint.MANIFEST_DELETED)
    if dead:
        fsync_dir(layout.snapshots_dir)
    gc_point(GcPoint.MANIFESTS_DELETED)
    on_disk = set(catalog.manifest_ids())
    held = tuple(sid for sid in sorted(catalog.expired()) if sid in on_disk and sid in leased)
    report = GcReport(
        policy=policy,
        expired=first.expired,
        kept=first.kept,
        deleted_files=tuple(deleted_files),
        deleted_manifests=tuple(deleted_manifests),
        held=held,
        freed_bytes=freed,
    )
    log.info("gc: %s", report.summary())
    return report


def reclaimable_bytes(catalog: Catalog, policy: RetentionPolicy) -> int:
    """Bytes ``policy`` would free now, from the manifests alone (no listing of ``data/``).

    Counts the files named only by snapshots it would expire or that were expired already and
    are still on disk; ignores leases (a held snapshot is freed by a later gc) and orphan files
    (``doctor`` lists those).
    """
    committed = catalog.committed()
    kept = select_kept(committed, policy, tags=catalog.tags(), held=export_holds(catalog.layout))
    expired = set(catalog.expired())
    going = {sid for sid, _ in committed if sid not in kept}
    keep_paths: set[str] = set()
    sizes: dict[str, int] = {}
    for sid in catalog.manifest_ids():
        files = catalog.manifest(sid).files()
        if sid in going or sid in expired:
            sizes.update((p.path, p.size_bytes) for p in files)
        else:  # retained, or newer than HEAD (counted as kept: it may be committed)
            keep_paths.update(p.path for p in files)
    return sum(size for path, size in sizes.items() if path not in keep_paths)


def _size(path: Path) -> int:
    try:
        return path.lstat().st_size
    except FileNotFoundError:
        return 0


def _sync_parents(files: Iterable[Path], *, stop: Path) -> None:
    """Make the deletions durable; remove partition folders that became empty."""
    parents = sorted({p.parent for p in files}, key=lambda p: len(p.parts), reverse=True)
    done: set[Path] = set()
    for folder in parents:
        here = folder
        while here != stop and stop in here.parents:
            try:
                os.rmdir(here)  # only succeeds when empty
            except OSError:
                break
            here = here.parent
        if here not in done and here.exists():
            fsync_dir(here)
            done.add(here)


def utc_now() -> datetime:
    """The expiry time gc records."""
    return datetime.now(timezone.utc)
