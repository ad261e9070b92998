"""The public API as a user writes it; type-checked by ``mypy --strict`` in CI, never run.

Each line is something a user's strictly typed code does with wrdsvault. If a signature, a
protocol or an error's evidence attribute stops accepting it, ``mypy src tests/typing`` fails.
The code lives in functions that nothing calls, so importing this file does nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, NamedTuple

import attrs
import pandas as pd
import pyarrow as pa

import wrdsvault
from wrdsvault import (
    DatasetSpec,
    LockHeldError,
    Progress,
    SchemaDriftError,
    Snapshot,
    SyncReport,
    ValidationFailedError,
    VaultAccessError,
    VaultFormatError,
    VaultSettings,
    Warehouse,
    WrdsVaultError,
)
from wrdsvault.sources import SampleSource, Source
from wrdsvault.validation import (
    Finding,
    KeyNotNull,
    PartitionData,
    Rule,
    SqlRule,
    UniqueKey,
    default_rules,
)

__all__: list[str] = []


@attrs.frozen
class PositivePrice:
    """A user's own frozen rule: ``name`` is read-only, as on the built-in rules."""

    name: str = "positive_price"

    def check(self, partition: PartitionData) -> Finding | None:
        bad = partition.query("select * from partition where prc <= 0")
        if len(bad) == 0:
            return None
        return partition.finding(self.name, "non-positive price", count=len(bad), examples=bad)


class MutableRule:
    """A plain class with a settable ``name`` also satisfies the protocol."""

    def __init__(self) -> None:
        self.name = "always_passes"

    def check(self, partition: PartitionData) -> Finding | None:
        return None


class TupleRule(NamedTuple):
    """A NamedTuple rule (read-only fields)."""

    name: str

    def check(self, partition: PartitionData) -> Finding | None:
        return None


def open_with_rules(root: Path) -> Warehouse:
    source: Source = SampleSource(seed=0, years=range(2019, 2024), n_securities=50)
    wh = Warehouse(
        root,
        source=source,
        settings=VaultSettings(),
        rules={
            "crsp.msf": [
                SqlRule("no_zero_price", "select * from partition where prc = 0", "zero price")
            ],
            "crsp.dsf": [PositivePrice(), MutableRule(), TupleRule("t")],
        },
    )
    mine: dict[str, list[SqlRule]] = {"comp.funda": [SqlRule(name="x", sql="select 1")]}
    Warehouse(str(root), rules=mine).close()
    spec = DatasetSpec(name="crsp.msf", partition_column="date", primary_key=("permno", "date"))
    built_in: list[Rule] = default_rules(spec)
    built_in += [KeyNotNull(("permno",)), UniqueKey(["permno", "date"])]
    return wh


def sync_and_query(wh: Warehouse) -> None:
    def on_progress(event: Progress) -> None:
        print(event.dataset, event.year, event.done)

    report: SyncReport = wh.sync(
        ["crsp.msf", "ff.factors_monthly"],
        years=range(2020, 2023),
        progress=on_progress,
        drift={"crsp.msf": "additive"},
    )
    wh.sync("crsp.msenames", full=True, validate=False, drift="strict", wait=5.0)
    daily: SyncReport = wh.sync_all(wait=60.0, progress=on_progress, allow_removal=False)
    notes: tuple[str, ...] = daily.notes
    stale: bool | None = wh.status(max_age_s=36 * 3600.0).stale
    print(notes, stale)
    print(report.summary(), report.snapshot_id, report["crsp.msf"].rows_written)

    df: pd.DataFrame = wh.query("select * from crsp.msf where permno = ?", [10001])
    table: pa.Table = wh.arrow("select * from crsp.msf where permno = $p", {"p": 10001})
    print(len(df), table.num_rows)

    tag: str = wh.tag("paper-v1", force=True)
    snap: Snapshot = wh.snapshot(tag, verify=True)
    with snap:
        when: datetime = snap.committed_at
        names: tuple[str, ...] = snap.datasets
        files: list[Path] = snap.files("crsp.msf")
        lazy = snap.sql("select permno from crsp.msf")
        rows: list[tuple[Any, ...]] = lazy.fetchall(timeout_s=10)
        print(when, names, files, rows, snap.id, snap.fingerprint, lazy.df(), lazy.arrow())
        scratch: wrdsvault.Session
        with snap.session() as scratch:
            scratch.execute(
                "create temp table t as select permno from crsp.msf where ret > $1", [0]
            )
            mine: pd.DataFrame = scratch.query("select * from t", timeout_s=5.0)
            theirs: pa.Table = scratch.arrow("select * from t")
            print(mine, theirs, scratch.pl("select 1"), snap.pl("select 1"), wh.pl("select 1"))
    tags: dict[str, str] = wh.tags()
    print(
        tags, [s.snapshot_id for s in wh.snapshots()], wh.status(), wh.verify(all_snapshots=True).ok
    )


def handle_errors(root: Path) -> None:
    try:
        with Warehouse(root, create=False) as wh:
            wh.sync("crsp.msf")
    except VaultFormatError as exc:
        problem: str = exc.problem
        print(problem, exc.path)
    except VaultAccessError as exc:
        operation: str = exc.operation
        print(operation, exc.path, exc.reason)
    except LockHeldError as exc:
        holder: dict[str, Any] = exc.holder
        print(holder.get("pid"), exc.waited_s, exc.lock_path)
    except SchemaDriftError as exc:
        added: tuple[str, ...] = exc.drift.added
        print(added, exc.policy, exc.dataset, exc.reason)
    except ValidationFailedError as exc:
        findings: Sequence[Finding] = exc.report.findings
        print([f.rule for f in findings], exc.dataset)
    except wrdsvault.SourceError as exc:
        retry: bool = exc.retryable
        print(retry, exc.source, exc.reason)
    except wrdsvault.DiskSpaceError as exc:
        needed: int | None = exc.needed_bytes
        print(needed, exc.free_bytes, exc.reason)
    except wrdsvault.InvalidValueError as exc:
        print(exc.name, exc.value, exc.rule)
    except WrdsVaultError as exc:
        message: str = exc.message
        print(message)


def look_after(wh: Warehouse) -> None:
    """Every record a maintenance method returns is an exported, typed class."""
    report: wrdsvault.DoctorReport = wh.doctor()
    found: tuple[wrdsvault.DoctorFinding, ...] = report.findings
    entries: list[wrdsvault.QuarantineEntry] = wh.quarantine()
    disk: wrdsvault.DiskState = wh.disk()
    status: wrdsvault.VaultStatus = wh.status()
    latest: str | None = status.latest_snapshot_id
    infos: list[wrdsvault.SnapshotInfo] = wh.snapshots()
    lock: wrdsvault.LockInfo = wh.lock_info()
    print(report.ok, found, [e.name for e in entries], disk.level, latest, infos, lock.state)
    try:
        wh.break_lock(expect_token=lock.incarnation)
    except wrdsvault.LockBreakRefusedError as exc:
        print(exc.lock_path, exc.holder, exc.reason)
    with wh.snapshot() as snap:
        entry: wrdsvault.DatasetEntry = snap.dataset("crsp.msf")
        parts: tuple[wrdsvault.PartitionFile, ...] = entry.partitions
        columns: tuple[wrdsvault.ColumnSchema, ...] = entry.columns
        manifest: wrdsvault.Manifest = snap.manifest
        print(parts, columns, manifest.snapshot_id)
