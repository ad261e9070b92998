"""The `Source` interface: where a sync gets its rows from.

A source answers four questions about a dataset, and nothing else:

1. `Source.describe`: the column schema (canonical Arrow types; each field's metadata keeps the
   source's declared type under ``b"source_type"``, e.g. ``numeric(11,5)``), the table's change
   marker (WRDS: the table comment, e.g. ``"Monthly Stock - Securities (Updated 2025-02-08)"``) and
   a row estimate for progress and disk checks.
2. `Source.partitions`: which calendar years exist, with an exact row count and, where the source
   can give one cheaply, a per-year content marker (``years=`` asks only about some years).
3. `Source.read_partition`: the rows of one year as a stream of Arrow record batches that all have
   exactly the schema from `describe` (memory is bounded by a batch, not by the year).
4. `Source.close`: release connections.

A source may also offer ``change_marker(spec) -> str | None``: `describe`'s change marker
alone (same value, same errors), for a source that can tell it more cheaply than the schema
(`WrdsSource`: one catalog query). The sync asks it first and skips a dataset whose marker is
the recorded one without describing it. It may offer ``streamed_marker(spec, year)``: the
marker of the rows its last complete read of that year sent (the same value `partitions` gives
for those rows), recorded for a year listed without one. And it may offer
``read_partitions(spec, years, *, batch_rows)``: ``(year, batches)`` for each of several
strictly increasing years from one read, for a source where each read costs a scan of the table
(`WrdsSource`: one COPY for a run of years); the sync then reads runs of consecutive years.
docs/sources.md has the full contract of each.

Markers are opaque strings compared for equality. ``None`` means "unknown": the vault then reads
the data and compares content. A source must change a marker whenever the data it covers changes;
it may change it without a data change (that costs only a re-read).
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Sequence
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import attrs

if TYPE_CHECKING:
    import pyarrow as pa

    from wrdsvault.datasets import DatasetSpec

__all__ = ["PartitionInfo", "Source", "TableInfo"]

#: Field-metadata key under which a source records the declared type of a column.
SOURCE_TYPE_KEY = b"source_type"
#: Field-metadata key under which a source records a column's label (WRDS: the column comment,
#: e.g. ``"Total Assets"`` for ``comp.funda.at``). Kept in the manifest; optional.
COMMENT_KEY = b"comment"


@attrs.frozen
class TableInfo:
    """What a source says about one dataset as a whole.

    Attributes:
        schema: the Arrow schema every batch of every partition has.
        change_marker: changes whenever any row changes (WRDS: the table comment); ``None``
            means unknown.
        row_estimate: approximate total rows (progress, disk-space check); ``None`` = unknown.
        comment: the raw table comment as the source shows it, for the record.
    """

    schema: pa.Schema
    change_marker: str | None = None
    row_estimate: int | None = None
    comment: str | None = None


@attrs.frozen
class PartitionInfo:
    """One calendar year of a dataset as the source sees it.

    Attributes:
        year: the calendar year, or ``None`` for the single partition of an unpartitioned table.
        row_count: the exact number of rows in that year; the sync fails if `Source.read_partition`
            sends a different number. ``None`` = unknown (use `TableInfo.row_estimate` for
            estimates).
        marker: changes whenever a row of that year changes; ``None`` = unknown (read and compare).
    """

    year: int | None
    row_count: int | None = None
    marker: str | None = None


@runtime_checkable
class Source(Protocol):
    """Where `Warehouse.sync` gets rows from. See the module docstring for the contract."""

    @property
    def name(self) -> str:
        """A short, stable name recorded in manifests (``"wrds"``, ``"sample"``)."""
        ...

    def describe(self, spec: DatasetSpec) -> TableInfo:
        """Return the dataset's schema, change marker and row estimate.

        Raises:
            UnknownDatasetError: the source has no such table.
            SourceError: the source failed.
        """
        ...

    def partitions(
        self, spec: DatasetSpec, *, years: Collection[int] | None = None
    ) -> Sequence[PartitionInfo]:
        """Return the dataset's partitions (years), oldest first.

        ``years`` is a hint: the sync looks only at these years, so a source may skip the work
        of counting and hashing the others (it may also ignore the hint: the sync filters).
        Sources written without the parameter still work; the sync then does not pass it.
        """
        ...

    def read_partition(
        self, spec: DatasetSpec, year: int | None, *, batch_rows: int = 131_072
    ) -> Iterator[pa.RecordBatch]:
        """Stream the rows of one partition as record batches with the `describe` schema."""
        ...

    def close(self) -> None:
        """Release connections and other resources. Idempotent."""
        ...
