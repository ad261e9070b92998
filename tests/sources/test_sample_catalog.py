"""SampleSource serves the whole built-in catalog, and its tables agree with each other the way
CRSP and Compustat say they do: each relation is checked with SQL on a synced sample vault."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

import wrdsvault
from wrdsvault.datasets import BUILTIN_SPECS
from wrdsvault.sources import SampleSource
from wrdsvault.sources.base import COMMENT_KEY, SOURCE_TYPE_KEY

YEARS = range(2019, 2023)


@pytest.fixture(scope="module", params=[1, 2], ids=["vintage1", "vintage2"])
def wh(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A vault holding every built-in dataset, synced from one small SampleSource (vintage 2
    restates returns and funda items in one year: the relations must hold there too)."""
    source = SampleSource(seed=3, years=YEARS, n_securities=120, vintage=request.param)
    root: Path = tmp_path_factory.mktemp("catalog") / "vault"
    with wrdsvault.Warehouse(root, source=source) as vault:
        vault.sync(sorted(BUILTIN_SPECS))
        yield vault


def scalar(wh: wrdsvault.Warehouse, sql: str) -> Any:
    table = wh.arrow(sql)
    assert table.num_rows == 1 and table.num_columns == 1, sql
    return table.column(0)[0].as_py()


def test_every_builtin_dataset_syncs_through_sample_source(wh: wrdsvault.Warehouse) -> None:
    """Every dataset of BUILTIN_SPECS syncs from SampleSource and holds rows in the snapshot."""
    snap = wh.snapshot()
    assert set(snap.datasets) == set(BUILTIN_SPECS)
    for name in BUILTIN_SPECS:
        assert scalar(wh, f"SELECT count(*) FROM {name}") > 0, name


def test_every_column_keeps_its_wrds_label(wh: wrdsvault.Warehouse) -> None:
    """Every column of every synced dataset has a label in the manifest, WRDS's where known."""
    datasets = wh.snapshot().manifest.datasets
    for name, entry in datasets.items():
        for column in entry.columns:
            assert column.comment, f"{name}.{column.name} has no label"
    labels = {(n, c.name): c.comment for n, e in datasets.items() for c in e.columns}
    assert labels["comp.funda", "at"] == "Assets - Total"
    assert labels["crsp.msf", "permno"] == "PERMNO"
    assert labels["crsp.msf", "prc"] == "Price or Bid/Ask Average"
    assert labels["crsp.ccmxpf_linktable", "usedflag"].startswith("Flag marking")
    assert labels["comp.company", "gvkey"] == "Global Company Key"


def test_labels_live_in_the_manifest_not_in_the_files(wh: wrdsvault.Warehouse) -> None:
    """Parquet files carry the declared types but no label, so a reworded WRDS comment
    rewrites no file; the manifest keeps the label."""
    snap = wh.snapshot()
    for name in snap.datasets:
        for path in snap.files(name):
            for field in pq.read_schema(path):
                assert field.metadata is not None and SOURCE_TYPE_KEY in field.metadata
                assert COMMENT_KEY not in field.metadata, f"{name}.{field.name}"


def test_links_point_at_existing_permnos_and_gvkeys(wh: wrdsvault.Warehouse) -> None:
    """Every linked permno of the CCM tables is a CRSP security, every gvkey a Compustat
    company, and the companies of funda and fundq are in comp.company."""
    for table in ("crsp.ccmxpf_lnkhist", "crsp.ccmxpf_linktable"):
        assert scalar(wh, f"SELECT count(*) FROM {table} WHERE lpermno IS NOT NULL") > 0
        orphans = f"""SELECT count(*) FROM {table}
            WHERE lpermno IS NOT NULL
              AND CAST(lpermno AS INTEGER) NOT IN (SELECT permno FROM crsp.msenames)"""
        assert scalar(wh, orphans) == 0
        no_company = f"""SELECT count(*) FROM {table}
            WHERE gvkey NOT IN (SELECT gvkey FROM comp.company)"""
        assert scalar(wh, no_company) == 0
    for table in ("comp.funda", "comp.fundq"):
        missing = (
            f"SELECT count(*) FROM {table} WHERE gvkey NOT IN (SELECT gvkey FROM comp.company)"
        )
        assert scalar(wh, missing) == 0


def test_linktable_is_lnkhist_with_usedflag(wh: wrdsvault.Warehouse) -> None:
    """crsp.ccmxpf_linktable holds lnkhist's rows plus usedflag, 1 exactly on the LC/LU/LS
    rows with a permno (what recipes filter with usedflag = 1)."""
    differ = """SELECT count(*) FROM (
        (SELECT * EXCLUDE (usedflag) FROM crsp.ccmxpf_linktable
         EXCEPT SELECT * FROM crsp.ccmxpf_lnkhist)
        UNION ALL
        (SELECT * FROM crsp.ccmxpf_lnkhist
         EXCEPT SELECT * EXCLUDE (usedflag) FROM crsp.ccmxpf_linktable))"""
    assert scalar(wh, differ) == 0
    wrong = """SELECT count(*) FROM crsp.ccmxpf_linktable
        WHERE (usedflag = 1) <> (lpermno IS NOT NULL AND linktype IN ('LC', 'LU', 'LS'))"""
    assert scalar(wh, wrong) == 0
    assert scalar(wh, "SELECT count(*) FROM crsp.ccmxpf_linktable WHERE usedflag = 1") > 0


@pytest.mark.parametrize(
    ("stock", "names", "delist"),
    [
        ("crsp.msf", "crsp.msenames", "crsp.msedelist"),
        ("crsp.dsf", "crsp.dsenames", "crsp.dsedelist"),
    ],
)
def test_names_and_delistings_cover_the_stock_file(
    wh: wrdsvault.Warehouse, stock: str, names: str, delist: str
) -> None:
    """Every stock-file row lies in exactly one name interval of its permno, and every permno
    has its delisting row (active securities too, with code 100)."""
    rows = scalar(wh, f"SELECT count(*) FROM {stock}")
    joined = f"""SELECT count(*) FROM {stock} AS f JOIN {names} AS n
        ON f.permno = n.permno AND f.date BETWEEN n.namedt AND n.nameendt"""
    assert scalar(wh, joined) == rows
    no_delist = f"SELECT count(*) FROM {stock} WHERE permno NOT IN (SELECT permno FROM {delist})"
    assert scalar(wh, no_delist) == 0


def same_rows(wh: wrdsvault.Warehouse, a: str, b: str) -> bool:
    sql = f"SELECT count(*) FROM (({a}) EXCEPT ({b}) UNION ALL (({b}) EXCEPT ({a})))"
    return bool(scalar(wh, sql) == 0)


def test_daily_event_tables_equal_the_monthly_ones(wh: wrdsvault.Warehouse) -> None:
    """dsenames/dsedelist hold the rows of msenames/msedelist (the sample has no intra-month
    events that would tell them apart)."""
    assert same_rows(wh, "SELECT * FROM crsp.dsenames", "SELECT * FROM crsp.msenames")
    assert same_rows(wh, "SELECT * FROM crsp.dsedelist", "SELECT * FROM crsp.msedelist")


def test_stocknames_agree_with_msenames(wh: wrdsvault.Warehouse) -> None:
    """crsp.stocknames has msenames' intervals and codes (nameenddt = nameendt), and st_date is
    the first date of the security's stock-file rows."""
    assert same_rows(
        wh,
        "SELECT permno, namedt, nameenddt, shrcd, exchcd, siccd, ncusip, ticker, comnam "
        "FROM crsp.stocknames",
        "SELECT permno, namedt, nameendt, shrcd, exchcd, siccd, ncusip, ticker, comnam "
        "FROM crsp.msenames",
    )
    late = """SELECT count(*) FROM crsp.dsf AS d JOIN crsp.stocknames AS s USING (permno)
        WHERE d.date < s.st_date OR d.date > s.end_date"""
    assert scalar(wh, late) == 0


def test_stkdelists_agree_with_msedelist(wh: wrdsvault.Warehouse) -> None:
    """crsp.stkdelists holds exactly the delisted securities of msedelist (code <> 100) on the
    same dates, with the same return where the legacy table has one."""
    assert same_rows(
        wh,
        "SELECT permno, delistingdt FROM crsp.stkdelists",
        "SELECT permno, dlstdt FROM crsp.msedelist WHERE dlstcd <> 100",
    )
    differ = """SELECT count(*) FROM crsp.stkdelists AS s JOIN crsp.msedelist AS d USING (permno)
        WHERE d.dlret IS NOT NULL AND s.delret <> d.dlret"""
    assert scalar(wh, differ) == 0
    assert scalar(wh, "SELECT count(*) FROM crsp.stkdelists WHERE delret IS NULL") == 0


def test_msf_v2_returns_are_msf_returns_with_delisting_folded_in(wh: wrdsvault.Warehouse) -> None:
    """msf_v2 has msf's security-months; mthret equals msf.ret outside the delisting month and
    (1 + ret)(1 + delret) - 1 in it, delret from crsp.stkdelists."""
    assert same_rows(
        wh, "SELECT permno, mthcaldt FROM crsp.msf_v2", "SELECT permno, date FROM crsp.msf"
    )
    plain = """SELECT count(*) FROM crsp.msf_v2 AS v JOIN crsp.msf AS m
        ON m.permno = v.permno AND m.date = v.mthcaldt
        WHERE v.mthdelflg = 'N' AND v.mthret IS DISTINCT FROM m.ret"""
    assert scalar(wh, plain) == 0
    folded = """SELECT count(*), count(*) FILTER (
            WHERE abs(v.mthret - ((1 + coalesce(m.ret, 0)) * (1 + s.delret) - 1)) > 1e-6)
        FROM crsp.msf_v2 AS v
        JOIN crsp.msf AS m ON m.permno = v.permno AND m.date = v.mthcaldt
        JOIN crsp.stkdelists AS s ON s.permno = v.permno
        WHERE v.mthdelflg = 'Y'"""
    months, wrong = wh.arrow(folded).to_pylist()[0].values()
    assert months > 0
    assert wrong == 0


def test_dsf_v2_agrees_with_dsf(wh: wrdsvault.Warehouse) -> None:
    """dsf_v2 has dsf's security-days; dlyret equals dsf.ret except on the delisting day, where
    the delisting return is compounded in; dlyprc is abs(prc); shrout is the same."""
    assert same_rows(
        wh, "SELECT permno, dlycaldt FROM crsp.dsf_v2", "SELECT permno, date FROM crsp.dsf"
    )
    differ = """SELECT count(*) FROM crsp.dsf_v2 AS v JOIN crsp.dsf AS d
        ON d.permno = v.permno AND d.date = v.dlycaldt
        WHERE (v.dlydelflg = 'N' AND v.dlyret IS DISTINCT FROM d.ret)
           OR v.dlyprc IS DISTINCT FROM abs(d.prc)
           OR v.shrout IS DISTINCT FROM d.shrout"""
    assert scalar(wh, differ) == 0
    folded = """SELECT count(*), count(*) FILTER (WHERE v.dlycaldt <> s.delistingdt
           OR abs(v.dlyret - ((1 + coalesce(d.ret, 0)) * (1 + s.delret) - 1)) > 1e-6)
        FROM crsp.dsf_v2 AS v
        JOIN crsp.dsf AS d ON d.permno = v.permno AND d.date = v.dlycaldt
        JOIN crsp.stkdelists AS s ON s.permno = v.permno
        WHERE v.dlydelflg = 'Y'"""
    days, wrong = wh.arrow(folded).to_pylist()[0].values()
    assert days > 0
    assert wrong == 0


def test_security_info_covers_msf_v2(wh: wrdsvault.Warehouse) -> None:
    """Every msf_v2 row lies in exactly one stksecurityinfohist interval (the CIZ universe
    join of the recipes), with the same primary exchange."""
    rows = scalar(wh, "SELECT count(*) FROM crsp.msf_v2")
    joined = """SELECT count(*) FROM crsp.msf_v2 AS m JOIN crsp.stksecurityinfohist AS s
        ON m.permno = s.permno AND m.mthcaldt BETWEEN s.secinfostartdt AND s.secinfoenddt
        WHERE m.primaryexch = s.primaryexch"""
    assert scalar(wh, joined) == rows


@pytest.mark.parametrize(
    ("index", "stock"), [("crsp.msi", "crsp.msf"), ("crsp.dsi", "crsp.dsf")], ids=["msi", "dsi"]
)
def test_market_index_is_the_cross_section_of_the_stock_file(
    wh: wrdsvault.Warehouse, index: str, stock: str
) -> None:
    """The index has one row per stock-file date; ewretd/ewretx are the mean ret/retx of the
    securities with a return, usdcnt their count, totcnt the count of those with a price."""
    assert same_rows(wh, f"SELECT date FROM {index}", f"SELECT DISTINCT date FROM {stock}")
    differ = f"""SELECT count(*) FROM {index} AS i JOIN (
            SELECT date, avg(ret) AS ew, avg(retx) AS ewx, count(ret) AS used,
                   count(prc) AS priced
            FROM {stock} GROUP BY date) AS s USING (date)
        WHERE abs(i.ewretd - s.ew) > 1e-6 OR abs(i.ewretx - s.ewx) > 1e-6
           OR i.usdcnt <> s.used OR i.totcnt <> s.priced"""
    assert scalar(wh, differ) == 0


def test_index_series_agree(wh: wrdsvault.Warehouse) -> None:
    """msi's S&P level is dsi's on the month's last trading day, and dsi.sprtrn is the market
    factor plus the risk-free rate of ff.factors_daily."""
    level = """SELECT count(*) FROM crsp.msi AS m JOIN crsp.dsi AS d USING (date)
        WHERE m.spindx <> d.spindx"""
    assert scalar(wh, level) == 0
    assert scalar(wh, "SELECT count(*) FROM crsp.msi") == scalar(
        wh, "SELECT count(*) FROM crsp.msi JOIN crsp.dsi USING (date)"
    )
    market = """SELECT count(*) FROM crsp.dsi AS d JOIN ff.factors_daily AS f USING (date)
        WHERE abs(d.sprtrn - (f.mktrf + f.rf)) > 1e-6"""
    assert scalar(wh, market) == 0


def test_fundq_adds_up_to_funda(wh: wrdsvault.Warehouse) -> None:
    """The fourth fiscal quarter's balances equal funda's (same gvkey, datadate, format) and
    the four quarters' sales add up to funda's sale."""
    balances = """SELECT count(*), count(*) FILTER (WHERE q.atq IS DISTINCT FROM a."at"
            OR q.ltq IS DISTINCT FROM a.lt OR q.seqq IS DISTINCT FROM a.seq
            OR q.ceqq IS DISTINCT FROM a.ceq OR q.fyearq <> a.fyear)
        FROM comp.fundq AS q JOIN comp.funda AS a
          ON a.gvkey = q.gvkey AND a.datadate = q.datadate AND a.indfmt = q.indfmt
         AND a.datafmt = q.datafmt
        WHERE q.fqtr = 4"""
    matched, wrong = wh.arrow(balances).to_pylist()[0].values()
    assert matched > 0
    assert wrong == 0
    flows = """WITH years AS (
            SELECT a.gvkey, a.datadate, a.indfmt, a.sale, count(*) AS quarters,
                   sum(q.saleq) AS saleq
            FROM comp.funda AS a JOIN comp.fundq AS q
              ON q.gvkey = a.gvkey AND q.indfmt = a.indfmt AND q.datafmt = a.datafmt
             AND q.fyearq = a.fyear AND q.fyr = a.fyr
             AND q.datadate > a.datadate - INTERVAL 12 MONTH AND q.datadate <= a.datadate
            WHERE a.datafmt = 'STD'
            GROUP BY ALL)
        SELECT count(*), count(*) FILTER (WHERE abs(saleq - sale) > 1e-6)
        FROM years WHERE quarters = 4"""
    years, wrong = wh.arrow(flows).to_pylist()[0].values()
    assert years > 0
    assert wrong == 0


def test_company_header_agrees_with_funda(wh: wrdsvault.Warehouse) -> None:
    """comp.company has one row per gvkey, with funda's company name and status marker."""
    assert scalar(wh, "SELECT count(*) - count(DISTINCT gvkey) FROM comp.company") == 0
    differ = """SELECT count(*) FROM comp.funda AS a JOIN comp.company AS c USING (gvkey)
        WHERE a.conm <> c.conm OR a.costat <> c.costat"""
    assert scalar(wh, differ) == 0
