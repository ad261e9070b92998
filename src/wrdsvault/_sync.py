"""The sync process: plan -> stream -> stage -> check -> commit (or roll back).

For each dataset:

* If the source's change marker (WRDS: the table comment) equals the one recorded in the current
  snapshot, the dataset is skipped without reading a row (``unchanged``), unless ``full=True``.
* Otherwise each year is compared: a year whose per-year marker is unchanged is reused without
  reading; any other year is streamed into a staged Parquet file whose SHA-256 is computed while
  writing. If that hash equals the current file's, the staged copy is dropped and the file reused.
* Years the source no longer has are dropped from the new manifest (their files stay on disk for
  older snapshots).

All datasets of one call land in one commit; if any dataset fails, nothing is committed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timezone

import attrs
import pyarrow as pa

from wrdsvault._storage.writer import StagedFile, Writer
from wrdsvault.datasets import DatasetSpec
from wrdsvault.errors import SyncError, WrdsVaultError
from wrdsvault.manifest import (
    ColumnSchema,
    DatasetEntry,
    Manifest,
    PartitionFile,
    format_timestamp,
)
from wrdsvault.reports import DatasetResult, Status, SyncReport
from wrdsvault.sources.base import SOURCE_TYPE_KEY, PartitionInfo, Source

log = logging.getLogger(__name__)


@attrs.frozen(kw_only=True)
class Progress:
    """One progress event: a partition of a dataset started or finished."""

    dataset: str
    year: int | None
    index: int
    total: int
    rows: int | None
    done: bool


ProgressCallback = Callable[[Progress], None]


def columns_of(schema: pa.Schema) -> tuple[ColumnSchema, ...]:
    """The manifest's description of an Arrow schema."""
    out = []
    for field in schema:
        meta = field.metadata or {}
        declared = meta.get(SOURCE_TYPE_KEY)
        out.append(
            ColumnSchema(
                name=field.name,
                type=str(field.type),
                source_type=declared.decode() if declared else None,
                nullable=field.nullable,
            )
        )
    return tuple(out)


def _sync_dataset(
    writer: Writer,
    source: Source,
    spec: DatasetSpec,
    prev: DatasetEntry | None,
    *,
    years: frozenset[int] | None,
    full: bool,
    progress: ProgressCallback | None,
) -> tuple[DatasetEntry | None, DatasetResult]:
    info = source.describe(spec)
    prev_years = {p.year for p in prev.partitions} if prev else set()
    marker_same = (
        prev is not None
        and info.change_marker is not None
        and prev.change_marker == info.change_marker
        and prev.source == source.name
    )
    if not full and marker_same and (years is None or years <= prev_years):
        assert prev is not None
        return None, DatasetResult(
            dataset=spec.name,
            status="unchanged",
            years_reused=tuple(p.year for p in prev.partitions),
            row_count=prev.row_count,
            change_marker=prev.change_marker,
        )

    columns = columns_of(info.schema)
    same_schema = prev is not None and prev.columns == columns
    parts: Sequence[PartitionInfo] = source.partitions(spec)
    if years is not None:
        if not spec.partitioned:
            raise SyncError(
                dataset=spec.name, reason="years= was given but the dataset has no date column"
            )
        parts = [p for p in parts if p.year in years]
    if prev is not None and not same_schema:
        kept = prev_years - {p.year for p in parts}
        if kept:
            raise SyncError(
                dataset=spec.name,
                reason=f"the source's columns changed and years {sorted(kept, key=str)} would "
                "keep the old ones; sync all years (omit years=) to rewrite the whole dataset",
            )

    new_parts: dict[int | None, PartitionFile] = {}
    written: list[int | None] = []
    reused: list[int | None] = []
    rows_written = 0
    bytes_written = 0
    for index, part in enumerate(parts):
        if progress:
            progress(
                Progress(
                    dataset=spec.name,
                    year=part.year,
                    index=index,
                    total=len(parts),
                    rows=part.row_count,
                    done=False,
                )
            )
        old = prev.partition(part.year) if (prev is not None and same_schema) else None
        if not full and old is not None and part.marker is not None and old.marker == part.marker:
            new_parts[part.year] = old
            reused.append(part.year)
        else:
            staged = writer.stage_partition(
                spec.name,
                part.year,
                info.schema,
                source.read_partition(spec, part.year, batch_rows=writer.settings.batch_rows),
            )
            _check_rows(spec, part, staged)
            if old is not None and old.sha256 == staged.sha256:
                writer.discard(staged)
                new_parts[part.year] = attrs.evolve(old, marker=part.marker)
                reused.append(part.year)
            else:
                new_parts[part.year] = PartitionFile(
                    year=part.year,
                    path=writer.layout.partition_relpath(spec.name, part.year, staged.sha256),
                    sha256=staged.sha256,
                    size_bytes=staged.size_bytes,
                    row_count=staged.row_count,
                    marker=part.marker,
                )
                written.append(part.year)
                rows_written += staged.row_count
                bytes_written += staged.size_bytes
        if progress:
            progress(
                Progress(
                    dataset=spec.name,
                    year=part.year,
                    index=index,
                    total=len(parts),
                    rows=part.row_count,
                    done=True,
                )
            )

    removed: list[int | None] = []
    if prev is not None:
        for old in prev.partitions:
            if old.year in new_parts:
                continue
            if years is None:
                removed.append(old.year)  # the source no longer has this year
            else:
                new_parts[old.year] = old  # outside the requested years: keep
    entry = DatasetEntry(
        name=spec.name,
        partition_column=spec.partition_column,
        primary_key=spec.primary_key,
        columns=columns,
        partitions=tuple(
            new_parts[y] for y in sorted(new_parts, key=lambda y: -1 if y is None else y)
        ),
        source=source.name,
        change_marker=info.change_marker,
        comment=info.comment,
        synced_at=format_timestamp(datetime.now(timezone.utc)),
    )
    status: Status
    if prev is None:
        status = "added"
    elif written or removed or not same_schema:
        status = "updated"
    elif (prev.change_marker, prev.source, prev.comment) != (
        entry.change_marker,
        entry.source,
        entry.comment,
    ) or [p.marker for p in prev.partitions] != [p.marker for p in entry.partitions]:
        status = "recorded"
    else:
        status = "unchanged"
    result = DatasetResult(
        dataset=spec.name,
        status=status,
        years_written=tuple(written),
        years_reused=tuple(reused),
        years_removed=tuple(removed),
        rows_written=rows_written,
        bytes_written=bytes_written,
        row_count=entry.row_count,
        change_marker=info.change_marker,
    )
    return (entry if status != "unchanged" else None), result


def _check_rows(spec: DatasetSpec, part: PartitionInfo, staged: StagedFile) -> None:
    if part.row_count is not None and part.row_count != staged.row_count:
        raise SyncError(
            dataset=spec.name,
            reason=f"partition {part.year}: the source announced {part.row_count} rows but sent "
            f"{staged.row_count}",
        )


def run_sync(
    writer: Writer,
    source: Source,
    specs: Sequence[DatasetSpec],
    head: Manifest | None,
    *,
    years: frozenset[int] | None,
    full: bool,
    progress: ProgressCallback | None,
) -> SyncReport:
    """Sync ``specs`` from ``source`` inside ``writer``; commit once if anything changed."""
    started = time.monotonic()
    datasets = dict(head.datasets) if head else {}
    results = []
    for spec in specs:
        try:
            entry, result = _sync_dataset(
                writer,
                source,
                spec,
                head.datasets.get(spec.name) if head else None,
                years=years,
                full=full,
                progress=progress,
            )
        except WrdsVaultError:
            raise
        except (OSError, pa.ArrowException) as exc:
            raise SyncError(dataset=spec.name, reason=f"{type(exc).__name__}: {exc}") from exc
        results.append(result)
        if entry is not None:
            datasets[spec.name] = entry
        log.info("%s: %s", spec.name, result.status)
    changed = any(r.status != "unchanged" for r in results)
    manifest = writer.commit(head, datasets) if changed else None
    return SyncReport(
        snapshot_id=manifest.snapshot_id if manifest else (head.snapshot_id if head else None),
        parent_id=head.snapshot_id if head else None,
        committed=manifest is not None,
        datasets=tuple(results),
        duration_s=time.monotonic() - started,
    )
