"""Years that vanish from the source's listing, and datasets left with no rows.

A short listing used to take ``crsp.msf`` from all its years to a few (an empty one to none)
and commit without a finding; the empty view then lost its columns, so ``select permno from
crsp.msf`` failed. Removing years now goes through validation (rule ``removed_years``, threshold
``max_removed_fraction``, ``allow_removal=True`` to let them go), and a dataset with no files
keeps its columns and their types.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Iterator, Sequence
from pathlib import Path

import pyarrow as pa
import pytest

import wrdsvault
from _helpers.sources import Wrapping
from wrdsvault._storage.layout import Layout
from wrdsvault._storage.writer import read_head
from wrdsvault.cli import main
from wrdsvault.datasets import DatasetSpec
from wrdsvault.settings import VaultSettings
from wrdsvault.sources import SampleSource
from wrdsvault.sources.base import PartitionInfo, TableInfo

YEARS = range(2019, 2024)


def sample() -> SampleSource:
    return SampleSource(seed=2, years=YEARS, n_securities=15)


class Listing(Wrapping):
    """A sample source whose listing of years is cut to ``listed`` (the rows are all there)."""

    def __init__(self, listed: Collection[int]) -> None:
        super().__init__(sample())
        self.listed = set(listed)

    def describe(self, spec: DatasetSpec) -> TableInfo:
        info = self.inner.describe(spec)
        return TableInfo(schema=info.schema, change_marker=f"listing {sorted(self.listed)}")

    # Written before the ``years`` hint (the sync still calls such sources): no ``years``.
    def partitions(self, spec: DatasetSpec) -> Sequence[PartitionInfo]:  # type: ignore[override]
        return [p for p in self.inner.partitions(spec) if p.year in self.listed]


@pytest.fixture
def synced(tmp_path: Path) -> tuple[Path, dict[int | None, int]]:
    """A vault with crsp.msf for 2019-2023; returns its root and the rows of each year."""
    root = tmp_path / "vault"
    with wrdsvault.Warehouse(root, source=sample()) as wh:
        wh.sync("crsp.msf")
        rows = {p.year: p.row_count for p in wh.snapshot().dataset("crsp.msf").partitions}
    assert sorted(rows) == list(YEARS)
    return root, rows


@pytest.mark.parametrize("listed", [[2021, 2022, 2023], []], ids=["short", "empty"])
def test_years_missing_from_the_listing_fail_validation(
    synced: tuple[Path, dict[int | None, int]], listed: list[int]
) -> None:
    """A short or empty listing raises ValidationFailedError (removed_years); nothing commits."""
    root, rows = synced
    head = read_head(Layout(root))
    with (
        wrdsvault.Warehouse(root, source=Listing(listed)) as wh,
        pytest.raises(wrdsvault.ValidationFailedError, match="allow_removal") as info,
    ):
        wh.sync("crsp.msf")
    [finding] = [f for f in info.value.report.findings if f.rule == "removed_years"]
    gone = [y for y in YEARS if y not in listed]
    assert finding.count == sum(rows[y] for y in gone)
    assert [e["year"] for e in finding.examples] == gone
    assert read_head(Layout(root)) == head
    with wrdsvault.Warehouse(root) as wh:
        assert [p.year for p in wh.snapshot().dataset("crsp.msf").partitions] == list(YEARS)


def test_allow_removal_lets_the_years_go(synced: tuple[Path, dict[int | None, int]]) -> None:
    """allow_removal=True commits without the years; the previous snapshot keeps them."""
    root, rows = synced
    before = read_head(Layout(root))
    assert before is not None
    with wrdsvault.Warehouse(root, source=Listing([2021, 2022, 2023])) as wh:
        report = wh.sync("crsp.msf", allow_removal=True)
        assert report.committed
        assert report["crsp.msf"].years_removed == (2019, 2020)
        assert report["crsp.msf"].row_count == sum(rows[y] for y in (2021, 2022, 2023))
        n = wh.query("select count(*) as n from crsp.msf where year(date) < 2021")["n"][0]
        assert n == 0
        assert wh.snapshot(before).dataset("crsp.msf").row_count == sum(rows.values())


def test_max_removed_fraction_is_the_threshold(
    synced: tuple[Path, dict[int | None, int]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The setting (argument, environment) lets a small share go and refuses more."""
    root, rows = synced
    total = sum(rows.values())
    assert (total - rows[2023]) / total > 0.5
    half = VaultSettings(max_removed_fraction=0.5)
    with (
        wrdsvault.Warehouse(root, source=Listing([2023]), settings=half) as wh,
        pytest.raises(wrdsvault.ValidationFailedError, match="removed_years"),
    ):
        wh.sync("crsp.msf")
    share = (rows[2019] + 0.5) / total  # just above 2019's share of the rows
    monkeypatch.setenv("WRDSVAULT_MAX_REMOVED_FRACTION", str(share))
    with wrdsvault.Warehouse(root, source=Listing([2020, 2021, 2022])) as wh:
        assert wh.settings.max_removed_fraction == share
        with pytest.raises(wrdsvault.ValidationFailedError, match="removed_years"):
            wh.sync("crsp.msf")  # 2019 and 2023: more than the share
        assert wh.sync(["crsp.msf"], years=[2019])["crsp.msf"].years_removed == (2019,)
    monkeypatch.setenv("WRDSVAULT_MAX_REMOVED_FRACTION", "1.5")
    with pytest.raises(wrdsvault.InvalidValueError, match="WRDSVAULT_MAX_REMOVED_FRACTION"):
        wrdsvault.Warehouse(root)


def test_an_emptied_dataset_keeps_its_columns_and_types(
    synced: tuple[Path, dict[int | None, int]],
) -> None:
    """With every year removed, ``select permno ...`` returns no rows and the same schema."""
    root, _ = synced
    with wrdsvault.Warehouse(root, source=Listing([])) as wh:
        full = wh.arrow("select * from crsp.msf limit 0").schema
        report = wh.sync("crsp.msf", allow_removal=True)
        assert report["crsp.msf"].row_count == 0
        assert wh.snapshot().dataset("crsp.msf").partitions == ()
        empty = wh.arrow("select * from crsp.msf")
        assert empty.num_rows == 0
        assert empty.schema == full
        assert len(wh.query("select permno, date from crsp.msf where permno > 0")) == 0


def test_a_first_sync_of_an_empty_listing_has_the_sources_columns(tmp_path: Path) -> None:
    """A dataset synced empty the first time has the columns its source describes."""
    with wrdsvault.Warehouse(tmp_path / "full", source=sample()) as wh:
        wh.sync("crsp.msf")
        full = wh.arrow("select * from crsp.msf limit 0").schema
    with wrdsvault.Warehouse(tmp_path / "empty", source=Listing([])) as wh:
        assert wh.sync("crsp.msf").committed
        assert wh.arrow("select * from crsp.msf").schema == full


class Panel:
    """Rows of a tiny dataset, one partition or one per year, as the spec asks."""

    name = "panel"

    def __init__(self, years: Sequence[int]) -> None:
        self.table = pa.table(
            {
                "id": pa.array([i for y in years for i in (1, 2)], pa.int32()),
                "date": pa.array([dt.date(y, 6, 30) for y in years for _ in (1, 2)]),
            }
        )

    def describe(self, spec: DatasetSpec) -> TableInfo:
        return TableInfo(schema=self.table.schema, change_marker=None)

    def _rows(self, year: int | None) -> pa.Table:
        if year is None:
            return self.table
        keep = [d.year == year for d in self.table.column("date").to_pylist()]
        return self.table.filter(pa.array(keep))

    def partitions(self, spec: DatasetSpec) -> list[PartitionInfo]:
        if not spec.partitioned:
            return [PartitionInfo(year=None, row_count=self.table.num_rows)]
        years = sorted({d.year for d in self.table.column("date").to_pylist()})
        return [PartitionInfo(year=y, row_count=self._rows(y).num_rows) for y in years]

    def read_partition(
        self, spec: DatasetSpec, year: int | None, *, batch_rows: int = 131_072
    ) -> Iterator[pa.RecordBatch]:
        yield from self._rows(year).to_batches(batch_rows)

    def close(self) -> None:
        pass


def test_a_new_partition_column_recuts_the_rows_without_a_finding(tmp_path: Path) -> None:
    """One partition re-cut into years loses no rows, so removed_years lets the old one go."""
    root = tmp_path / "vault"
    with wrdsvault.Warehouse(root, source=Panel([2020, 2021])) as wh:
        wh.sync("my.panel", date_column=None)
        report = wh.sync("my.panel", date_column="date")
        assert report["my.panel"].years_removed == (None,)
        assert report["my.panel"].row_count == 4
    with (
        wrdsvault.Warehouse(root, source=Panel([2021])) as wh,
        pytest.raises(wrdsvault.ValidationFailedError, match="removed_years"),
    ):
        wh.sync("my.panel", date_column=None)  # re-cut back, and half the rows gone


def test_cli_sync_refuses_a_short_listing_unless_allowed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``wrdsvault sync`` exits 1 naming removed_years; with --allow-removal it commits."""
    base = ["sync", "crsp.msf", "--source", "sample", "--securities", "12", "-q"]
    vault = ["--vault", str(tmp_path / "vault")]
    assert main([*base, "--sample-years", "2019-2023", *vault]) == 0
    capsys.readouterr()
    assert main([*base, "--sample-years", "2022-2023", *vault]) == 1
    err = capsys.readouterr().err
    assert "removed_years" in err and "2019, 2020, 2021" in err
    assert main([*base, "--sample-years", "2022-2023", "--allow-removal", *vault]) == 0
    with wrdsvault.Warehouse(tmp_path / "vault") as wh:
        years = [p.year for p in wh.snapshot().dataset("crsp.msf").partitions]
    assert years == [2022, 2023]
