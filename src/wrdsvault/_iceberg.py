"""Publish the vault's snapshots as Apache Iceberg tables, without copying a byte of data.

docs/scale-out.md ("Snapshots as an Apache Iceberg table") is the user's description; this is
how it works. Needs the ``iceberg`` extra (pyiceberg); nothing here imports it before a call.

* One Iceberg table per dataset: ``<namespace>.<library>_<table>`` (``wrds.crsp_msf``). A flat
  name, because many catalogs (Glue, Hive, most Trino connectors) have one level of namespace.
* Partitioned like the files: a ``year`` transform on the dataset's partition column when it is
  a date or timestamp (each vault file holds one calendar year, so each file is one Iceberg
  partition); unpartitioned otherwise (an unpartitioned dataset is one file anyway).
* Data files are the vault's own files, named by absolute ``file://`` URI. They carry no Iceberg
  field ids, so each table has a name mapping (``schema.name-mapping.default``) that every
  reader uses to match columns by name; the export keeps it in step with the schema.
* One Iceberg snapshot per vault snapshot that changed the dataset (its files or columns), in
  commit order: an overwrite that deletes the files the vault snapshot no longer lists and adds
  the new ones, so each Iceberg snapshot holds exactly that vault snapshot's files. Its summary
  names the vault snapshot (``wrdsvault.snapshot-id``, ``wrdsvault.committed-at``) and its
  timestamp is the vault commit time, so "as of" a time answers as the vault does.
* Vault tags become Iceberg tags on the snapshot current at the tagged vault snapshot; the table
  property ``wrdsvault.tags`` lists the tags the export manages (others are left alone).
* Incremental: the snapshots already recorded in a table are skipped. The table metadata itself
  is the record of what was exported, so a lost export record costs nothing but gc protection.
* Columns added, dropped or widened (int -> long, float -> double, a wider decimal) evolve the
  schema; any other type change is refused (`IcebergExportError`).
"""

from __future__ import annotations

import json
import re
import urllib.parse
from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any, Final, cast

import pyarrow as pa

from wrdsvault._optional import require
from wrdsvault._storage.catalog import Catalog
from wrdsvault._storage.crashpoints import ExportPoint, export_point
from wrdsvault._storage.layout import Layout
from wrdsvault.errors import IcebergExportError, WrdsVaultError
from wrdsvault.exports import (
    ExportRecord,
    IcebergExport,
    read_records,
    record_key,
    utc_stamp,
    write_record,
)
from wrdsvault.manifest import ColumnSchema, DatasetEntry, Manifest, format_timestamp
from wrdsvault.schema import arrow_schema
from wrdsvault.settings import VaultSettings

if TYPE_CHECKING:
    from pyiceberg.catalog import Catalog as IcebergCatalog
    from pyiceberg.table import Table, Transaction
    from pyiceberg.typedef import Identifier

__all__ = [
    "SNAPSHOT_PROPERTY",
    "TAGS_PROPERTY",
    "catalog_label",
    "default_catalog_uri",
    "export",
    "table_name",
]

#: Snapshot summary property: the vault snapshot an Iceberg snapshot is.
SNAPSHOT_PROPERTY: Final = "wrdsvault.snapshot-id"
#: Snapshot summary property: that vault snapshot's commit time (ISO 8601 UTC).
COMMITTED_PROPERTY: Final = "wrdsvault.committed-at"
#: Table property: the dataset the table publishes (a table without it is not ours).
DATASET_PROPERTY: Final = "wrdsvault.dataset"
#: Table property: the Iceberg tags the export manages (JSON list).
TAGS_PROPERTY: Final = "wrdsvault.tags"
_NAME_MAPPING: Final = "schema.name-mapping.default"
_NAMESPACE_RE: Final = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*$")
#: Ref names Iceberg reserves: a vault tag of that name is not published.
_RESERVED_REFS: Final = frozenset({"main"})


def default_catalog_uri(layout: Layout) -> str:
    """The default catalog: a SQLite file beside the vault (``<vault>-iceberg.db``)."""
    return f"sqlite:///{layout.root.parent / (layout.root.name + '-iceberg.db')}"


def _default_warehouse(layout: Layout) -> str:
    """Where the tables' metadata goes by default: a folder beside the vault."""
    return (layout.root.parent / (layout.root.name + "-iceberg")).as_uri()


def _strip_password(uri: str) -> str:
    parts = urllib.parse.urlsplit(uri)
    if parts.password is None:
        return uri
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = f"{parts.username}@" if parts.username else ""
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{user}{netloc}"))


def catalog_label(catalog: object) -> str:
    """How the export record and messages name a catalog (never with a password)."""
    if isinstance(catalog, str):
        return _strip_password(catalog)
    if isinstance(catalog, Mapping):
        uri = catalog.get("uri")
        return _strip_password(str(uri)) if uri else str(catalog.get("name", "wrdsvault"))
    name = str(getattr(catalog, "name", "catalog"))
    uri = getattr(catalog, "properties", {}).get("uri")
    return _strip_password(str(uri)) if uri else name


def table_name(dataset: str) -> str:
    """The Iceberg table name of a dataset within the namespace: ``crsp.msf`` -> ``crsp_msf``."""
    return dataset.replace(".", "_")


def _load_catalog(catalog: object, layout: Layout, label: str) -> IcebergCatalog:
    pyiceberg_catalog = require("pyiceberg.catalog", "iceberg")
    if isinstance(catalog, pyiceberg_catalog.Catalog):
        return cast("IcebergCatalog", catalog)
    if isinstance(catalog, str):
        name, props = "wrdsvault", {"uri": catalog, "warehouse": _default_warehouse(layout)}
    elif isinstance(catalog, Mapping):
        props = {str(k): v for k, v in catalog.items()}
        name = str(props.pop("name", "wrdsvault"))
        if "warehouse" not in props and str(props.get("uri", "")).startswith("sqlite"):
            props["warehouse"] = _default_warehouse(layout)
    else:
        msg = (
            "catalog must be a URI string, a dict of pyiceberg catalog properties or a "
            f"pyiceberg Catalog, not {type(catalog).__name__}"
        )
        raise TypeError(msg)
    try:
        loaded: IcebergCatalog = pyiceberg_catalog.load_catalog(name, **props)
    except Exception as exc:  # pyiceberg raises ValueError, SQLAlchemy errors, OSError ...
        raise IcebergExportError(
            dataset="",
            catalog=label,
            reason=f"cannot open the catalog ({type(exc).__name__}: {exc}); check the URI or "
            "the catalog properties",
        ) from exc
    return loaded


def export(
    layout: Layout,
    vault: Catalog,
    settings: VaultSettings,
    *,
    catalog: object,
    namespace: str,
    now: datetime,
) -> IcebergExport:
    """Export every committed snapshot not yet in the tables; the caller holds the writer lock.

    Raises:
        IcebergExportError: refused or failed (see the class); tables committed before stay.
        MissingExtraError: pyiceberg is not installed.
    """
    if not isinstance(namespace, str) or _NAMESPACE_RE.fullmatch(namespace) is None:
        raise IcebergExportError(
            dataset="",
            catalog=catalog_label(catalog),
            reason=f"invalid namespace {namespace!r}: letters, digits and '_', levels "
            "separated by '.' (e.g. 'wrds')",
        )
    label = catalog_label(catalog)
    ice = _load_catalog(catalog, layout, label)
    committed = vault.committed()
    manifests = {sid: vault.manifest(sid) for sid, _ in committed}
    known = set(manifests) | set(vault.expired())
    tags = vault.tags()
    datasets = sorted({d for m in manifests.values() for d in m.datasets})
    by_name: dict[str, str] = {}
    for dataset in datasets:
        other = by_name.setdefault(table_name(dataset), dataset)
        if other != dataset:
            raise IcebergExportError(
                dataset=dataset,
                catalog=label,
                reason=f"{dataset} and {other} would both be table {table_name(dataset)}; "
                "one of them cannot be exported (rename its library, or drop it from the vault)",
            )
    ns = tuple(namespace.split("."))
    through = committed[-1][0] if committed else None
    try:
        ice.create_namespace_if_not_exists(ns)
        # Every table is judged (ours? this vault's?) before anything is written anywhere.
        exports = {
            d: _TableExport(ice, (*ns, table_name(d)), d, layout, label, manifests, known)
            for d in datasets
        }
    except WrdsVaultError:
        raise
    except Exception as exc:  # the catalog failed
        raise _failed("", label, "cannot read the namespace or its tables", exc) from exc
    key = record_key(label, namespace)
    before = {r.key: r for r in read_records(layout)}.get(key)
    # Before any table changes: keep everything the tables may name by the end of this run
    # (what they named before, and every committed snapshot), so that a crash part-way leaves
    # gc keeping more than the tables need, never less. The exact record replaces it below.
    intent = ExportRecord(
        catalog=label,
        namespace=namespace,
        tables=dict(before.tables) if before else {},
        snapshots=tuple(sorted(set(before.snapshots if before else ()) | set(manifests))),
        exported_through=before.exported_through if before else None,
        exported_at=before.exported_at if before else utc_stamp(now),
    )
    write_record(layout, intent, file_mode=settings.file_mode, dir_mode=settings.dir_mode)
    export_point(ExportPoint.INTENT_WRITTEN)
    tables: dict[str, str] = {}
    added: dict[str, tuple[str, ...]] = {}
    moved: dict[str, tuple[str, ...]] = {}
    removed: dict[str, tuple[str, ...]] = {}
    held: set[str] = set()
    for dataset, table in exports.items():
        tables[dataset] = ".".join(table.ident)
        try:
            new = table.export(committed)
            tagged, gone = table.publish_tags(tags)
            held.update(table.recorded().values())
        except WrdsVaultError:
            raise
        except Exception as exc:  # the catalog, the file system, a footer pyarrow cannot read
            raise _failed(dataset, label, "the export failed", exc) from exc
        if new:
            added[dataset] = tuple(new)
        if tagged:
            moved[dataset] = tuple(tagged)
        if gone:
            removed[dataset] = tuple(gone)
    record = ExportRecord(
        catalog=label,
        namespace=namespace,
        tables=tables,
        snapshots=tuple(sorted(held & set(manifests))),
        exported_through=through,
        exported_at=utc_stamp(now),
    )
    path = write_record(layout, record, file_mode=settings.file_mode, dir_mode=settings.dir_mode)
    export_point(ExportPoint.RECORD_WRITTEN)
    return IcebergExport(
        catalog=label,
        namespace=namespace,
        tables=tables,
        added=added,
        tags=moved,
        removed_tags=removed,
        held=record.snapshots,
        record=layout.relative(path),
    )


def _failed(dataset: str, label: str, what: str, exc: BaseException) -> IcebergExportError:
    return IcebergExportError(
        dataset=dataset,
        catalog=label,
        reason=f"{what} ({type(exc).__name__}: {exc}); tables committed before stay valid, and "
        "the next export goes on from there",
    )


class _TableExport:
    """One dataset's table: what it already records, and the snapshots and tags to add."""

    def __init__(
        self,
        ice: IcebergCatalog,
        ident: Identifier,
        dataset: str,
        layout: Layout,
        label: str,
        manifests: dict[str, Manifest],
        known: set[str],
    ) -> None:
        self.ice = ice
        self.ident = ident
        self.dataset = dataset
        self.layout = layout
        self.label = label
        self.manifests = manifests
        self.table: Table | None = ice.load_table(ident) if ice.table_exists(ident) else None
        if self.table is not None:
            self._check_ours(known)

    def _refuse(self, reason: str) -> IcebergExportError:
        return IcebergExportError(dataset=self.dataset, catalog=self.label, reason=reason)

    def _check_ours(self, known: set[str]) -> None:
        assert self.table is not None
        name = ".".join(self.ident)
        if self.table.properties.get(DATASET_PROPERTY) != self.dataset:
            raise self._refuse(
                f"table {name} exists and was not written by a wrdsvault export of "
                f"{self.dataset}; drop it, or export to another namespace"
            )
        for snap in self.table.metadata.snapshots:
            sid = snap.summary[SNAPSHOT_PROPERTY] if snap.summary else None
            if sid is None:
                raise self._refuse(
                    f"table {name} has snapshot {snap.snapshot_id}, which is not a vault "
                    "snapshot (written by another tool); drop the table or export to another "
                    "namespace"
                )
            if sid not in known:
                raise self._refuse(
                    f"table {name} records vault snapshot {sid}, which this vault does not "
                    "have: it was exported from another vault, or this vault was restored from "
                    "an older copy. Export to another namespace, or drop the table"
                )

    def recorded(self) -> dict[int, str]:
        """Iceberg snapshot id -> the vault snapshot it is, for every snapshot in the table."""
        if self.table is None:
            return {}
        out = {}
        for snap in self.table.metadata.snapshots:
            sid = snap.summary[SNAPSHOT_PROPERTY] if snap.summary else None
            if sid is not None:
                out[snap.snapshot_id] = str(sid)
        return out

    def _uri(self, relpath: str) -> str:
        return self.layout.resolve_relpath(relpath).as_uri()

    def export(self, committed: list[tuple[str, datetime]]) -> list[str]:
        """Add an Iceberg snapshot for each vault snapshot after the last one recorded that
        changed the dataset; return their vault ids."""
        recorded = self.recorded()
        last = max(recorded.values(), default="")
        prev = self.manifests.get(last)
        prev_entry = prev.datasets.get(self.dataset) if prev is not None else None
        columns = prev_entry.columns if prev_entry is not None else None
        files = {self._uri(p.path) for p in prev_entry.partitions} if prev_entry else set()
        # The last recorded manifest is gone (gc expired it once no record kept it): the
        # table's own files stand for it, and its columns are those of the same files.
        unknown = self.table is not None and prev is None
        if unknown:
            files = self._current_files()
        out = []
        for sid, _ in committed:
            if sid <= last:
                continue
            entry = self.manifests[sid].datasets.get(self.dataset)
            target = {self._uri(p.path) for p in entry.partitions} if entry else set()
            new_columns = entry.columns if entry is not None else columns
            if target == files and (new_columns == columns or unknown):
                columns, unknown = new_columns, False
                continue
            if self.table is None and entry is None:
                continue
            self._commit(sid, entry, target - files, files - target, columns)
            files, columns, unknown = target, new_columns, False
            out.append(sid)
        return out

    def _current_files(self) -> set[str]:
        assert self.table is not None
        if self.table.current_snapshot() is None:
            return set()
        return {task.file.file_path for task in self.table.scan().plan_files()}

    def _commit(
        self,
        sid: str,
        entry: DatasetEntry | None,
        add: set[str],
        delete: set[str],
        old_columns: tuple[ColumnSchema, ...] | None,
    ) -> None:
        manifest = self.manifests[sid]
        if self.table is None:
            assert entry is not None
            txn = self._create(entry)
        else:
            txn = self.table.transaction()
            if entry is not None and old_columns is None:
                # The last recorded vault snapshot is gone (gc expired it after its export
                # record was removed): evolve from the table's own schema, a no-op if equal.
                self._evolve(txn, entry, tuple(self.table.schema().column_names))
            elif entry is not None and old_columns is not None and entry.columns != old_columns:
                self._evolve(txn, entry, tuple(c.name for c in old_columns))
        pyarrow_io = require("pyiceberg.io.pyarrow", "iceberg")
        metadata = txn.table_metadata
        stamp = int(manifest.committed_at.timestamp() * 1000)
        if self.table is not None:  # never before the table's last update (Iceberg's rule)
            stamp = max(stamp, self.table.metadata.last_updated_ms)
        props = {
            SNAPSHOT_PROPERTY: sid,
            COMMITTED_PROPERTY: format_timestamp(manifest.committed_at),
        }
        producer = _backdated_overwrite(txn, stamp, props, deletes=bool(delete), adds=bool(add))
        if delete:
            assert self.table is not None
            for task in self.table.scan().plan_files():
                if task.file.file_path in delete:
                    producer.delete_data_file(task.file)
        io = txn._table.io
        for uri in sorted(add):
            producer.append_data_file(pyarrow_io.parquet_file_to_data_file(io, metadata, uri))
        producer.commit()
        txn.commit_transaction()
        export_point(ExportPoint.TABLE_COMMITTED)
        self.table = self.ice.load_table(self.ident)  # a created table comes back staged

    def _create(self, entry: DatasetEntry) -> Transaction:
        catalog_mod = require("pyiceberg.catalog", "iceberg")
        schema_mod = require("pyiceberg.schema", "iceberg")
        partitioning = require("pyiceberg.partitioning", "iceberg")
        transforms = require("pyiceberg.transforms", "iceberg")
        types = require("pyiceberg.types", "iceberg")
        schema = schema_mod.assign_fresh_schema_ids(
            catalog_mod.Catalog._convert_schema_if_needed(_arrow(entry.columns))
        )
        spec = partitioning.UNPARTITIONED_PARTITION_SPEC
        column = entry.partition_column
        if column is not None:
            field = schema.find_field(column)
            dated = (types.DateType, types.TimestampType, types.TimestamptzType)
            if isinstance(field.field_type, dated):
                spec = partitioning.PartitionSpec(
                    partitioning.PartitionField(
                        source_id=field.field_id,
                        field_id=1000,
                        transform=transforms.YearTransform(),
                        name=f"{column}_year",
                    )
                )
        txn: Transaction = self.ice.create_table_transaction(
            self.ident,
            schema=schema,
            partition_spec=spec,
            properties={DATASET_PROPERTY: entry.name},
        )
        _set_name_mapping(txn)
        return txn

    def _evolve(self, txn: Transaction, entry: DatasetEntry, old_names: tuple[str, ...]) -> None:
        """Add, drop and widen columns as the vault snapshot did, or refuse."""
        exceptions = require("pyiceberg.exceptions", "iceberg")
        names = {c.name for c in entry.columns}
        try:
            with txn.update_schema() as update:
                update.union_by_name(_arrow(entry.columns))
                for old in old_names:
                    if old not in names:
                        update.delete_column(old)
        except (ValueError, exceptions.ValidationError) as exc:
            raise self._refuse(
                f"the columns changed in a way an Iceberg schema cannot evolve ({exc}); "
                "export to a new namespace (a new table) from here on"
            ) from exc
        _set_name_mapping(txn)

    def publish_tags(self, tags: dict[str, str]) -> tuple[list[str], list[str]]:
        """Point each vault tag at the Iceberg snapshot current at the tagged vault snapshot;
        remove the tags this export made that the vault no longer has."""
        if self.table is None:
            return [], []
        table = self.table
        recorded = sorted((sid, snap_id) for snap_id, sid in self.recorded().items())
        managed = set(json.loads(table.properties.get(TAGS_PROPERTY, "[]")))
        wanted: dict[str, int] = {}
        for tag, sid in sorted(tags.items()):
            if tag in _RESERVED_REFS:
                continue
            target = [snap_id for vsid, snap_id in recorded if vsid <= sid]
            if target:
                wanted[tag] = target[-1]
        refs = table.metadata.refs
        changed = [t for t, sid in wanted.items() if getattr(refs.get(t), "snapshot_id", 0) != sid]
        gone = sorted(t for t in managed - set(wanted) if t in refs)
        if not changed and not gone and managed == set(wanted):
            return [], []
        snapshot_mod = require("pyiceberg.table.update.snapshot", "iceberg")
        with table.transaction() as txn:
            with snapshot_mod.ManageSnapshots(transaction=txn) as manage:
                for tag in changed + gone:
                    if tag in refs:
                        manage.remove_tag(tag)
                for tag in changed:
                    manage.create_tag(snapshot_id=wanted[tag], tag_name=tag)
            txn.set_properties({TAGS_PROPERTY: json.dumps(sorted(wanted))})
        export_point(ExportPoint.TAGS_COMMITTED)
        return changed, gone


def _set_name_mapping(txn: Transaction) -> None:
    """Map column names to field ids (the vault's files carry none): the current schema's, and
    those of dropped columns, which older snapshots' files still have (a reader fails on a
    file column the mapping does not name)."""
    names = require("pyiceberg.table.name_mapping", "iceberg")
    current = txn.table_metadata.schema().name_mapping
    fields = list(current.root)
    taken = {n for f in fields for n in f.names}
    if previous := txn.table_metadata.properties.get(_NAME_MAPPING):
        for field in names.parse_mapping_from_json(previous).root:
            if not taken & set(field.names):
                fields.append(field)
    txn.set_properties({_NAME_MAPPING: names.NameMapping(fields).model_dump_json()})


def _arrow(columns: tuple[ColumnSchema, ...]) -> pa.Schema:
    """The Arrow schema of a manifest's columns, every column optional (Iceberg's default)."""
    return pa.schema([f.with_nullable(True) for f in arrow_schema(columns)])


def _backdated_overwrite(
    txn: Transaction, stamp_ms: int, props: dict[str, str], *, deletes: bool, adds: bool
) -> Any:
    """An overwrite of the main branch whose snapshot carries ``stamp_ms`` as its time."""
    snapshot_mod = require("pyiceberg.table.update.snapshot", "iceberg")
    update_mod = require("pyiceberg.table.update", "iceberg")
    snapshots = require("pyiceberg.table.snapshots", "iceberg")

    class Backdated(snapshot_mod._OverwriteFiles):  # type: ignore[misc,name-defined]
        def _commit(self) -> Any:
            updates, requirements = super()._commit()
            fixed = tuple(
                update_mod.AddSnapshotUpdate(
                    snapshot=u.snapshot.model_copy(update={"timestamp_ms": stamp_ms})
                )
                if isinstance(u, update_mod.AddSnapshotUpdate)
                else u
                for u in updates
            )
            return fixed, requirements

    op = snapshots.Operation
    has_parent = txn.table_metadata.current_snapshot() is not None
    if not has_parent or not deletes:
        operation = op.APPEND
    elif not adds:
        operation = op.DELETE
    else:
        operation = op.OVERWRITE
    return Backdated(
        operation=operation, transaction=txn, io=txn._table.io, snapshot_properties=props
    )
