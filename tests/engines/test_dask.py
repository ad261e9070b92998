"""Dask over a pinned snapshot, on a real LocalCluster (two worker processes on 127.0.0.1)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

import wrdsvault
from _helpers.engines import assert_same, be_frame, bm_rows, bm_sql, link_frame, monthly_sql

dd = pytest.importorskip("dask.dataframe")
distributed = pytest.importorskip("distributed")


@pytest.fixture(scope="module")
def client() -> Iterator[Any]:
    """A LocalCluster of two worker processes, one thread each, loopback only."""
    cluster = distributed.LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address=None,
    )
    try:
        with distributed.Client(cluster) as c:
            yield c
    finally:
        cluster.close()


def _monthly(snap: wrdsvault.Snapshot) -> pd.DataFrame:
    d = snap.to_dask("crsp.dsf", columns=["permno", "date", "ret"])
    d = d[d.ret.notnull()]
    d = d.assign(
        year=d.date.dt.year,
        month=d.date.dt.month,
        lr=d.ret.astype("float64").map_partitions(np.log1p, meta=("lr", "float64")),
    )
    g = d.groupby(["permno", "year", "month"]).lr
    total, days = dd.compute(g.sum(), g.count())
    out = pd.DataFrame({"mret": np.expm1(total), "days": days}).reset_index()
    return out


def test_dask_runs_on_the_local_cluster(client: Any) -> None:
    """The computation runs on two separate worker processes, not in this one."""
    workers = client.scheduler_info()["workers"]
    assert len(workers) == 2
    assert all(w["host"] == "127.0.0.1" for w in workers.values())
    pids = set(client.run(lambda: __import__("os").getpid()).values())
    assert len(pids) == 2 and __import__("os").getpid() not in pids


def test_dask_keeps_the_stored_types(client: Any, wh: wrdsvault.Warehouse) -> None:
    """Arrow-backed dtypes: decimal128(11,5), int32 (NULLs stay NULL), date32, string[pyarrow]."""
    with wh.snapshot("v1") as snap:
        d = snap.to_dask("crsp.dsf", columns=["permno", "date", "prc", "numtrd", "cusip"])
        assert d.npartitions == len(snap.files("crsp.dsf"))
        want = {
            "permno": pa.int32(),
            "date": pa.date32(),
            "prc": pa.decimal128(11, 5),
            "numtrd": pa.int32(),
        }
        # Text is pandas' Arrow-backed string dtype (dask's default for strings).
        assert d.dtypes["cusip"] == pd.StringDtype("pyarrow")
        assert {k: d.dtypes[k].pyarrow_dtype for k in want} == want
        got = d.compute()
        assert got.dtypes["cusip"] == pd.StringDtype("pyarrow")
        assert {k: got.dtypes[k].pyarrow_dtype for k in want} == want
        nulls = snap.query("select count(*) - count(numtrd) as n from crsp.dsf")["n"][0]
        assert got["numtrd"].isna().sum() == nulls > 0
        assert len(got) == snap.dataset("crsp.dsf").row_count


def test_dask_with_no_file_for_the_years_is_empty_and_typed(
    client: Any, wh: wrdsvault.Warehouse
) -> None:
    """years= that no file covers gives an empty frame with the manifest's Arrow dtypes."""
    with wh.snapshot() as snap:
        got = snap.to_dask("crsp.msf", columns=["permno", "ret"], years=1990).compute()
        assert len(got) == 0
        assert [t.pyarrow_dtype for t in got.dtypes] == [pa.int32(), pa.decimal128(10, 6)]


@pytest.mark.parametrize("ref", ["v1", "latest"])
def test_dask_research_equals_duckdb(client: Any, wh: wrdsvault.Warehouse, ref: str) -> None:
    """Monthly compounded returns and CCM book-to-market from Dask equal DuckDB's, per snapshot."""
    with wh.snapshot(ref) as snap:
        keys = ["permno", "year", "month", "days"]
        assert_same(_monthly(snap), snap.query(monthly_sql()), keys, "mret")
        rows = bm_rows(
            snap.to_dask("crsp.msf", columns=["permno", "date", "prc", "shrout"]),
            link_frame(snap.to_dask("crsp.ccmxpf_lnkhist")),
            be_frame(snap.to_dask("comp.funda")),
        ).compute()
        assert_same(rows, snap.query(bm_sql()), ["year", "permno", "gvkey"], "bm")


def test_dask_reads_the_older_snapshot_not_the_newer(client: Any, wh: wrdsvault.Warehouse) -> None:
    """Over v1, row count and return sum equal v1's DuckDB answer and differ from latest's."""
    sql = "select count(*) as n, sum(cast(ret as double)) as s from crsp.dsf"
    with wh.snapshot("v1") as old, wh.snapshot("latest") as new:
        d = old.to_dask("crsp.dsf", columns=["ret"])
        n, s = dd.compute(d.ret.size, d.ret.astype("float64").sum())
        want, newer = old.query(sql), new.query(sql)
        assert n == want["n"][0] != newer["n"][0]
        assert s == pytest.approx(want["s"][0], rel=1e-12)


@pytest.mark.parametrize("how", ["removed", "truncated"])
def test_dask_refuses_a_damaged_file(
    damaged: Callable[[str], tuple[wrdsvault.Snapshot, Path]], how: str
) -> None:
    """A file removed or truncated after the snapshot was opened: to_dask raises IntegrityError."""
    snap, victim = damaged(how)
    with pytest.raises(wrdsvault.IntegrityError, match=victim.name):
        snap.to_dask("crsp.msf")
