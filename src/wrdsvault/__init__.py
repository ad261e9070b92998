"""wrdsvault: a local, versioned, crash-safe warehouse for WRDS data.

import wrdsvault
from wrdsvault.sources import SampleSource

wh = wrdsvault.Warehouse("data/wrds", source=SampleSource())
wh.sync(["crsp.msf", "comp.funda"])
wh.query("select count(*) from crsp.msf")
snap = wh.snapshot("2025-12-01")       # pinned: same answers forever
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any, Final

from wrdsvault._version import __version__
from wrdsvault.errors import (
    BackupError,
    CommitOutcomeUnknownError,
    DiskSpaceError,
    IcebergExportError,
    IntegrityError,
    InvalidNameError,
    InvalidValueError,
    LockBreakRefusedError,
    LockHeldError,
    MissingExtraError,
    NotAVaultError,
    QueryError,
    QueryRejectedError,
    QueryTimeoutError,
    SchemaDriftError,
    SnapshotNotFoundError,
    SourceAuthError,
    SourceError,
    SourceRequiredError,
    SourceUnavailableError,
    SqlDialectError,
    SyncError,
    TagExistsError,
    UnknownDatasetError,
    ValidationFailedError,
    VaultAccessError,
    VaultFormatError,
    WrdsVaultError,
    WriteError,
)

if TYPE_CHECKING:
    from wrdsvault._doctor import DoctorFinding, DoctorReport
    from wrdsvault._query import LazyResult
    from wrdsvault._session import Session
    from wrdsvault._storage.diskguard import DiskState
    from wrdsvault._storage.quarantine import QuarantineEntry
    from wrdsvault._sync import Progress
    from wrdsvault.compat import Connection
    from wrdsvault.datasets import BUILTIN_SPECS, DatasetSpec
    from wrdsvault.exports import ExportRecord, IcebergExport
    from wrdsvault.manifest import (
        FORMAT_VERSION,
        ColumnSchema,
        DatasetEntry,
        Manifest,
        PartitionFile,
        SyncRecipe,
    )
    from wrdsvault.receipts import (
        DatasetCheck,
        Receipt,
        ReceiptCheck,
        ReceiptDataset,
        check_receipt,
    )
    from wrdsvault.reports import (
        BackupReport,
        DatasetResult,
        DatasetSummary,
        FileFault,
        LockInfo,
        RepairReport,
        SnapshotInfo,
        SyncReport,
        VaultStatus,
        VerifyReport,
    )
    from wrdsvault.retention import ExpiredSnapshot, GcPlan, GcReport, KeptSnapshot, RetentionPolicy
    from wrdsvault.revisions import ColumnDiff, DatasetDiff, Revision
    from wrdsvault.schema import ColumnChange, SchemaDrift, SchemaVersion
    from wrdsvault.settings import VaultSettings
    from wrdsvault.snapshot import Snapshot
    from wrdsvault.validation import Finding, ValidationReport
    from wrdsvault.warehouse import Warehouse

#: Public name -> the module that defines it. ``import wrdsvault`` loads none of them: each is
#: imported the first time it is used (PEP 562), so a script that only reads a snapshot never
#: loads the sync, backup or doctor machinery, pandas, or the Parquet writer (docs/performance.md).
_LAZY: Final[dict[str, str]] = {
    "BUILTIN_SPECS": "wrdsvault.datasets",
    "BackupReport": "wrdsvault.reports",
    "ColumnChange": "wrdsvault.schema",
    "ColumnDiff": "wrdsvault.revisions",
    "ColumnSchema": "wrdsvault.manifest",
    "Connection": "wrdsvault.compat",
    "DatasetCheck": "wrdsvault.receipts",
    "DatasetDiff": "wrdsvault.revisions",
    "DatasetEntry": "wrdsvault.manifest",
    "DatasetResult": "wrdsvault.reports",
    "DatasetSpec": "wrdsvault.datasets",
    "DatasetSummary": "wrdsvault.reports",
    "DiskState": "wrdsvault._storage.diskguard",
    "DoctorFinding": "wrdsvault._doctor",
    "DoctorReport": "wrdsvault._doctor",
    "ExpiredSnapshot": "wrdsvault.retention",
    "ExportRecord": "wrdsvault.exports",
    "FORMAT_VERSION": "wrdsvault.manifest",
    "FileFault": "wrdsvault.reports",
    "Finding": "wrdsvault.validation",
    "GcPlan": "wrdsvault.retention",
    "GcReport": "wrdsvault.retention",
    "IcebergExport": "wrdsvault.exports",
    "KeptSnapshot": "wrdsvault.retention",
    "LazyResult": "wrdsvault._query",
    "LockInfo": "wrdsvault.reports",
    "Manifest": "wrdsvault.manifest",
    "PartitionFile": "wrdsvault.manifest",
    "Progress": "wrdsvault._sync",
    "QuarantineEntry": "wrdsvault._storage.quarantine",
    "Receipt": "wrdsvault.receipts",
    "ReceiptCheck": "wrdsvault.receipts",
    "ReceiptDataset": "wrdsvault.receipts",
    "RepairReport": "wrdsvault.reports",
    "RetentionPolicy": "wrdsvault.retention",
    "Revision": "wrdsvault.revisions",
    "SchemaDrift": "wrdsvault.schema",
    "SchemaVersion": "wrdsvault.schema",
    "Session": "wrdsvault._session",
    "Snapshot": "wrdsvault.snapshot",
    "SnapshotInfo": "wrdsvault.reports",
    "SyncRecipe": "wrdsvault.manifest",
    "SyncReport": "wrdsvault.reports",
    "ValidationReport": "wrdsvault.validation",
    "VaultSettings": "wrdsvault.settings",
    "VaultStatus": "wrdsvault.reports",
    "VerifyReport": "wrdsvault.reports",
    "Warehouse": "wrdsvault.warehouse",
    "check_receipt": "wrdsvault.receipts",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        msg = f"module {__name__!r} has no attribute {name!r}"
        raise AttributeError(msg)
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "BUILTIN_SPECS",
    "BackupError",
    "BackupReport",
    "ColumnChange",
    "ColumnDiff",
    "ColumnSchema",
    "CommitOutcomeUnknownError",
    "Connection",
    "DatasetCheck",
    "DatasetDiff",
    "DatasetEntry",
    "DatasetResult",
    "DatasetSpec",
    "DatasetSummary",
    "DiskSpaceError",
    "DiskState",
    "DoctorFinding",
    "DoctorReport",
    "ExpiredSnapshot",
    "ExportRecord",
    "FORMAT_VERSION",
    "FileFault",
    "Finding",
    "GcPlan",
    "GcReport",
    "IcebergExport",
    "IcebergExportError",
    "IntegrityError",
    "InvalidNameError",
    "InvalidValueError",
    "KeptSnapshot",
    "LazyResult",
    "LockBreakRefusedError",
    "LockHeldError",
    "LockInfo",
    "Manifest",
    "MissingExtraError",
    "NotAVaultError",
    "PartitionFile",
    "Progress",
    "QuarantineEntry",
    "QueryError",
    "QueryRejectedError",
    "QueryTimeoutError",
    "Receipt",
    "ReceiptCheck",
    "ReceiptDataset",
    "RepairReport",
    "RetentionPolicy",
    "Revision",
    "SchemaDrift",
    "SchemaDriftError",
    "SchemaVersion",
    "Session",
    "Snapshot",
    "SnapshotInfo",
    "SnapshotNotFoundError",
    "SourceAuthError",
    "SourceError",
    "SourceRequiredError",
    "SourceUnavailableError",
    "SqlDialectError",
    "SyncError",
    "SyncRecipe",
    "SyncReport",
    "TagExistsError",
    "UnknownDatasetError",
    "ValidationFailedError",
    "ValidationReport",
    "VaultAccessError",
    "VaultFormatError",
    "VaultSettings",
    "VaultStatus",
    "VerifyReport",
    "Warehouse",
    "WrdsVaultError",
    "WriteError",
    "__version__",
    "check_receipt",
]
