"""Exports of the vault's snapshots to other table formats, and the records that keep their files.

An export publishes vault snapshots in another format *without copying* their files: the other
format's metadata names the vault's own Parquet files. So the vault must not delete a file an
export still names. Each export target (an Iceberg catalog and namespace) has one **export
record**, ``exports/iceberg-<key>.json`` in the vault (docs/format.md), that lists the vault
snapshots whose files the target's metadata names. ``gc`` keeps every snapshot an export record
lists (reason ``iceberg-export <catalog> <namespace>``), exactly as it keeps a tagged one. A
record changes only when the export runs again (it then lists what the target names *then*:
after snapshots were expired on the Iceberg side, fewer), or when it is removed
(`Warehouse.forget_iceberg_export`).

Everything that reads or writes these records is here; `wrdsvault._iceberg` does the export.
"""

from __future__ import annotations

import hashlib
import json
import os
from datetime import datetime
from pathlib import Path
from typing import Any, Final

import attrs

from wrdsvault._storage.atomic import atomic_write_bytes, fsync_dir, make_dirs
from wrdsvault._storage.layout import SNAPSHOT_ID_RE, Layout
from wrdsvault.errors import VaultFormatError
from wrdsvault.manifest import canonical_json, format_timestamp

__all__ = [
    "RECORD_FORMAT",
    "ExportRecord",
    "IcebergExport",
    "export_holds",
    "read_records",
    "record_key",
    "remove_record",
    "scan_records",
    "write_record",
]

#: The format of an export record (its own number, independent of the vault's).
RECORD_FORMAT: Final = 1
_RECORD_PREFIX: Final = "iceberg-"


def record_key(catalog: str, namespace: str) -> str:
    """The 16 hex digits naming the record of one target (a catalog and a namespace)."""
    return hashlib.sha256(canonical_json([catalog, namespace])).hexdigest()[:16]


@attrs.frozen(kw_only=True)
class ExportRecord:
    """One export target's record: which vault snapshots its metadata names.

    Attributes:
        catalog: the catalog as the export names it (a URI without password, or a name).
        namespace: the Iceberg namespace of the tables.
        tables: dataset -> Iceberg table identifier (``wrds.crsp_msf``).
        snapshots: the vault snapshot ids whose files the target's metadata names, sorted;
            gc keeps each of them.
        exported_through: the newest vault snapshot the export has seen (``HEAD`` then).
        exported_at: when the export ran (ISO 8601 UTC).
    """

    catalog: str
    namespace: str
    tables: dict[str, str]
    snapshots: tuple[str, ...]
    exported_through: str | None
    exported_at: str

    @property
    def key(self) -> str:
        return record_key(self.catalog, self.namespace)

    @property
    def reason(self) -> str:
        """Why gc keeps the snapshots this record lists."""
        return f"iceberg-export {self.catalog} {self.namespace}"

    def to_json(self) -> dict[str, Any]:
        return {
            "format": RECORD_FORMAT,
            "kind": "iceberg",
            "catalog": self.catalog,
            "namespace": self.namespace,
            "tables": dict(sorted(self.tables.items())),
            "snapshots": list(self.snapshots),
            "exported_through": self.exported_through,
            "exported_at": self.exported_at,
        }

    @classmethod
    def from_json(cls, obj: Any, *, where: str) -> ExportRecord:
        """Parse a record; anything unexpected is damage (`VaultFormatError`), never ignored."""
        try:
            if int(obj["format"]) > RECORD_FORMAT:
                problem = (
                    f"export record format {obj['format']} is newer than this wrdsvault "
                    f"supports ({RECORD_FORMAT}); upgrade wrdsvault"
                )
                raise VaultFormatError(path=where, problem=problem)
            snapshots = tuple(sorted(str(s) for s in obj["snapshots"]))
            if any(SNAPSHOT_ID_RE.fullmatch(s) is None for s in snapshots):
                msg = "a snapshot id is malformed"
                raise ValueError(msg)
            through = obj.get("exported_through")
            return cls(
                catalog=str(obj["catalog"]),
                namespace=str(obj["namespace"]),
                tables={str(k): str(v) for k, v in dict(obj["tables"]).items()},
                snapshots=snapshots,
                exported_through=None if through is None else str(through),
                exported_at=str(obj["exported_at"]),
            )
        except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as exc:
            raise VaultFormatError(
                path=where,
                problem=f"not a wrdsvault export record ({exc}); restore it from a backup, or "
                "run the export again (it rewrites the record), or delete the file if the "
                "export is no longer used (gc then stops keeping its snapshots)",
            ) from exc


def _record_path(layout: Layout, key: str) -> Path:
    if len(key) != 16 or any(c not in "0123456789abcdef" for c in key):
        msg = f"not an export record key: {key!r}"
        raise ValueError(msg)
    return layout.exports_dir / f"{_RECORD_PREFIX}{key}.json"


def read_records(layout: Layout) -> list[ExportRecord]:
    """Every export record of the vault, in file name order.

    Raises:
        VaultFormatError: a record cannot be read or parsed. gc must not guess what a damaged
            record protects, so it refuses to run until the record is repaired or removed.
    """
    records, damaged = scan_records(layout)
    if damaged:
        raise damaged[0]
    return [record for _path, record in records]


def scan_records(
    layout: Layout,
) -> tuple[list[tuple[Path, ExportRecord]], list[VaultFormatError]]:
    """Every export record with its file, and one error per record that cannot be read (what
    `doctor` reports; `read_records` raises the first).

    Raises:
        VaultFormatError: the ``exports/`` folder cannot be listed.
    """
    folder = layout.exports_dir
    try:
        names = sorted(os.listdir(folder))
    except (FileNotFoundError, NotADirectoryError):
        return [], []
    except OSError as exc:
        raise VaultFormatError(
            path=str(folder), problem=f"cannot list the export records ({exc})"
        ) from exc
    out: list[tuple[Path, ExportRecord]] = []
    damaged: list[VaultFormatError] = []
    for name in names:
        if not (name.startswith(_RECORD_PREFIX) and name.endswith(".json")):
            continue  # temp files of an interrupted write, strangers
        path = folder / name
        try:
            obj = json.loads(path.read_bytes())
        except FileNotFoundError:
            continue  # removed while we listed
        except (OSError, ValueError, RecursionError) as exc:
            error = VaultFormatError(
                path=str(path),
                problem=f"cannot read the export record ({exc}); restore it from a backup, run "
                "the export again, or delete it if the export is no longer used",
            )
            error.__cause__ = exc
            damaged.append(error)
            continue
        try:
            out.append((path, ExportRecord.from_json(obj, where=str(path))))
        except VaultFormatError as exc:
            damaged.append(exc)
    return out, damaged


def export_holds(layout: Layout) -> dict[str, tuple[str, ...]]:
    """Snapshot id -> why an export keeps it (``iceberg-export <catalog> <namespace>``).

    Raises:
        VaultFormatError: a record is damaged (see `read_records`).
    """
    holds: dict[str, list[str]] = {}
    for record in read_records(layout):
        for sid in record.snapshots:
            holds.setdefault(sid, []).append(record.reason)
    return {sid: tuple(why) for sid, why in holds.items()}


def write_record(layout: Layout, record: ExportRecord, *, file_mode: int, dir_mode: int) -> Path:
    """Write (or replace) ``record`` atomically and durably; the caller holds the writer lock."""
    path = _record_path(layout, record.key)
    make_dirs(path.parent, mode=dir_mode)
    atomic_write_bytes(path, canonical_json(record.to_json()) + b"\n", mode=file_mode)
    return path


def remove_record(layout: Layout, catalog: str, namespace: str) -> bool:
    """Remove the record of one target (durably); False if there was none."""
    path = _record_path(layout, record_key(catalog, namespace))
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    fsync_dir(path.parent)
    return True


@attrs.frozen(kw_only=True)
class IcebergExport:
    """What `Warehouse.export_iceberg` did.

    Attributes:
        catalog: the catalog (a URI without password, or the catalog's name).
        namespace: the Iceberg namespace.
        tables: dataset -> Iceberg table identifier.
        added: dataset -> the vault snapshot ids this run published as new Iceberg snapshots
            of its table, oldest first (empty lists are left out).
        tags: dataset -> the tags this run created or moved in its table.
        removed_tags: dataset -> the tags this run removed (gone from the vault).
        held: the vault snapshots the export record now lists (gc keeps them).
        record: the export record's path.
    """

    catalog: str
    namespace: str
    tables: dict[str, str]
    added: dict[str, tuple[str, ...]]
    tags: dict[str, tuple[str, ...]]
    removed_tags: dict[str, tuple[str, ...]]
    held: tuple[str, ...]
    record: str

    def summary(self) -> str:
        """The export in words: one line per table, then what the vault keeps for it."""
        lines = []
        for dataset, table in sorted(self.tables.items()):
            added = self.added.get(dataset, ())
            tags = self.tags.get(dataset, ())
            gone = self.removed_tags.get(dataset, ())
            parts = [f"{len(added)} new snapshot(s)" if added else "up to date"]
            if tags:
                parts.append(f"tags {', '.join(tags)}")
            if gone:
                parts.append(f"removed tags {', '.join(gone)}")
            lines.append(f"{dataset} -> {table}: {'; '.join(parts)}")
        lines.append(
            f"{len(self.held)} vault snapshot(s) kept by gc for this export ({self.record})"
        )
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        return {
            "catalog": self.catalog,
            "namespace": self.namespace,
            "tables": dict(self.tables),
            "added": {k: list(v) for k, v in self.added.items()},
            "tags": {k: list(v) for k, v in self.tags.items()},
            "removed_tags": {k: list(v) for k, v in self.removed_tags.items()},
            "held": list(self.held),
            "record": self.record,
        }


def utc_stamp(now: datetime) -> str:
    """``now`` as the record's ``exported_at``."""
    return format_timestamp(now)
