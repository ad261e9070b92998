"""Spark over a pinned snapshot on a real standalone cluster started by the test.

A master and a worker run as child processes on 127.0.0.1 (the scripts the pyspark wheel ships);
the worker starts an executor JVM of its own, so the files are read by another process than the
driver. Both are stopped after the module. Slow: four JVMs start on a 2-core machine.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

import wrdsvault

pytest.importorskip("pyspark")

from _helpers.spark import (
    check_older,
    check_research,
    check_types,
    executors,
    master_state,
    session,
    standalone_cluster,
    wait_for_executor,
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, int]]:
    """A SparkSession on a standalone master + worker, and the master's UI port."""
    with standalone_cluster(tmp_path_factory.mktemp("spark")) as (url, ui):
        spark = session(url)
        try:
            wait_for_executor(spark)
            yield spark, ui
        finally:
            spark.stop()


def test_spark_cluster_runs_the_app_on_its_executor(
    cluster: tuple[Any, int], wh: wrdsvault.Warehouse
) -> None:
    """The app is registered with the master and has an executor besides the driver."""
    spark, ui = cluster
    assert spark.sparkContext.master.startswith("spark://127.0.0.1:")
    state = master_state(ui)
    assert state["aliveworkers"] == 1
    assert [app["name"] for app in state["activeapps"]] == ["wrdsvault-engine-tests"]
    assert executors(spark) == 2  # the driver's block manager and the executor's
    with wh.snapshot("v1") as snap:
        check_types(spark, snap)


def test_spark_cluster_research_equals_duckdb(
    cluster: tuple[Any, int], wh: wrdsvault.Warehouse
) -> None:
    """Monthly compounded returns and CCM book-to-market on the cluster equal DuckDB's (v1)."""
    with wh.snapshot("v1") as snap:
        check_research(cluster[0], snap)


def test_spark_cluster_reads_the_older_snapshot(
    cluster: tuple[Any, int], wh: wrdsvault.Warehouse
) -> None:
    """On the cluster, v1's count and return sum equal v1's DuckDB answer, not latest's."""
    with wh.snapshot("v1") as old, wh.snapshot("latest") as new:
        check_older(cluster[0], old, new)
