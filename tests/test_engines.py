"""Snapshot.files and to_polars: exactly the pinned files, checked at hand-out, typed as stored.

The heavy engines (Spark, Dask, Ray) have their own modules in tests/engines; Polars is light and
in the test extra, so its tests run here with the rest.
"""

from __future__ import annotations

import datetime as dt
import decimal
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import wrdsvault
from _helpers.engines import (
    DATASETS,
    assert_same,
    bm_sql,
    build_vault,
    monthly_sql,
)
from wrdsvault import IntegrityError, InvalidValueError, MissingExtraError, Snapshot


@pytest.fixture(scope="module")
def vault_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two vintages of the sample datasets; ``v1`` tags the first (built once for the module)."""
    root = tmp_path_factory.mktemp("engines") / "vault"
    build_vault(root)
    return root


@pytest.fixture
def wh(vault_root: Path) -> Iterator[wrdsvault.Warehouse]:
    with wrdsvault.Warehouse(vault_root) as wh:
        yield wh


def _manifest_paths(snap: Snapshot, dataset: str, years: set[int] | None = None) -> list[Path]:
    return [
        snap._layout.root / p.path
        for p in sorted(snap.dataset(dataset).partitions, key=lambda p: p.year or 0)
        if years is None or p.year in years
    ]


def test_files_are_the_manifests_files_pruned_by_year(wh: wrdsvault.Warehouse) -> None:
    """files() lists the manifest's files, oldest year first; years= keeps only those years."""
    with wh.snapshot("v1") as snap:
        every = snap.files("crsp.dsf")
        assert every == _manifest_paths(snap, "crsp.dsf")
        assert len(every) == 5
        assert all(p.is_absolute() and p.is_file() for p in every)
        assert snap.files("crsp.dsf", years=range(2020, 2022)) == _manifest_paths(
            snap, "crsp.dsf", {2020, 2021}
        )
        assert snap.files("crsp.dsf", years=2021) == _manifest_paths(snap, "crsp.dsf", {2021})
        assert snap.files("crsp.dsf", years=[1990, 2023]) == _manifest_paths(
            snap, "crsp.dsf", {2023}
        )
        assert snap.files("crsp.dsf", years=[1990]) == []


def test_files_of_an_older_snapshot_are_only_its_own(wh: wrdsvault.Warehouse) -> None:
    """The dataset's folder holds both vintages' files; files() of v1 gives v1's and no other."""
    with wh.snapshot("v1") as old, wh.snapshot("latest") as new:
        old_files = set(old.files("crsp.dsf"))
        new_files = set(new.files("crsp.dsf"))
        on_disk = set((wh.root / "data" / "crsp" / "dsf").rglob("*.parquet"))
        assert new_files - old_files, "vintage 2 rewrote some years"
        assert old_files | new_files <= on_disk
        assert old_files == set(_manifest_paths(old, "crsp.dsf"))
        assert not old_files & (new_files - old_files)


@pytest.mark.parametrize("damage", ["removed", "truncated"])
@pytest.mark.parametrize("call", ["files", "to_polars"])
def test_a_file_damaged_after_open_raises(
    tmp_path: Path, make_source: Callable[..., Any], damage: str, call: str
) -> None:
    """A file removed or truncated after the snapshot was opened: IntegrityError at hand-out."""
    if call == "to_polars":
        pytest.importorskip("polars")
    with wrdsvault.Warehouse(tmp_path / "v", source=make_source(1)) as wh:
        wh.sync(["crsp.msf"])
        snap = wh.snapshot()
        victim = snap.files("crsp.msf")[2]
        if damage == "removed":
            victim.unlink()
        else:
            os.truncate(victim, victim.stat().st_size // 2)
        with pytest.raises(IntegrityError) as info:
            getattr(snap, call)("crsp.msf")
        assert info.value.snapshot_id == snap.id
        assert info.value.path == os.path.relpath(victim, wh.root)
        assert ("missing" if damage == "removed" else "size is") in info.value.problem
        # The years without damage are still handed out.
        assert len(snap.files("crsp.msf", years=[2019, 2020])) == 2
        snap.close()


def test_bad_years_and_columns_are_refused(wh: wrdsvault.Warehouse) -> None:
    """years= for an unpartitioned dataset, an empty or out-of-range year, an unknown column."""
    pytest.importorskip("polars")
    with wh.snapshot() as snap:
        with pytest.raises(InvalidValueError, match="not partitioned by year"):
            snap.files("crsp.ccmxpf_lnkhist", years=2020)
        assert len(snap.files("crsp.ccmxpf_lnkhist")) == 1
        with pytest.raises(InvalidValueError, match="empty"):
            snap.files("crsp.dsf", years=[])
        with pytest.raises(InvalidValueError, match="1 to 9999"):
            snap.files("crsp.dsf", years=[0])
        with pytest.raises(TypeError, match="years"):
            snap.files("crsp.dsf", years="2020")  # type: ignore[arg-type]
        with pytest.raises(InvalidValueError, match=r"a column of crsp\.dsf"):
            snap.to_polars("crsp.dsf", columns=["permno", "nope"])
        with pytest.raises(TypeError, match="columns"):
            snap.to_polars("crsp.dsf", columns="permno")
        with pytest.raises(wrdsvault.UnknownDatasetError):
            snap.files("crsp.dse")


def test_files_after_close_takes_a_new_lease(wh: wrdsvault.Warehouse) -> None:
    """files() after close() takes a reader lease again, so gc keeps the files it hands out."""
    snap = wh.snapshot("v1")
    snap.close()
    assert not snap.leased
    assert snap.files("crsp.msf")
    assert snap.leased
    snap.close()


def test_a_missing_extra_names_it(wh: wrdsvault.Warehouse, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without polars, to_polars and LazyResult.pl raise MissingExtraError naming the extra."""
    monkeypatch.setitem(sys.modules, "polars", None)  # import polars now raises ImportError
    with wh.snapshot() as snap:
        for call in (lambda: snap.to_polars("crsp.msf"), lambda: snap.sql("select 1").pl()):
            with pytest.raises(MissingExtraError) as info:
                call()
            assert isinstance(info.value, ImportError)
            assert info.value.module == "polars"
            assert info.value.extra == "polars"
            assert "pip install 'wrdsvault[polars]'" in str(info.value)


# -- Polars -------------------------------------------------------------------------------------


def test_polars_keeps_the_stored_types(wh: wrdsvault.Warehouse) -> None:
    """to_polars: decimal(11,5), Int32 (NULLs stay NULL), Date and String as stored."""
    pl = pytest.importorskip("polars")
    with wh.snapshot("v1") as snap:
        lf = snap.to_polars("crsp.dsf", columns=["permno", "date", "prc", "numtrd", "cusip"])
        assert isinstance(lf, pl.LazyFrame)
        schema = lf.collect_schema()
        assert schema["permno"] == pl.Int32
        assert schema["numtrd"] == pl.Int32
        assert schema["date"] == pl.Date
        assert schema["prc"] == pl.Decimal(11, 5)
        assert schema["cusip"] == pl.String
        got = lf.collect()
        want = snap.query(
            "select count(*) - count(numtrd) as nulls, min(prc) as prc, min(date) as d "
            "from crsp.dsf"
        )
        assert got["numtrd"].null_count() == want["nulls"][0] > 0
        assert got["prc"].min() == decimal.Decimal(str(want["prc"][0]))
        assert got["date"].min() == want["d"][0].date()
        assert got.height == snap.dataset("crsp.dsf").row_count


def test_polars_with_no_file_for_the_years_is_empty_and_typed(wh: wrdsvault.Warehouse) -> None:
    """years= that no file covers gives an empty LazyFrame with the manifest's schema."""
    pl = pytest.importorskip("polars")
    with wh.snapshot() as snap:
        got = snap.to_polars("crsp.msf", columns=["permno", "ret"], years=1990).collect()
        assert got.height == 0
        assert got.schema == pl.Schema({"permno": pl.Int32, "ret": pl.Decimal(10, 6)})


def _polars_monthly(snap: Snapshot) -> Any:
    pl = pytest.importorskip("polars")
    lf = snap.to_polars("crsp.dsf", columns=["permno", "date", "ret"])
    return (
        lf.filter(pl.col("ret").is_not_null())
        .group_by(
            "permno",
            pl.col("date").dt.year().alias("year"),
            pl.col("date").dt.month().alias("month"),
        )
        .agg(
            ((pl.col("ret").cast(pl.Float64) + 1).log().sum().exp() - 1).alias("mret"),
            pl.len().alias("days"),
        )
        .collect()
        .to_pandas()
    )


def _polars_bm(snap: Snapshot) -> Any:
    pl = pytest.importorskip("polars")
    c = pl.col
    lk = (
        snap.to_polars("crsp.ccmxpf_lnkhist")
        .filter(c("linktype").is_in(["LC", "LU"]) & c("linkprim").is_in(["P", "C"]))
        .select(
            "gvkey",
            c("lpermno").cast(pl.Int32).alias("permno"),
            "linkdt",
            c("linkenddt").fill_null(dt.date(9999, 12, 31)),
        )
    )
    be = (
        snap.to_polars("comp.funda")
        .filter(
            (c("indfmt") == "INDL")
            & (c("datafmt") == "STD")
            & (c("popsrc") == "D")
            & (c("consol") == "C")
        )
        .select(
            "gvkey",
            c("datadate").dt.year().cast(pl.Int32).alias("fy"),
            (
                pl.coalesce(c("seq"), c("ceq") + c("pstk").fill_null(0), c("at") - c("lt"))
                + pl.coalesce(c("txditc"), c("txdb").fill_null(0) + c("itcb").fill_null(0), 0)
                - pl.coalesce(c("pstkrv"), c("pstkl"), c("pstk"), 0)
            ).alias("be"),
        )
    )
    me = (
        snap.to_polars("crsp.msf", columns=["permno", "date", "prc", "shrout"])
        .filter((c("date").dt.month() == 12) & c("prc").is_not_null())
        .select(
            "permno",
            "date",
            c("date").dt.year().cast(pl.Int32).alias("year"),
            (c("prc").cast(pl.Float64).abs() * c("shrout") / 1000.0).alias("me"),
        )
    )
    return (
        me.join(lk, on="permno")
        .filter(c("date").is_between(c("linkdt"), c("linkenddt")))
        .join(be, left_on=["gvkey", "year"], right_on=["gvkey", "fy"])
        .filter((c("me") > 0) & (c("be") > 0))
        .select("year", "permno", "gvkey", (c("be") / c("me")).alias("bm"))
        .collect()
        .to_pandas()
    )


@pytest.mark.parametrize("ref", ["v1", "latest"])
def test_polars_research_equals_duckdb_on_the_pinned_snapshot(
    wh: wrdsvault.Warehouse, ref: str
) -> None:
    """Monthly compounded returns and CCM book-to-market from Polars equal DuckDB's on each."""
    pytest.importorskip("polars")
    with wh.snapshot(ref) as snap:
        assert set(DATASETS) <= set(snap.datasets)
        want_m = snap.query(monthly_sql())
        got_m = _polars_monthly(snap)
        assert_same(got_m, want_m, ["permno", "year", "month", "days"], "mret")
        assert_same(_polars_bm(snap), snap.query(bm_sql()), ["year", "permno", "gvkey"], "bm")


def test_polars_reads_the_older_pinned_snapshot_not_the_newer(wh: wrdsvault.Warehouse) -> None:
    """Row counts and a return sum over v1 equal v1's DuckDB answer, and differ from latest's."""
    pl = pytest.importorskip("polars")
    sql = "select count(*) as n, sum(cast(ret as double)) as s from crsp.dsf"
    with wh.snapshot("v1") as old, wh.snapshot("latest") as new:
        got = (
            old.to_polars("crsp.dsf")
            .select(pl.len().alias("n"), pl.col("ret").cast(pl.Float64).sum().alias("s"))
            .collect()
        )
        want, newer = old.query(sql), new.query(sql)
        assert got["n"][0] == want["n"][0] != newer["n"][0]
        assert got["s"][0] == pytest.approx(want["s"][0], rel=1e-12)
