"""A two-vintage sample vault and two research computations, as DuckDB SQL and as frame code.

The engine tests (tests/engines, tests/test_engines.py) compute the same answers with Spark, Dask,
Ray and Polars over a pinned snapshot and compare them with DuckDB's on the same snapshot:

* monthly compounded returns per permno from ``crsp.dsf`` (``exp(sum(ln(1 + ret))) - 1``);
* a CCM-linked book-to-market: December market equity from ``crsp.msf`` linked through
  ``crsp.ccmxpf_lnkhist`` (primary LC/LU links valid on the date) to the book equity of
  ``comp.funda``'s fiscal years ending in that calendar year, one row per (year, permno, gvkey).

`bm_rows` is written once for pandas and Dask frames (their APIs agree on what it uses).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

#: What the vault holds: daily and monthly CRSP, the CCM link table, Compustat annual.
DATASETS = ["crsp.dsf", "crsp.msf", "crsp.ccmxpf_lnkhist", "comp.funda"]

#: Small but with every feature the computations need; each sync takes about a second.
SOURCE: dict[str, Any] = {"seed": 0, "years": range(2019, 2024), "n_securities": 60}


def build_vault(root: Path) -> None:
    """Sync vintage 1 (tagged ``v1``), then vintage 2 (restated rows, an appended month)."""
    import wrdsvault
    from wrdsvault.sources import SampleSource

    with wrdsvault.Warehouse(root, source=SampleSource(**SOURCE, vintage=1)) as wh:
        first = wh.sync(DATASETS)
        assert first.snapshot_id is not None
        wh.tag("v1", first.snapshot_id)
        wh.source = SampleSource(**SOURCE, vintage=2)
        second = wh.sync(DATASETS)
        assert second.snapshot_id not in (None, first.snapshot_id)


def monthly_sql(q: str = '"', dsf: str = "crsp.dsf") -> str:
    """Monthly compounded returns per permno (``q`` quotes identifiers: DuckDB ``"``, Spark `)."""
    return f"""
    select permno, year(date) as {q}year{q}, month(date) as {q}month{q},
           exp(sum(ln(1 + cast(ret as double)))) - 1 as mret, count(*) as days
    from {dsf} where ret is not null
    group by permno, year(date), month(date)
    """


def bm_sql(
    q: str = '"',
    msf: str = "crsp.msf",
    link: str = "crsp.ccmxpf_lnkhist",
    funda: str = "comp.funda",
) -> str:
    """The CCM-linked book-to-market rows: year, permno, gvkey, bm (one dialect for both)."""
    return f"""
    with lk as (
        select gvkey, cast(lpermno as integer) as permno, linkdt,
               coalesce(linkenddt, date '9999-12-31') as linkenddt
        from {link}
        where linktype in ('LC', 'LU') and linkprim in ('P', 'C')
    ),
    be as (
        select gvkey, year(datadate) as fy,
               coalesce(seq, ceq + coalesce(pstk, 0), {q}at{q} - lt)
             + coalesce(txditc, coalesce(txdb, 0) + coalesce(itcb, 0), 0)
             - coalesce(pstkrv, pstkl, pstk, 0) as be
        from {funda}
        where indfmt = 'INDL' and datafmt = 'STD' and popsrc = 'D' and consol = 'C'
    ),
    me as (
        select permno, {q}date{q}, abs(cast(prc as double)) * shrout / 1000.0 as me
        from {msf} where month({q}date{q}) = 12 and prc is not null
    )
    select year(me.{q}date{q}) as {q}year{q}, me.permno, be.gvkey, be.be / me.me as bm
    from me
    join lk on me.permno = lk.permno and me.{q}date{q} between lk.linkdt and lk.linkenddt
    join be on be.gvkey = lk.gvkey and be.fy = year(me.{q}date{q})
    where me.me > 0 and be.be > 0
    """


def _year(col: Any) -> Any:
    return col.dt.year.astype("int64")


def be_frame(funda: Any) -> Any:
    """Book equity per (gvkey, fiscal-year-end year) from a pandas or Dask ``comp.funda``."""
    f = funda[
        (funda.indfmt == "INDL")
        & (funda.datafmt == "STD")
        & (funda.popsrc == "D")
        & (funda.consol == "C")
    ]
    c = {name: f[name] for name in ("seq", "ceq", "pstk", "at", "lt", "txditc", "txdb", "itcb")}
    c.update(pstkrv=f["pstkrv"], pstkl=f["pstkl"])  # f.lt would be DataFrame.lt, the method
    be = (
        c["seq"].fillna(c["ceq"] + c["pstk"].fillna(0)).fillna(c["at"] - c["lt"])
        + c["txditc"].fillna(c["txdb"].fillna(0) + c["itcb"].fillna(0)).fillna(0)
        - c["pstkrv"].fillna(c["pstkl"]).fillna(c["pstk"]).fillna(0)
    )
    return f.assign(fy=_year(f.datadate), be=be)[["gvkey", "fy", "be"]]


def link_frame(link: Any) -> Any:
    """The primary LC/LU links with an open end date filled in, from pandas or Dask."""
    lk = link[link.linktype.isin(["LC", "LU"]) & link.linkprim.isin(["P", "C"])]
    return lk.assign(
        permno=lk.lpermno.astype("int64"),
        linkenddt=lk.linkenddt.fillna(dt.date(9999, 12, 31)),
    )[["gvkey", "permno", "linkdt", "linkenddt"]]


def bm_rows(msf: Any, lk: Any, be: Any) -> Any:
    """The book-to-market rows from ``crsp.msf`` and the two frames above (pandas or Dask)."""
    dec = msf[(msf.date.dt.month == 12) & msf.prc.notnull()]
    dec = dec.assign(
        me=dec.prc.astype("float64").abs() * dec.shrout.astype("float64") / 1000.0,
        permno=dec.permno.astype("int64"),
        year=_year(dec.date),
    )[["permno", "date", "year", "me"]]
    m = dec.merge(lk, on="permno")
    m = m[(m.date >= m.linkdt) & (m.date <= m.linkenddt)]
    m = m.merge(be, left_on=["gvkey", "year"], right_on=["gvkey", "fy"])
    m = m[(m.me > 0) & (m.be > 0)]
    return m.assign(bm=m.be / m.me)[["year", "permno", "gvkey", "bm"]]


def normalise(frame: pd.DataFrame, keys: list[str], value: str) -> pd.DataFrame:
    """Plain-typed rows sorted by keys and value, index reset: comparable across engines."""
    out = pd.DataFrame({k: frame[k].astype("int64" if k != "gvkey" else "str") for k in keys})
    out[value] = np.asarray(frame[value], dtype="float64")
    return out.sort_values([*keys, value]).reset_index(drop=True)


def assert_same(got: pd.DataFrame, want: pd.DataFrame, keys: list[str], value: str) -> None:
    """The same rows (keys equal, values within float rounding), and not nothing."""
    g, w = normalise(got, keys, value), normalise(want, keys, value)
    assert len(w) > 0
    assert len(g) == len(w)
    pd.testing.assert_frame_equal(g[keys], w[keys])
    np.testing.assert_allclose(g[value].to_numpy(), w[value].to_numpy(), rtol=1e-9, atol=0)
