"""Ray Data over a pinned snapshot, on a local Ray started once for the module (2 CPUs)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pytest

import wrdsvault
from _helpers.engines import assert_same, be_frame, bm_rows, bm_sql, link_frame, monthly_sql

ray = pytest.importorskip("ray")
pytest.importorskip("ray.data")

# Ray warns about its own settings (DataContext deprecations) while it starts.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:ray")


@pytest.fixture(scope="module")
def ray_local() -> Iterator[Any]:
    """A local Ray of 2 CPUs on 127.0.0.1 only, shut down after the module.

    Ray's processes inherit the environment: the loopback switch (Ray otherwise reports the
    host's interface address) and tests/ on PYTHONPATH, so workers can import these functions.
    """
    tests = str(Path(__file__).resolve().parents[1])
    with pytest.MonkeyPatch.context() as mp:
        # Node address 127.0.0.1: read once at import (this process), from the environment (Ray's).
        mp.setattr(ray._private.ray_constants, "ENABLE_RAY_CLUSTER", False)
        mp.setenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
        path = os.pathsep.join(filter(None, [tests, os.environ.get("PYTHONPATH")]))
        mp.setenv("PYTHONPATH", path)
        ray.init(
            num_cpus=2,
            include_dashboard=False,
            log_to_driver=False,
            _node_ip_address="127.0.0.1",
        )
        try:
            ray.data.DataContext.get_current().enable_progress_bars = False
            yield ray
        finally:
            ray.shutdown()


def _arrow(ds: Any) -> pa.Table:
    return pa.concat_tables(ray.get(ds.to_arrow_refs()))


def _partial_sums(batch: pa.Table) -> pa.Table:
    """Per block: the sum of log returns and the day count per (permno, year, month)."""
    batch = batch.filter(pc.is_valid(batch["ret"]))
    logs = pa.table(
        {
            "permno": batch["permno"],
            "year": pc.year(batch["date"]),
            "month": pc.month(batch["date"]),
            "lr": pc.ln(pc.add(pc.cast(batch["ret"], pa.float64()), 1.0)),
        }
    )
    return logs.group_by(["permno", "year", "month"]).aggregate([("lr", "sum"), ("lr", "count")])


def _monthly(snap: wrdsvault.Snapshot) -> pd.DataFrame:
    """Partial sums in the Ray tasks, combined here (a month may span two blocks)."""
    ds = snap.to_ray("crsp.dsf", columns=["permno", "date", "ret"])
    parts = _arrow(ds.map_batches(_partial_sums, batch_format="pyarrow")).to_pandas()
    out = parts.groupby(["permno", "year", "month"], as_index=False)[["lr_sum", "lr_count"]].sum()
    return out.assign(mret=np.expm1(out["lr_sum"]), days=out["lr_count"])


def _bm(snap: wrdsvault.Snapshot) -> pd.DataFrame:
    """Broadcast join: the small link and book-equity frames go to every block of crsp.msf."""
    as_pd = {"types_mapper": pd.ArrowDtype}
    lk = link_frame(_arrow(snap.to_ray("crsp.ccmxpf_lnkhist")).to_pandas(**as_pd))
    be = be_frame(_arrow(snap.to_ray("comp.funda")).to_pandas(**as_pd))

    def block(batch: pa.Table) -> pa.Table:
        rows = bm_rows(batch.to_pandas(**as_pd), lk, be)
        return pa.Table.from_pandas(rows, preserve_index=False)

    msf = snap.to_ray("crsp.msf", columns=["permno", "date", "prc", "shrout"])
    return _arrow(msf.map_batches(block, batch_format="pyarrow")).to_pandas()


def test_ray_runs_on_loopback_only(ray_local: Any) -> None:
    """The local Ray's node and its workers use 127.0.0.1."""

    @ray.remote
    def where() -> str:
        return str(ray.util.get_node_ip_address())

    assert [n["NodeManagerAddress"] for n in ray.nodes()] == ["127.0.0.1"]
    assert ray.get(where.remote()) == "127.0.0.1"


def test_ray_keeps_the_stored_types(ray_local: Any, wh: wrdsvault.Warehouse) -> None:
    """The Dataset's schema is the manifest's: decimal(11,5), int32 with NULLs, date32, string."""
    with wh.snapshot("v1") as snap:
        ds = snap.to_ray("crsp.dsf", columns=["permno", "date", "prc", "numtrd", "cusip"])
        got = _arrow(ds)
        want = pa.schema(
            [
                ("permno", pa.int32()),
                ("date", pa.date32()),
                ("prc", pa.decimal128(11, 5)),
                ("numtrd", pa.int32()),
                ("cusip", pa.string()),
            ]
        )
        assert got.schema.remove_metadata() == want
        nulls = snap.query("select count(*) - count(numtrd) as n from crsp.dsf")["n"][0]
        assert got["numtrd"].null_count == nulls > 0
        assert got.num_rows == snap.dataset("crsp.dsf").row_count


def test_ray_research_equals_duckdb(ray_local: Any, wh: wrdsvault.Warehouse) -> None:
    """Monthly compounded returns and CCM book-to-market from Ray equal DuckDB's on v1.

    The older pinned snapshot only: Ray's start-up per operation (~2-5 s on 2 cores) makes a
    second pass over latest cost more than it proves; the next test tells v1 from latest.
    """
    with wh.snapshot("v1") as snap:
        keys = ["permno", "year", "month", "days"]
        assert_same(_monthly(snap), snap.query(monthly_sql()), keys, "mret")
        assert_same(_bm(snap), snap.query(bm_sql()), ["year", "permno", "gvkey"], "bm")


def test_ray_reads_the_older_snapshot_not_the_newer(
    ray_local: Any, wh: wrdsvault.Warehouse
) -> None:
    """Over v1, the row count equals v1's DuckDB answer and differs from latest's."""
    sql = "select count(*) as n from crsp.dsf"
    with wh.snapshot("v1") as old, wh.snapshot("latest") as new:
        n = old.to_ray("crsp.dsf", columns=["ret"]).count()
        assert n == old.query(sql)["n"][0] != new.query(sql)["n"][0]


def test_ray_with_no_file_for_the_years_is_empty_and_typed(
    ray_local: Any, wh: wrdsvault.Warehouse
) -> None:
    """years= that no file covers gives an empty Dataset with the manifest's schema."""
    with wh.snapshot() as snap:
        got = _arrow(snap.to_ray("crsp.msf", columns=["permno", "ret"], years=1990))
        assert got.num_rows == 0
        assert got.schema.remove_metadata() == pa.schema(
            [("permno", pa.int32()), ("ret", pa.decimal128(10, 6))]
        )


@pytest.mark.parametrize("how", ["removed", "truncated"])
def test_ray_refuses_a_damaged_file(
    damaged: Callable[[str], tuple[wrdsvault.Snapshot, Path]], how: str
) -> None:
    """A file removed or truncated after the snapshot was opened: to_ray raises IntegrityError."""
    snap, victim = damaged(how)
    with pytest.raises(wrdsvault.IntegrityError, match=victim.name):
        snap.to_ray("crsp.msf")
