"""Named crash points: where a test may SIGKILL the writer to prove crash safety.

A test sets ``WRDSVAULT_TEST_CRASHPOINT=<name>`` (optionally ``<name>:<n>`` to die at the n-th hit,
counting from 1) in the environment of a real subprocess; when the writer reaches that point the
process kills itself with SIGKILL, so no ``finally`` block, ``atexit`` hook or buffered write runs.
Nothing else reads the variable. The crash tests parametrize over every member of `CrashPoint`.
"""

from __future__ import annotations

import enum
import os
import signal
from typing import Final

ENV_VAR: Final = "WRDSVAULT_TEST_CRASHPOINT"


class CrashPoint(enum.Enum):
    """Every file-system step of a sync, in the order a sync reaches them."""

    LOCK_ACQUIRED = "lock-acquired"
    STAGING_CREATED = "staging-created"
    PARTITION_WRITE_STARTED = "partition-write-started"
    PARTITION_WRITTEN = "partition-written"
    PARTITION_FSYNCED = "partition-fsynced"
    PARTITION_STAGED = "partition-staged"
    CHECKPOINT_LINKED = "checkpoint-linked"
    CHECKPOINT_RECORDED = "checkpoint-recorded"
    PUBLISH_DIR_CREATED = "publish-dir-created"
    PARTITION_RENAMED = "partition-renamed"
    PARTITION_DIR_FSYNCED = "partition-dir-fsynced"
    MANIFEST_TEMP_WRITTEN = "manifest-temp-written"
    MANIFEST_TEMP_FSYNCED = "manifest-temp-fsynced"
    MANIFEST_RENAMED = "manifest-renamed"
    MANIFEST_DIR_FSYNCED = "manifest-dir-fsynced"
    HEAD_TEMP_WRITTEN = "head-temp-written"
    HEAD_TEMP_FSYNCED = "head-temp-fsynced"
    HEAD_RENAMED = "head-renamed"
    HEAD_DIR_FSYNCED = "head-dir-fsynced"
    STAGING_REMOVED = "staging-removed"
    LOCK_RELEASED = "lock-released"


class BackupPoint(enum.Enum):
    """Every file-system step of a backup (docs/backup.md), in the order a backup reaches them.

    Armed through the same ``WRDSVAULT_TEST_CRASHPOINT`` variable; the values carry a
    ``backup-`` prefix. A backup killed at any of them leaves the previous backup current and
    complete, and the next backup finishes the job (tests/crash/test_backup_points.py).
    """

    PINNED = "backup-pinned"
    FILE_COPIED = "backup-file-copied"
    FILE_FSYNCED = "backup-file-fsynced"
    FILE_RENAMED = "backup-file-renamed"
    FILE_DIR_FSYNCED = "backup-file-dir-fsynced"
    MANIFEST_WRITTEN = "backup-manifest-written"
    TAG_WRITTEN = "backup-tag-written"
    HEAD_TEMP_WRITTEN = "backup-head-temp-written"
    HEAD_TEMP_FSYNCED = "backup-head-temp-fsynced"
    HEAD_RENAMED = "backup-head-renamed"
    HEAD_DIR_FSYNCED = "backup-head-dir-fsynced"


def _armed() -> tuple[str, int] | None:
    raw = os.environ.get(ENV_VAR)
    if not raw:
        return None
    name, _, nth = raw.partition(":")
    return name, int(nth) if nth else 1


_ARMED: Final = _armed()
_hits: dict[str, int] = {}


def crashpoint(point: CrashPoint | BreakPoint | GcPoint | BackupPoint | ExportPoint) -> None:
    """Kill this process with SIGKILL if a test armed ``point``; otherwise do nothing."""
    if _ARMED is None or _ARMED[0] != point.value:
        return
    _hits[point.value] = _hits.get(point.value, 0) + 1
    if _hits[point.value] >= _ARMED[1]:
        os.kill(os.getpid(), signal.SIGKILL)


class BreakPoint(enum.Enum):
    """Every step of breaking a stale writer lock (lock.py, docs/locking.md), in the order reached.

    Armed through the same ``WRDSVAULT_TEST_CRASHPOINT`` variable as `CrashPoint`; the values carry
    a ``break-`` prefix so the two enums never share a name. A breaker killed at any of them must
    leave a vault whose next writer gets the lock within its wait (tests/lock/test_break_points.py).
    """

    STALE_JUDGED = "break-stale-judged"
    CLAIM_WRITTEN = "break-claim-written"
    DEAD_CLAIM_SKIPPED = "break-dead-claim-skipped"
    CLAIM_LINKED = "break-claim-linked"
    CLAIM_VERIFIED = "break-claim-verified"
    RECORD_INSTALLED = "break-record-installed"
    DIR_FSYNCED = "break-dir-fsynced"
    EPOCH_PERSISTED = "break-epoch-persisted"
    CLAIMS_REMOVED = "break-claims-removed"


def breakpoint_hit(point: BreakPoint) -> None:
    """Kill this process with SIGKILL if a test armed ``point``; otherwise do nothing."""
    crashpoint(point)


class GcPoint(enum.Enum):
    """Every file-system step of ``gc`` (docs/retention.md), in the order a gc reaches them.

    Armed through the same ``WRDSVAULT_TEST_CRASHPOINT`` variable as `CrashPoint`; the values
    carry a ``gc-`` prefix. A gc killed at any of them leaves every retained snapshot complete,
    and the next gc or ``doctor --repair`` finishes the job (tests/crash/test_gc_points.py).
    """

    PLANNED = "gc-planned"
    EXPIRY_WRITTEN = "gc-expiry-written"
    EXPIRY_DURABLE = "gc-expiry-durable"
    LEASES_READ = "gc-leases-read"
    FILE_DELETED = "gc-file-deleted"
    FILES_DELETED = "gc-files-deleted"
    MANIFEST_DELETED = "gc-manifest-deleted"
    MANIFESTS_DELETED = "gc-manifests-deleted"


def gc_point(point: GcPoint) -> None:
    """Kill this process with SIGKILL if a test armed ``point``; otherwise do nothing."""
    crashpoint(point)


class ExportPoint(enum.Enum):
    """Every step of an Iceberg export (docs/retention.md, "Exports keep their snapshots").

    Armed through the same ``WRDSVAULT_TEST_CRASHPOINT`` variable; the values carry an
    ``export-`` prefix. An export killed at any of them leaves a record that keeps at least every
    vault snapshot the tables name, and the next export finishes the job
    (tests/crash/test_export_points.py).
    """

    INTENT_WRITTEN = "export-intent-written"
    TABLE_COMMITTED = "export-table-committed"
    TAGS_COMMITTED = "export-tags-committed"
    RECORD_WRITTEN = "export-record-written"


def export_point(point: ExportPoint) -> None:
    """Kill this process with SIGKILL if a test armed ``point``; otherwise do nothing."""
    crashpoint(point)
