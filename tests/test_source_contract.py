"""A source that breaks the `Source` contract fails the sync with an error naming what it did.

A source is code the vault does not own. Before, a ``pa.Table`` or ``None`` from
``partitions()`` or ``read_partition()``, or a ``RuntimeError`` from either, escaped raw;
``PartitionInfo(year=None)`` on a partitioned dataset was stored without the dates-in-year check;
a year listed twice gave an error about the resume folder; duplicate column names committed. Each
case here runs a real sync into a real vault and checks that nothing was committed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

import wrdsvault
from _helpers.sources import Wrapping
from wrdsvault._storage.layout import Layout
from wrdsvault._storage.writer import read_head
from wrdsvault.datasets import DatasetSpec
from wrdsvault.sources import SampleSource
from wrdsvault.sources.base import PartitionInfo, TableInfo

YEARS = range(2021, 2023)


class Faulty(Wrapping):
    """A sample source with one method replaced by a misbehaving one."""

    def __init__(
        self,
        *,
        partitions: Callable[[Any], object] | None = None,
        read: Callable[[Any, int | None], object] | None = None,
        schema: Callable[[pa.Schema], object] | None = None,
    ) -> None:
        super().__init__(SampleSource(seed=4, years=YEARS, n_securities=12))
        self.name = "faulty"
        self._partitions = partitions
        self._read = read
        self._schema = schema

    def describe(self, spec: DatasetSpec) -> TableInfo:
        info = self.inner.describe(spec)
        if self._schema is None:
            return info
        return TableInfo(schema=self._schema(info.schema), change_marker=info.change_marker)

    # Written before the ``years`` hint (the sync still calls such sources): no ``years``.
    def partitions(self, spec: DatasetSpec) -> Sequence[PartitionInfo]:  # type: ignore[override]
        if self._partitions is None:
            return self.inner.partitions(spec)
        return self._partitions(self.inner.partitions(spec))  # type: ignore[return-value]

    def read_partition(
        self, spec: DatasetSpec, year: int | None, *, batch_rows: int = 131_072
    ) -> Iterator[pa.RecordBatch]:
        batches = self.inner.read_partition(spec, year, batch_rows=batch_rows)
        if self._schema is not None:  # send what describe() declares
            batches = self._widen(batches, self.describe(spec).schema)
        if self._read is None:
            return batches
        return self._read(batches, year)  # type: ignore[return-value]

    @staticmethod
    def _widen(batches: Iterator[pa.RecordBatch], schema: pa.Schema) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            extra = [pa.nulls(batch.num_rows, f.type) for f in schema][batch.num_columns :]
            yield pa.RecordBatch.from_arrays([*batch.columns, *extra], schema=schema)


def boom(*_: object) -> object:
    raise RuntimeError("the driver fell over")


def sync_fails(
    tmp_path: Path, source: Faulty, dataset: str = "crsp.msf"
) -> wrdsvault.WrdsVaultError:
    """Sync ``dataset`` from ``source``; check that it failed with nothing committed."""
    root = tmp_path / "vault"
    with wrdsvault.Warehouse(root, source=source) as wh:
        with pytest.raises(wrdsvault.WrdsVaultError) as info:
            wh.sync(dataset)
        assert read_head(Layout(wh.root)) is None
        assert not (wh.root / "data").exists()
    assert getattr(info.value, "dataset", None) == dataset
    return info.value


def table_of(batches: Iterator[pa.RecordBatch]) -> pa.Table:
    return pa.Table.from_batches(list(batches))


def then_none(batches: Iterator[pa.RecordBatch]) -> Iterator[object]:
    yield from batches
    yield None


def then_boom(batches: Iterator[pa.RecordBatch]) -> Iterator[object]:
    yield next(batches)
    raise RuntimeError("the cursor died mid-year")


@pytest.mark.parametrize(
    ("partitions", "expected"),
    [
        (lambda parts: None, "partitions() returned None, not a list of PartitionInfo"),
        (
            lambda parts: pa.table({"year": [p.year for p in parts]}),
            "partitions() returned a pyarrow.lib.Table",
        ),
        (boom, "partitions() raised RuntimeError: the driver fell over"),
        (lambda parts: [*parts, None], "partitions() listed None, not a PartitionInfo"),
        (
            lambda parts: [p.year for p in parts],
            "partitions() listed an int, not a PartitionInfo",
        ),
    ],
    ids=["none", "table", "raises", "none-item", "ints"],
)
def test_partitions_outside_the_contract_fail_with_a_source_error(
    tmp_path: Path, partitions: Callable[[Any], object], expected: str
) -> None:
    """partitions() returning a Table, None, junk, or raising: SourceError naming the dataset."""
    err = sync_fails(tmp_path, Faulty(partitions=partitions))
    assert isinstance(err, wrdsvault.SourceError)
    assert err.source == "faulty"
    assert expected in str(err)
    assert "crsp.msf" in str(err)


@pytest.mark.parametrize(
    ("read", "expected"),
    [
        (lambda batches, year: table_of(batches), "a pyarrow.lib.Table"),
        (lambda batches, year: (table_of(batches),), "yielded a pyarrow.lib.Table"),
        (lambda batches, year: None, "returned None"),
        (lambda batches, year: then_none(batches), "yielded None, not a pyarrow.RecordBatch"),
        (boom, "read_partition(2021) raised RuntimeError: the driver fell over"),
        (
            lambda batches, year: then_boom(batches),
            "read_partition(2021) raised RuntimeError: the cursor died mid-year",
        ),
    ],
    ids=["table", "yields-table", "none", "yields-none", "raises", "raises-mid-year"],
)
def test_reads_outside_the_contract_fail_with_a_source_error(
    tmp_path: Path, read: Callable[[Any, int | None], object], expected: str
) -> None:
    """read_partition() sending a Table or None, or raising: SourceError naming the year."""
    err = sync_fails(tmp_path, Faulty(read=read))
    assert isinstance(err, wrdsvault.SourceError)
    assert expected in str(err)
    assert "crsp.msf" in str(err)


def test_year_none_on_a_partitioned_dataset_is_refused(tmp_path: Path) -> None:
    """PartitionInfo(year=None) for crsp.msf (partitioned by date) is a SourceError, not stored."""

    def one(parts: Sequence[PartitionInfo]) -> list[PartitionInfo]:
        return [PartitionInfo(year=None, row_count=sum(p.row_count or 0 for p in parts))]

    err = sync_fails(tmp_path, Faulty(partitions=one))
    assert isinstance(err, wrdsvault.SourceError)
    assert "year=None" in str(err) and "'date'" in str(err)


def test_a_year_on_an_unpartitioned_dataset_is_refused(tmp_path: Path) -> None:
    """A calendar year listed for a dataset without a date column is a SourceError."""

    def yearly(parts: Sequence[PartitionInfo]) -> list[PartitionInfo]:
        return [PartitionInfo(year=2021, row_count=p.row_count) for p in parts]

    err = sync_fails(tmp_path, Faulty(partitions=yearly), "crsp.msenames")
    assert isinstance(err, wrdsvault.SourceError)
    assert "year=2021" in str(err) and "PartitionInfo(year=None)" in str(err)


def test_a_year_listed_twice_is_refused_by_name(tmp_path: Path) -> None:
    """A duplicate year from partitions() is a SourceError naming the year."""
    err = sync_fails(tmp_path, Faulty(partitions=lambda parts: [*parts, parts[0]]))
    assert isinstance(err, wrdsvault.SourceError)
    assert "listed year 2021 twice" in str(err)


@pytest.mark.parametrize(
    ("junk", "expected"),
    [({"row_count": -3}, "row_count of -3"), ({"marker": 7}, "marker 7")],
    ids=["negative-count", "int-marker"],
)
def test_partition_fields_outside_the_contract_are_refused(
    tmp_path: Path, junk: dict[str, object], expected: str
) -> None:
    """A negative row_count or a non-str marker is a SourceError."""

    def spoil(parts: Sequence[PartitionInfo]) -> list[PartitionInfo]:
        return [PartitionInfo(**{"year": p.year, "row_count": p.row_count, **junk}) for p in parts]

    err = sync_fails(tmp_path, Faulty(partitions=spoil))
    assert isinstance(err, wrdsvault.SourceError)
    assert expected in str(err)


@pytest.mark.parametrize("twin", ["ret", "RET", "Ret"], ids=["same", "upper", "mixed"])
def test_duplicate_column_names_are_refused(tmp_path: Path, twin: str) -> None:
    """Two columns named alike (also only differing in case) fail with a SyncError naming it."""

    def doubled(schema: pa.Schema) -> pa.Schema:
        return schema.append(pa.field(twin, pa.float64()))

    err = sync_fails(tmp_path, Faulty(schema=doubled))
    assert type(err) is wrdsvault.SyncError
    named = "'ret' twice" if twin == "ret" else f"'ret' and '{twin}'"
    assert named in str(err) and "DuckDB" in str(err)


def test_describe_outside_the_contract_is_refused(tmp_path: Path) -> None:
    """describe() raising, or returning something else than a TableInfo: SourceError."""

    class Broken(Faulty):
        def describe(self, spec: DatasetSpec) -> TableInfo:
            raise RuntimeError("no such view")

    class Junk(Faulty):
        def describe(self, spec: DatasetSpec) -> TableInfo:
            return self.inner.describe(spec).schema  # type: ignore[return-value]

    err = sync_fails(tmp_path / "broken", Broken())
    assert isinstance(err, wrdsvault.SourceError)
    assert "describe() raised RuntimeError: no such view" in str(err)
    err = sync_fails(tmp_path / "junk", Junk())
    assert isinstance(err, wrdsvault.SourceError)
    assert "describe() returned a pyarrow.lib.Schema" in str(err)
    with (
        wrdsvault.Warehouse(tmp_path / "auto", source=Broken()) as wh,
        pytest.raises(wrdsvault.SourceError, match="no such view"),
    ):
        wh.sync("crsp.msf", date_column="auto")


def test_a_source_error_keeps_its_dataset_as_evidence() -> None:
    """SourceError names the dataset in its message and keeps it as an attribute."""
    err = wrdsvault.SourceError(source="s", reason="r", dataset="crsp.msf")
    assert (err.source, err.dataset, err.reason, str(err)) == (
        "s",
        "crsp.msf",
        "r",
        "source s failed for crsp.msf: r",
    )
    assert wrdsvault.SourceUnavailableError(source="s", reason="r").dataset is None


class Runs(Faulty):
    """A sample source that also reads runs of years (`read_partitions`): each year in turn,
    or what ``runs`` makes of the first year's batches and the years asked for."""

    def __init__(self, runs: Callable[[Any, list[int]], object] | None = None) -> None:
        super().__init__()
        self._runs = runs
        self.calls: list[list[int]] = []

    def read_partitions(
        self, spec: DatasetSpec, years: Sequence[int], *, batch_rows: int = 131_072
    ) -> object:
        self.calls.append(list(years))
        if self._runs is None:
            return ((y, self.read_partition(spec, y, batch_rows=batch_rows)) for y in years)
        return self._runs(self.read_partition(spec, years[0], batch_rows=batch_rows), list(years))


def test_a_source_that_reads_runs_of_years_commits_what_a_year_by_year_read_does(
    tmp_path: Path,
) -> None:
    """One stream, one run of every year; the rows and content digests of a per-year sync."""
    good = Runs()
    with wrdsvault.Warehouse(tmp_path / "runs", source=good) as wh:
        assert wh.sync("crsp.msf").committed
        runs = {p.year: p.content_digest for p in wh.snapshot().dataset("crsp.msf").partitions}
    assert good.calls == [list(YEARS)]
    with wrdsvault.Warehouse(tmp_path / "per-year", source=Faulty()) as wh:
        assert wh.sync("crsp.msf").committed
        per_year = {p.year: p.content_digest for p in wh.snapshot().dataset("crsp.msf").partitions}
    assert runs == per_year


@pytest.mark.parametrize(
    ("runs", "expected"),
    [
        (lambda first, years: None, "read_partitions(2021-2022) returned None, not an iterator"),
        (boom, "read_partitions(2021-2022) raised RuntimeError: the driver fell over"),
        (lambda first, years: iter([(2022, first)]), "gave (2022, "),
        (lambda first, years: iter([first]), "where (2021, batches) was due"),
        (lambda first, years: iter([(2021, first)]), "gave None where (2022, batches) was due"),
        (
            lambda first, years: iter([(2021, [table_of(first)])]),
            "read_partitions(2021-2022) for 2021 yielded a pyarrow.lib.Table",
        ),
    ],
    ids=["none", "raises", "wrong-year", "not-a-pair", "a-year-missing", "yields-table"],
)
def test_runs_of_years_outside_the_contract_fail_with_a_source_error(
    tmp_path: Path, runs: Callable[[Any, list[int]], object], expected: str
) -> None:
    """read_partitions() returning junk, a pair for the wrong year or no pair for a year,
    or batches that are not record batches: SourceError naming the dataset, nothing committed."""
    err = sync_fails(tmp_path, Runs(runs))
    assert isinstance(err, wrdsvault.SourceError)
    assert expected in str(err)
    assert "crsp.msf" in str(err)
