"""wrdsvault: a local, versioned, crash-safe warehouse for WRDS data.

import wrdsvault
from wrdsvault.sources import SampleSource

wh = wrdsvault.Warehouse("data/wrds", source=SampleSource())
wh.sync(["crsp.msf", "comp.funda"])
wh.query("select count(*) from crsp.msf")
snap = wh.snapshot("2025-12-01")       # pinned: same answers forever
"""

from __future__ import annotations

from wrdsvault._doctor import DoctorFinding, DoctorReport
from wrdsvault._query import LazyResult
from wrdsvault._session import Session
from wrdsvault._storage.diskguard import DiskState
from wrdsvault._storage.quarantine import QuarantineEntry
from wrdsvault._sync import Progress
from wrdsvault._version import __version__
from wrdsvault.compat import Connection
from wrdsvault.datasets import BUILTIN_SPECS, DatasetSpec
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
from wrdsvault.exports import ExportRecord, IcebergExport
from wrdsvault.manifest import (
    FORMAT_VERSION,
    ColumnSchema,
    DatasetEntry,
    Manifest,
    PartitionFile,
    SyncRecipe,
)
from wrdsvault.receipts import DatasetCheck, Receipt, ReceiptCheck, ReceiptDataset, check_receipt
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
