"""Public return types: what a sync did, what a snapshot is."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

import attrs

if TYPE_CHECKING:
    from wrdsvault._storage.diskguard import DiskState
    from wrdsvault.schema import SchemaDrift

__all__ = [
    "BackupReport",
    "DatasetResult",
    "DatasetSummary",
    "FileFault",
    "LockInfo",
    "RepairReport",
    "SnapshotInfo",
    "SyncReport",
    "VaultStatus",
    "VerifyReport",
]

#: ``added``: first sync of the dataset; ``updated``: files changed; ``recorded``: data identical,
#: a new source vintage was recorded; ``unchanged``: nothing to do.
Status = Literal["added", "updated", "recorded", "unchanged"]


@attrs.frozen(kw_only=True)
class DatasetResult:
    """What one sync did to one dataset."""

    dataset: str
    status: Status
    years_written: tuple[int | None, ...] = ()
    years_reused: tuple[int | None, ...] = ()
    years_removed: tuple[int | None, ...] = ()
    #: Years of ``years_written`` taken from the checkpoint of an interrupted sync (not read).
    years_resumed: tuple[int | None, ...] = ()
    rows_written: int = 0
    bytes_written: int = 0
    row_count: int = 0
    change_marker: str | None = None
    drift: SchemaDrift | None = None
    #: The change marker recorded before this sync (``None``: a new dataset, or none recorded).
    previous_change_marker: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "drift": self.drift.to_json() if self.drift else None,
            "dataset": self.dataset,
            "status": self.status,
            "years_written": list(self.years_written),
            "years_reused": list(self.years_reused),
            "years_removed": list(self.years_removed),
            "years_resumed": list(self.years_resumed),
            "rows_written": self.rows_written,
            "bytes_written": self.bytes_written,
            "row_count": self.row_count,
            "change_marker": self.change_marker,
            "previous_change_marker": self.previous_change_marker,
        }


@attrs.frozen(kw_only=True)
class SyncReport:
    """The outcome of `Warehouse.sync`: one commit (or none) for all datasets synced together.

    ``notes`` says how `Warehouse.sync_all` chose each dataset's options where the manifest did
    not record them (a dataset synced by an older wrdsvault); empty otherwise.
    """

    snapshot_id: str | None
    parent_snapshot_id: str | None
    committed: bool
    datasets: tuple[DatasetResult, ...]
    duration_s: float
    notes: tuple[str, ...] = ()

    @property
    def unchanged(self) -> bool:
        """True when nothing changed and no snapshot was committed."""
        return not self.committed

    @property
    def bytes_written(self) -> int:
        return sum(d.bytes_written for d in self.datasets)

    @property
    def rows_written(self) -> int:
        return sum(d.rows_written for d in self.datasets)

    def __getitem__(self, dataset: str) -> DatasetResult:
        for d in self.datasets:
            if d.dataset == dataset:
                return d
        raise KeyError(dataset)

    def to_json(self) -> dict[str, Any]:
        return {
            "snapshot_id": self.snapshot_id,
            "parent_snapshot_id": self.parent_snapshot_id,
            "committed": self.committed,
            "duration_s": round(self.duration_s, 3),
            "datasets": [d.to_json() for d in self.datasets],
            "notes": list(self.notes),
        }

    def summary(self) -> str:
        """A few human lines: one per dataset, then the commit."""
        lines = [f"note: {note}" for note in self.notes]
        for d in self.datasets:
            detail = ""
            if d.status in ("added", "updated"):
                detail = (
                    f": wrote {len(d.years_written)} partition(s), {d.rows_written:,} rows, "
                    f"{d.bytes_written:,} bytes; reused {len(d.years_reused)}"
                )
                if d.years_removed:
                    detail += f"; removed {len(d.years_removed)}"
                if d.years_resumed:
                    detail += f" ({len(d.years_resumed)} resumed from an interrupted sync)"
            if d.drift is not None:
                detail += f" (schema drift accepted: {d.drift.summary()})"
            lines.append(f"{d.dataset}: {d.status}{detail}")
        if self.committed:
            lines.append(f"committed snapshot {self.snapshot_id} in {self.duration_s:.2f} s")
        else:
            lines.append(f"unchanged: no new snapshot ({self.duration_s:.2f} s)")
        return "\n".join(lines)


@attrs.frozen(kw_only=True)
class SnapshotInfo:
    """A committed snapshot as listed by `Warehouse.snapshots` (``snapshot_id`` names it)."""

    snapshot_id: str
    sequence: int
    committed_at: datetime
    fingerprint: str
    datasets: tuple[str, ...]
    row_count: int
    size_bytes: int
    tags: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "snapshot_id": self.snapshot_id,
            "sequence": self.sequence,
            "committed_at": self.committed_at.isoformat(),
            "fingerprint": self.fingerprint,
            "datasets": list(self.datasets),
            "row_count": self.row_count,
            "size_bytes": self.size_bytes,
            "tags": list(self.tags),
        }


@attrs.frozen(kw_only=True)
class DatasetSummary:
    """One dataset of the latest snapshot, as `Warehouse.status` shows it.

    ``age_s`` is the time since ``synced_at``, the last sync that changed the dataset (None if
    the manifest has no readable time); ``stale`` is whether it exceeds ``status(max_age_s=)``
    (None without a limit).
    """

    name: str
    row_count: int
    size_bytes: int
    partitions: int
    first_year: int | None
    last_year: int | None
    source: str
    comment: str | None
    synced_at: str
    age_s: float | None = None
    stale: bool | None = None

    def to_json(self) -> dict[str, Any]:
        return attrs.asdict(self)


def _owner(value: object) -> dict[str, Any]:
    return dict(value) if isinstance(value, dict) else {}


@attrs.frozen(kw_only=True)
class LockInfo:
    """The writer lock as a human needs to see it (`Warehouse.lock_info`, ``wrdsvault status``).

    Attributes:
        state: ``"free"``, ``"held"``, ``"stale: <why>"`` (the next writer breaks it), or
            ``"unknown: <why>"`` (cannot be judged here, e.g. without write access).
        path: the lock file.
        owner: the owner record as its writer wrote it (pid, start, host, boot_id, pid_ns,
            machine_id, acquired_at, operation, epoch, token, heartbeat_s, format); empty when
            the lock is free or its record unreadable. `pid`, `host`, ... read it.
        unreadable: a lock file exists but its record cannot be parsed (or read).
        same_host: the owner ran on this host, boot and PID namespace (judged by its PID).
        heartbeat_at: the lock file's mtime (ISO UTC).
        heartbeat_age_s: seconds since then, by the clock ``clock`` names.
        clock: ``"server"`` (the file server's, probed by touching a file) or ``"local"`` (ours:
            probing needs write access).
        write_access: whether this process may write the vault folder, as breaking needs.
        incarnation: the owner's token, or ``ino<inode>`` for an unreadable record: what
            `Warehouse.break_lock` takes as ``expect_token``.
        breakers: claim files of breakers at work on this incarnation now.
        last_epoch: the last fencing epoch (only when the lock is free).
        broken: set by `Warehouse.break_lock`: whether it broke a lock.
    """

    state: str
    path: str
    owner: dict[str, Any] = attrs.field(factory=dict, converter=_owner)
    unreadable: bool = False
    same_host: bool = False
    heartbeat_at: str | None = None
    heartbeat_age_s: float | None = None
    clock: str | None = None
    write_access: bool | None = None
    incarnation: str | None = None
    breakers: tuple[str, ...] = ()
    last_epoch: int | None = None
    broken: bool | None = None

    @property
    def free(self) -> bool:
        return self.state == "free"

    @property
    def stale(self) -> bool:
        return self.state.startswith("stale")

    @property
    def pid(self) -> int | None:
        pid = self.owner.get("pid")
        return pid if isinstance(pid, int) else None

    @property
    def host(self) -> str | None:
        return self._text("host")

    @property
    def operation(self) -> str | None:
        return self._text("operation")

    @property
    def acquired_at(self) -> str | None:
        return self._text("acquired_at")

    @property
    def token(self) -> str | None:
        return self._text("token")

    def _text(self, key: str) -> str | None:
        value = self.owner.get(key)
        return value if isinstance(value, str) else None

    def to_json(self) -> dict[str, Any]:
        """The owner record's fields and the lock's state, flat (``--json`` of status/unlock)."""
        if self.free:
            out: dict[str, Any] = {"state": self.state, "path": self.path}
            if self.last_epoch is not None:
                out["last_epoch"] = self.last_epoch
        else:
            out = {
                **self.owner,
                "state": self.state,
                "path": self.path,
                "unreadable": self.unreadable,
                "same_host": self.same_host,
                "heartbeat_at": self.heartbeat_at,
                "heartbeat_age_s": self.heartbeat_age_s,
                "clock": self.clock,
                "write_access": self.write_access,
                "incarnation": self.incarnation,
                "breakers": list(self.breakers),
            }
        if self.broken is not None:
            out["broken"] = self.broken
        return out


@attrs.frozen(kw_only=True)
class VaultStatus:
    """What `Warehouse.status` reports.

    ``format_version`` is the vault's own, from ``vault.json`` (the format it was created in),
    not the newest format this wrdsvault writes (`wrdsvault.FORMAT_VERSION`).
    """

    root: str
    format_version: int
    snapshot_count: int
    latest_snapshot_id: str | None
    latest_committed_at: datetime | None
    fingerprint: str | None
    datasets: tuple[DatasetSummary, ...]
    tags: dict[str, str]
    lock_holder: LockInfo | None
    disk: DiskState | None = None
    drift: dict[str, str] = attrs.field(factory=dict)
    quarantined: int = 0
    #: Bytes a gc by the stored retention policy would free (from the manifests alone).
    reclaimable_bytes: int = 0
    #: Snapshots gc expired (listed by `Warehouse.expired`).
    expired_count: int = 0
    max_age_s: float | None = None

    @property
    def stale(self) -> bool | None:
        """Some dataset's last sync is older than ``max_age_s`` (or the vault holds none);
        None without a limit."""
        if self.max_age_s is None:
            return None
        return not self.datasets or any(d.stale is not False for d in self.datasets)

    def to_json(self) -> dict[str, Any]:
        return {
            "root": self.root,
            "format_version": self.format_version,
            "snapshot_count": self.snapshot_count,
            "latest_snapshot_id": self.latest_snapshot_id,
            "latest_committed_at": (
                self.latest_committed_at.isoformat() if self.latest_committed_at else None
            ),
            "fingerprint": self.fingerprint,
            "datasets": [d.to_json() for d in self.datasets],
            "tags": dict(self.tags),
            "lock_holder": self.lock_holder.to_json() if self.lock_holder else None,
            "disk": self.disk.to_json() if self.disk else None,
            "drift": dict(self.drift),
            "quarantined": self.quarantined,
            "reclaimable_bytes": self.reclaimable_bytes,
            "expired_count": self.expired_count,
            "max_age_s": self.max_age_s,
            "stale": self.stale,
        }


@attrs.frozen(kw_only=True)
class FileFault:
    """One damaged file (or manifest) found by `Warehouse.verify`.

    ``problem`` is ``"missing"``, ``"size"`` (truncated or grown), ``"sha256"`` (content altered),
    ``"not-a-file"`` (a symlink or folder where a file should be, or a symlinked folder on the
    way to it), ``"unreadable"`` (an OS error such as EIO while looking at or reading it) or
    ``"manifest"`` (a manifest that cannot be read or fails its fingerprint).
    """

    path: str
    problem: str
    detail: str
    dataset: str | None = None
    year: int | None = None
    snapshots: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "problem": self.problem,
            "detail": self.detail,
            "dataset": self.dataset,
            "year": self.year,
            "snapshots": list(self.snapshots),
        }


@attrs.frozen(kw_only=True)
class VerifyReport:
    """What `Warehouse.verify` checked and what it found."""

    snapshots: tuple[str, ...]
    files_checked: int
    bytes_checked: int
    duration_s: float
    faults: tuple[FileFault, ...]

    @property
    def ok(self) -> bool:
        """True when every file matched its manifest."""
        return not self.faults

    @property
    def throughput_bytes_per_s(self) -> float:
        return self.bytes_checked / self.duration_s if self.duration_s > 0 else 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "snapshots": list(self.snapshots),
            "files_checked": self.files_checked,
            "bytes_checked": self.bytes_checked,
            "duration_s": round(self.duration_s, 3),
            "faults": [f.to_json() for f in self.faults],
        }

    def summary(self) -> str:
        head = (
            f"checked {self.files_checked} files, {self.bytes_checked / 1e6:,.1f} MB in "
            f"{self.duration_s:.2f} s ({self.throughput_bytes_per_s / 1e6:,.0f} MB/s) "
            f"across {len(self.snapshots)} snapshot(s)"
        )
        if self.ok:
            return head + ": all files intact"
        lines = [head + f": {len(self.faults)} fault(s)"]
        for f in self.faults:
            where = f" ({f.dataset} {'all' if f.year is None else f.year})" if f.dataset else ""
            lines.append(f"  {f.problem:<10} {f.path}{where}: {f.detail}")
        lines.append(
            "restore damaged files with `wrdsvault repair --from BACKUP`, or re-sync the "
            "affected datasets with full=True"
        )
        return "\n".join(lines)


@attrs.frozen(kw_only=True)
class BackupReport:
    """What `Warehouse.backup` copied.

    Attributes:
        destination: the backup vault (absolute).
        snapshots: the source's committed snapshots this backup holds (pinned at its start).
        new_snapshots: those whose manifests this run wrote (the rest were already there).
        tags: the tags this run wrote or moved at the destination.
        head: the destination's HEAD after the backup.
        copied_files: data files copied (each fsynced and re-hashed at the destination).
        copied_bytes: their bytes.
        skipped_files: data files the destination already had (same name and size; with
            ``verify``, same hash).
        skipped_bytes: their bytes.
        replaced_files: files the destination had damaged (wrong size or, with ``verify``,
            wrong hash) and that were copied again (counted in ``copied_files`` too).
        verified_files: files re-hashed at the destination by ``verify`` (0 without it).
        faults: damage ``verify`` found in snapshots only the backup keeps (the source no
            longer has them, so nothing could be copied again); empty otherwise.
        duration_s: wall time.
    """

    destination: str
    snapshots: tuple[str, ...]
    new_snapshots: tuple[str, ...]
    tags: tuple[str, ...]
    head: str | None
    copied_files: int
    copied_bytes: int
    skipped_files: int
    skipped_bytes: int
    replaced_files: int = 0
    verified_files: int = 0
    faults: tuple[FileFault, ...] = ()
    duration_s: float = 0.0

    @property
    def ok(self) -> bool:
        """True when every snapshot in the backup is complete (always, unless ``faults``)."""
        return not self.faults

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "destination": self.destination,
            "snapshots": list(self.snapshots),
            "new_snapshots": list(self.new_snapshots),
            "tags": list(self.tags),
            "head": self.head,
            "copied_files": self.copied_files,
            "copied_bytes": self.copied_bytes,
            "skipped_files": self.skipped_files,
            "skipped_bytes": self.skipped_bytes,
            "replaced_files": self.replaced_files,
            "verified_files": self.verified_files,
            "faults": [f.to_json() for f in self.faults],
            "duration_s": round(self.duration_s, 3),
        }

    def summary(self) -> str:
        lines = [
            f"backup {self.destination}: {len(self.snapshots)} snapshot(s) "
            f"({len(self.new_snapshots)} new), HEAD {self.head or '(none)'}; copied "
            f"{self.copied_files} file(s), {self.copied_bytes / 1e6:,.1f} MB; skipped "
            f"{self.skipped_files} file(s) already there, {self.skipped_bytes / 1e6:,.1f} MB "
            f"in {self.duration_s:.2f} s"
        ]
        if self.replaced_files:
            lines.append(f"  replaced {self.replaced_files} damaged file(s) in the backup")
        if self.verified_files:
            lines.append(f"  re-hashed {self.verified_files} file(s) in the backup")
        for f in self.faults:
            lines.append(f"  {f.problem:<10} {f.path}: {f.detail}")
        if self.faults:
            lines.append(
                "these snapshots exist only in the backup, so their damaged files cannot be "
                "copied again; restore them from another backup if you keep one"
            )
        return "\n".join(lines)


@attrs.frozen(kw_only=True)
class RepairReport:
    """What `Warehouse.repair` restored from a backup.

    Attributes:
        source: the backup vault the files came from.
        checked_files: data files verify looked at (every committed snapshot).
        restored: vault-relative paths restored (data files and manifests), each verified.
        restored_bytes: their bytes.
        not_restored: the faults that remain, each with why the backup could not mend it.
        duration_s: wall time.
    """

    source: str
    checked_files: int
    restored: tuple[str, ...]
    restored_bytes: int
    not_restored: tuple[FileFault, ...]
    duration_s: float = 0.0

    @property
    def ok(self) -> bool:
        """True when the vault is intact now (nothing was damaged, or all of it was restored)."""
        return not self.not_restored

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "source": self.source,
            "checked_files": self.checked_files,
            "restored": list(self.restored),
            "restored_bytes": self.restored_bytes,
            "not_restored": [f.to_json() for f in self.not_restored],
            "duration_s": round(self.duration_s, 3),
        }

    def summary(self) -> str:
        head = (
            f"repair from {self.source}: checked {self.checked_files} file(s); restored "
            f"{len(self.restored)} ({self.restored_bytes / 1e6:,.1f} MB)"
        )
        lines = [head + (": the vault is intact" if self.ok else "")]
        lines += [f"  restored   {p}" for p in self.restored]
        for f in self.not_restored:
            lines.append(f"  {f.problem:<10} {f.path}: {f.detail}")
        if not self.ok:
            lines.append(
                f"{len(self.not_restored)} fault(s) remain: repair from another backup, or "
                "re-sync the affected datasets with full=True"
            )
        return "\n".join(lines)
