"""Spark over a pinned snapshot in ``local[2]`` mode (one driver JVM for the module)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import wrdsvault

pytest.importorskip("pyspark")

from _helpers.spark import check_older, check_research, check_types, session


@pytest.fixture(scope="module")
def spark() -> Iterator[Any]:
    """A local[2] SparkSession bound to 127.0.0.1, stopped after the module."""
    s = session("local[2]")
    try:
        yield s
    finally:
        s.stop()


def test_spark_local_keeps_the_stored_types(spark: Any, wh: wrdsvault.Warehouse) -> None:
    """DecimalType(11,5), IntegerType with NULLs, ShortType, DateType, StringType as stored."""
    assert spark.sparkContext.master == "local[2]"
    with wh.snapshot("v1") as snap:
        check_types(spark, snap)


@pytest.mark.parametrize("ref", ["v1", "latest"])
def test_spark_local_research_equals_duckdb(spark: Any, wh: wrdsvault.Warehouse, ref: str) -> None:
    """Monthly compounded returns and CCM book-to-market from Spark SQL equal DuckDB's."""
    with wh.snapshot(ref) as snap:
        check_research(spark, snap)


def test_spark_local_reads_the_older_snapshot(spark: Any, wh: wrdsvault.Warehouse) -> None:
    """Over v1, count and return sum equal v1's DuckDB answer and differ from latest's."""
    with wh.snapshot("v1") as old, wh.snapshot("latest") as new:
        check_older(spark, old, new)


def test_spark_with_no_file_for_the_years_is_empty_and_typed(
    spark: Any, wh: wrdsvault.Warehouse
) -> None:
    """years= that no file covers gives an empty DataFrame with the manifest's schema."""
    from pyspark.sql import types as T

    with wh.snapshot() as snap:
        df = snap.to_spark(spark, "crsp.msf", columns=["permno", "ret"], years=1990)
        assert df.count() == 0
        assert [f.dataType for f in df.schema.fields] == [T.IntegerType(), T.DecimalType(10, 6)]


def test_spark_reads_a_vault_whose_path_has_a_space(spark: Any, tmp_path: Path) -> None:
    """The file:// paths Spark gets work for a folder name with a space in it."""
    from wrdsvault.sources import SampleSource

    with wrdsvault.Warehouse(
        tmp_path / "my vault", source=SampleSource(seed=0, years=range(2022, 2024), n_securities=20)
    ) as wh:
        wh.sync(["crsp.msf"])
        with wh.snapshot() as snap:
            assert snap.to_spark(spark, "crsp.msf").count() == snap.dataset("crsp.msf").row_count


@pytest.mark.parametrize("how", ["removed", "truncated"])
def test_spark_refuses_a_damaged_file(
    spark: Any, damaged: Callable[[str], tuple[wrdsvault.Snapshot, Path]], how: str
) -> None:
    """A file removed or truncated after the snapshot was opened: to_spark raises IntegrityError."""
    snap, victim = damaged(how)
    with pytest.raises(wrdsvault.IntegrityError, match=victim.name):
        snap.to_spark(spark, "crsp.msf")
