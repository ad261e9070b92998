"""Sources for tests: sample sources described in JSON, and the base of sources that wrap one.

Child processes get their source as JSON (``years`` as ``[first, last]``); `sample_from_json`
turns such arguments into a `SampleSource` in the parent and in the child alike.

A test that needs a source which misbehaves in one way (drops the connection in one year, lists
fewer years, kills its backend mid-read) subclasses `Wrapping` and overrides that one method;
everything else is handed on to the real source inside.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pyarrow as pa

    from wrdsvault.datasets import DatasetSpec
    from wrdsvault.sources import SampleSource
    from wrdsvault.sources.base import PartitionInfo, Source, TableInfo


def sample_from_json(args: dict[str, Any], vintage: int | None = None) -> SampleSource:
    """A `SampleSource` from JSON-able keyword arguments (``years`` as ``[first, last]``);
    ``vintage`` overrides the one in ``args``."""
    from wrdsvault.sources import SampleSource

    kw = dict(args)
    first, last = kw.pop("years")
    if vintage is not None:
        kw["vintage"] = vintage
    return SampleSource(**kw, years=range(first, last + 1))


class Wrapping:
    """A source that hands every call on to ``inner``; subclasses change one behaviour."""

    def __init__(self, inner: Source) -> None:
        self.inner = inner
        self.name = inner.name

    def describe(self, spec: DatasetSpec) -> TableInfo:
        return self.inner.describe(spec)

    def partitions(
        self, spec: DatasetSpec, *, years: Collection[int] | None = None
    ) -> Sequence[PartitionInfo]:
        return self.inner.partitions(spec, years=years)

    def read_partition(
        self, spec: DatasetSpec, year: int | None, *, batch_rows: int = 131_072
    ) -> Iterator[pa.RecordBatch]:
        return self.inner.read_partition(spec, year, batch_rows=batch_rows)

    def close(self) -> None:
        self.inner.close()
