"""Tests for `SampleSource`: protocol, types, determinism, calendar, vintages, WRDS-like shapes."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from wrdsvault import Warehouse
from wrdsvault.datasets import BUILTIN_SPECS, DatasetSpec
from wrdsvault.errors import InvalidValueError, UnknownDatasetError
from wrdsvault.sources import SampleSource, Source
from wrdsvault.sources.base import SOURCE_TYPE_KEY

#: Five research queries written the way published CRSP/Compustat recipes are (monthly CRSP with
#: delistings, CIZ monthly, book equity, the June CCM merge, a SMB/HML replication).
QUERIES = Path(__file__).resolve().parent / "research_queries"
YEARS = range(2019, 2023)
N = 250
SERVED = tuple(sorted(BUILTIN_SPECS))
TIME_SERIES = (
    "crsp.dsf",
    "crsp.dsf_v2",
    "crsp.dsi",
    "crsp.msf",
    "crsp.msf_v2",
    "crsp.msi",
    "ff.factors_daily",
    "ff.factors_monthly",
)


@pytest.fixture(scope="module")
def src() -> SampleSource:
    return SampleSource(seed=7, years=YEARS, n_securities=N)


@pytest.fixture(scope="module")
def src_v2() -> SampleSource:
    return SampleSource(seed=7, years=YEARS, n_securities=N, vintage=2)


def read(source: SampleSource, name: str, year: int | None = None) -> pa.Table:
    """Return one partition (or, with year=None on a partitioned table, every partition)."""
    spec = BUILTIN_SPECS[name]
    schema = source.describe(spec).schema
    years = [year] if year is not None or not spec.partitioned else source.years
    batches = [b for y in years for b in source.read_partition(spec, y)]
    return pa.Table.from_batches(batches, schema=schema)


def markers(source: SampleSource, name: str) -> dict[int | None, str | None]:
    return {p.year: p.marker for p in source.partitions(BUILTIN_SPECS[name])}


def months_of(table: pa.Table, column: str = "date") -> set[int]:
    return set(pc.month(table[column]).to_pylist())


# --- protocol and arguments -------------------------------------------------------------------


def test_satisfies_the_source_protocol(src: SampleSource) -> None:
    """A SampleSource is a frozen `Source` named "sample" serving the documented tables."""
    assert isinstance(src, Source)
    assert src.name == "sample"
    assert src.datasets == SERVED
    assert all(name in BUILTIN_SPECS for name in src.datasets)
    with pytest.raises(AttributeError):
        src.vintage = 2  # type: ignore[misc]
    src.close()
    src.close()  # idempotent, and the source stays usable
    assert src.partitions(BUILTIN_SPECS["ff.factors_monthly"])


@pytest.mark.parametrize(
    "kwargs",
    [
        {"years": []},
        {"years": range(1920, 1930)},
        {"years": [2101]},
        {"vintage": 3},
        {"n_securities": 9},
        {"profile": "2024"},
        {"seed": -1},
    ],
)
def test_rejects_bad_option_values(kwargs: dict[str, object]) -> None:
    """Out-of-range option values raise InvalidValueError (a ValueError) naming the option."""
    with pytest.raises(InvalidValueError, match=next(iter(kwargs))) as err:
        SampleSource(**kwargs)  # type: ignore[arg-type]
    assert err.value.name == next(iter(kwargs))


@pytest.mark.parametrize(
    "kwargs",
    [{"years": "2020"}, {"years": [2020.0]}, {"seed": "0"}, {"n_securities": 10.5}],
)
def test_rejects_wrong_option_types(kwargs: dict[str, object]) -> None:
    """Options of the wrong type raise TypeError."""
    with pytest.raises(TypeError):
        SampleSource(**kwargs)  # type: ignore[arg-type]


def test_options_are_keyword_only() -> None:
    """Positional options are refused."""
    with pytest.raises(TypeError):
        SampleSource(0)  # type: ignore[misc]


def test_unknown_dataset_lists_the_served_tables(src: SampleSource) -> None:
    """An unserved dataset raises UnknownDatasetError with the served names as `known`."""
    with pytest.raises(UnknownDatasetError, match="SampleSource serves only these tables") as exc:
        src.describe(DatasetSpec(name="ibes.statsum_epsus", partition_column="statpers"))
    assert exc.value.known == list(SERVED)  # type: ignore[attr-defined]
    with pytest.raises(UnknownDatasetError):
        list(src.read_partition(DatasetSpec(name="crsp.nothing", partition_column="date"), 2020))


def test_invalid_partitions_raise_value_error(src: SampleSource) -> None:
    """Years outside the range, a year for an unpartitioned table and bad batch sizes raise."""
    msf, names = BUILTIN_SPECS["crsp.msf"], BUILTIN_SPECS["crsp.msenames"]
    with pytest.raises(ValueError, match=r"2019\.\.2022"):
        src.read_partition(msf, 2018)
    with pytest.raises(ValueError, match="year"):
        src.read_partition(msf, None)
    with pytest.raises(ValueError, match="unpartitioned"):
        src.read_partition(names, 2020)
    with pytest.raises(ValueError, match="batch_rows"):
        src.read_partition(msf, 2020, batch_rows=0)
    with pytest.raises(ValueError, match="partitions by"):
        src.partitions(DatasetSpec(name="crsp.msf", partition_column="altprcdt"))
    with pytest.raises(ValueError, match="partitions by"):
        src.read_partition(DatasetSpec(name="crsp.msf", partition_column=None), None)
    # describe() answers whatever the partitioning: the schema does not depend on it.
    unpartitioned = src.describe(DatasetSpec(name="crsp.msf", partition_column=None))
    assert unpartitioned.schema == src.describe(msf).schema


def test_date_column_auto_syncs_a_sample_table(tmp_path: Path) -> None:
    """sync(date_column="auto") describes the table before it knows the column: the sample
    source answers, the detected column is the table's own, and the sync commits."""
    with Warehouse(tmp_path / "v", source=SampleSource(years=range(2021, 2023))) as wh:
        report = wh.sync("crsp.msf", date_column="auto")
        assert report.committed
        assert report["crsp.msf"].years_written == (2021, 2022)
        assert wh.snapshot().dataset("crsp.msf").partition_column == "date"


# --- schemas and batches ----------------------------------------------------------------------


@pytest.mark.parametrize("name", SERVED)
def test_batches_match_describe_and_partition_counts(src: SampleSource, name: str) -> None:
    """Every batch has the described schema (metadata included), at most batch_rows rows, and
    the rows of each partition add up to its row_count and to the row estimate."""
    spec = BUILTIN_SPECS[name]
    info = src.describe(spec)
    parts = src.partitions(spec)
    if spec.partitioned:
        assert [p.year for p in parts] == list(YEARS)
    else:
        assert [p.year for p in parts] == [None]
    total = 0
    for part in parts:
        rows = 0
        for batch in src.read_partition(spec, part.year, batch_rows=997):
            assert batch.schema.equals(info.schema, check_metadata=True)
            assert 0 < len(batch) <= 997
            rows += len(batch)
        assert rows == part.row_count
        assert part.marker
        total += rows
    assert total == info.row_estimate
    assert info.change_marker


def test_columns_follow_wrds_order(src: SampleSource) -> None:
    """Column lists are WRDS's, in WRDS's order, and every field declares its source type."""
    expected = {
        "crsp.msf": "cusip permno permco issuno hexcd hsiccd date bidlo askhi prc vol ret bid ask "
        "shrout cfacpr cfacshr altprc spread altprcdt retx",
        "crsp.dsf": "cusip permno permco issuno hexcd hsiccd date bidlo askhi prc vol ret bid ask "
        "shrout cfacpr cfacshr openprc numtrd retx",
        "crsp.ccmxpf_lnkhist": "gvkey linkprim liid linktype lpermno lpermco linkdt linkenddt",
        "ff.factors_monthly": "date mktrf smb hml rf year month umd dateff",
        "ff.factors_daily": "date mktrf smb hml rf umd",
        "crsp.msedelist": "permno dlstdt dlstcd nwperm nwcomp nextdt dlamt dlretx dlprc dlpdt "
        "dlret acperm accomp",
        "crsp.ccmxpf_linktable": "gvkey linkprim liid linktype lpermno lpermco usedflag linkdt "
        "linkenddt",
        "crsp.msi": "date vwretd vwretx ewretd ewretx sprtrn spindx totval totcnt usdval usdcnt",
        "crsp.dsi": "date vwretd vwretx ewretd ewretx sprtrn spindx totval totcnt usdval usdcnt",
        "crsp.stkdelists": "permno delistingdt deldtprc deldtprcflg delactiontype delstatustype "
        "delreasontype delpaymenttype delpermno delpermco delret delretmisstype delnextdt "
        "delnextprc delnextprcflg delamtdt deldivamt deldistype deldlydt",
    }
    for name, cols in expected.items():
        assert src.describe(BUILTIN_SPECS[name]).schema.names == cols.split()
    funda = src.describe(BUILTIN_SPECS["comp.funda"]).schema.names
    leading = ["gvkey", "datadate", "fyear", "indfmt", "consol", "popsrc", "datafmt", "tic"]
    assert funda[:10] == [*leading, "cusip", "conm"]
    assert funda[-3:] == ["curcd", "fyr", "costat"]
    needed = "at ceq lt pstk pstkl pstkrv seq txditc txdb itcb act che csho ib ni sale prcc_f"
    assert set(needed.split()) <= set(funda)
    assert len(src.describe(BUILTIN_SPECS["crsp.msf_v2"]).schema) == 45
    assert len(src.describe(BUILTIN_SPECS["crsp.stksecurityinfohist"]).schema) == 36
    dsf_v2 = src.describe(BUILTIN_SPECS["crsp.dsf_v2"]).schema.names
    assert len(dsf_v2) == 50
    assert dsf_v2[:3] == ["permno", "hdrcusip", "permco"] and dsf_v2[-1] == "shrout"
    fundq = src.describe(BUILTIN_SPECS["comp.fundq"]).schema.names
    assert fundq[:5] == ["gvkey", "datadate", "fyearq", "fqtr", "fyr"]
    stocknames = src.describe(BUILTIN_SPECS["crsp.stocknames"]).schema.names
    assert {"nameenddt", "st_date", "end_date"} <= set(stocknames)
    assert "nameendt" not in stocknames  # WRDS spells it differently from msenames
    for name in SERVED:
        for field in src.describe(BUILTIN_SPECS[name]).schema:
            assert field.metadata and field.metadata[SOURCE_TYPE_KEY]


def field_types(source: SampleSource, name: str) -> dict[str, tuple[pa.DataType, bytes]]:
    schema = source.describe(BUILTIN_SPECS[name]).schema
    return {f.name: (f.type, f.metadata[SOURCE_TYPE_KEY]) for f in schema}


def test_profile_2025_uses_current_wrds_types(src: SampleSource) -> None:
    """Profile 2025: integer ids, numeric(p,s) prices and returns, float unbounded numerics."""
    msf = field_types(src, "crsp.msf")
    assert msf["permno"] == (pa.int32(), b"integer")
    assert msf["hexcd"] == (pa.int16(), b"smallint")
    assert msf["prc"] == (pa.decimal128(11, 5), b"numeric(11,5)")
    assert msf["ret"] == (pa.decimal128(10, 6), b"numeric(10,6)")
    assert msf["shrout"] == (pa.float64(), b"numeric")
    assert msf["date"] == (pa.date32(), b"date")
    assert msf["cusip"] == (pa.string(), b"varchar(8)")
    assert field_types(src, "comp.funda")["fyear"] == (pa.int32(), b"integer")
    assert field_types(src, "comp.funda")["at"] == (pa.float64(), b"double precision")
    assert field_types(src, "crsp.ccmxpf_lnkhist")["lpermno"] == (pa.float64(), b"double precision")
    assert field_types(src, "crsp.msf_v2")["mthprc"] == (pa.decimal128(13, 6), b"numeric(13,6)")
    assert field_types(src, "crsp.msenames")["shrcd"] == (pa.int16(), b"smallint")


def test_profile_sas_makes_every_number_double() -> None:
    """Profile sas: every number is float64 declared double precision; text and dates keep."""
    sas = SampleSource(seed=7, years=YEARS, n_securities=N, profile="sas")
    for name in SERVED:
        for field in sas.describe(BUILTIN_SPECS[name]).schema:
            declared = field.metadata[SOURCE_TYPE_KEY]
            if field.type == pa.float64():
                assert declared == b"double precision"
            else:
                assert field.type in (pa.string(), pa.date32())
                assert declared == b"date" or declared.startswith(b"varchar")
    assert field_types(sas, "crsp.msf")["permno"] == (pa.float64(), b"double precision")
    assert field_types(sas, "crsp.msenames")["shrcd"][0] == pa.float64()
    assert field_types(sas, "comp.funda")["fyear"][0] == pa.float64()


def test_profiles_differ_only_in_types(src: SampleSource) -> None:
    """The sas profile serves the same values as profile 2025, only typed as doubles."""
    sas = SampleSource(seed=7, years=YEARS, n_securities=N, profile="sas")
    current = read(src, "crsp.msf", 2020)
    older = read(sas, "crsp.msf", 2020)
    assert older.cast(current.schema).equals(current)


def test_gvkey_is_zero_padded_text(src: SampleSource) -> None:
    """gvkey is six-character text with leading zeros, in funda and in the link table."""
    for name in ("comp.funda", "crsp.ccmxpf_lnkhist"):
        gvkeys = read(src, name)["gvkey"].to_pylist()
        assert all(len(g) == 6 and g.isdigit() for g in gvkeys)
        assert any(g.startswith("00") for g in gvkeys)
    assert read(src, "crsp.ccmxpf_lnkhist")["gvkey"][0].as_py() == "001004"


# --- determinism ------------------------------------------------------------------------------


def test_same_arguments_give_identical_rows(src: SampleSource) -> None:
    """Two sources with the same arguments serve identical rows and markers; a seed changes both."""
    twin = SampleSource(seed=7, years=YEARS, n_securities=N)
    other = SampleSource(seed=8, years=YEARS, n_securities=N)
    for name in ("crsp.msf", "comp.funda", "crsp.ccmxpf_lnkhist", "ff.factors_daily"):
        year = None if name == "crsp.ccmxpf_lnkhist" else 2020
        assert read(twin, name, year).equals(read(src, name, year))
        assert markers(twin, name) == markers(src, name)
        assert not read(other, name, year).equals(read(src, name, year))
        assert markers(other, name)[year] != markers(src, name)[year]
        spec = BUILTIN_SPECS[name]
        assert twin.describe(spec).change_marker == src.describe(spec).change_marker
        assert other.describe(spec).change_marker != src.describe(spec).change_marker


@pytest.mark.parametrize("vintage", [1, 2])
def test_year_rows_do_not_depend_on_the_other_years(vintage: int) -> None:
    """A year's rows and marker are the same whatever earlier years the source also serves."""
    wide = SampleSource(seed=3, years=range(2017, 2023), n_securities=N, vintage=vintage)
    narrow = SampleSource(seed=3, years=[2021, 2022], n_securities=N, vintage=vintage)
    for name in (*TIME_SERIES, "comp.funda"):
        assert read(wide, name, 2021).equals(read(narrow, name, 2021)), name
        assert markers(wide, name)[2021] == markers(narrow, name)[2021]
    wide_msf = SampleSource(seed=3, years=range(2017, 2023), n_securities=N)
    assert (
        wide_msf.describe(BUILTIN_SPECS["crsp.msf"]).change_marker
        != narrow.describe(BUILTIN_SPECS["crsp.msf"]).change_marker
    )


def test_ff_does_not_depend_on_the_universe() -> None:
    """FF factors depend on the seed only: n_securities and profile change no row and no marker."""
    a = SampleSource(seed=5, years=[2020], n_securities=N)
    b = SampleSource(seed=5, years=[2020], n_securities=40, profile="sas")
    for name in ("ff.factors_daily", "ff.factors_monthly"):
        assert read(a, name, 2020).equals(read(b, name, 2020))
        assert a.describe(BUILTIN_SPECS[name]) == b.describe(BUILTIN_SPECS[name])


# --- calendar ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def calendar_source() -> SampleSource:
    # Non-contiguous years; vintage 2 so that 2023 has its December.
    return SampleSource(seed=1, years=[2018, 2021, 2022, 2023], n_securities=20, vintage=2)


def test_trading_days_skip_weekends_and_holidays(calendar_source: SampleSource) -> None:
    """Daily dates are weekdays minus the computed NYSE holidays."""
    days = set(read(calendar_source, "ff.factors_daily")["date"].to_pylist())
    dsf_days = set(read(calendar_source, "crsp.dsf")["date"].to_pylist())
    assert dsf_days == days
    assert all(d.weekday() < 5 for d in days)
    closed = [
        "2018-01-01", "2018-01-15", "2018-02-19", "2018-03-30", "2018-05-28", "2018-07-04",
        "2018-09-03", "2018-11-22", "2018-12-25", "2021-07-05",
        "2022-01-17", "2022-06-20", "2022-12-26", "2023-01-02", "2023-04-07", "2023-06-19",
        "2023-07-04", "2023-11-23", "2023-12-25",
    ]  # fmt: skip
    for day in closed:
        assert dt.date.fromisoformat(day) not in days, day
    # Juneteenth is a market holiday from 2022 only; New Year 2022 fell on a Saturday.
    assert dt.date(2021, 6, 18) in days
    assert dt.date(2021, 12, 31) in days
    per_year = {y: sum(d.year == y for d in days) for y in (2021, 2022, 2023)}
    assert per_year == {2021: 252, 2022: 251, 2023: 250}


def test_msf_date_is_the_last_trading_day_of_the_month(calendar_source: SampleSource) -> None:
    """msf.date is the month's last trading day (2018-03-29 before Good Friday, 2023-06-30)."""
    msf_dates = set(read(calendar_source, "crsp.msf")["date"].to_pylist())
    days = read(calendar_source, "ff.factors_daily")["date"].to_pylist()
    last = {}
    for d in days:
        last[(d.year, d.month)] = max(last.get((d.year, d.month), d), d)
    assert msf_dates == set(last.values())
    assert dt.date(2018, 3, 29) in msf_dates
    assert dt.date(2018, 3, 30) not in msf_dates
    assert dt.date(2023, 6, 30) in msf_dates
    assert dt.date(2023, 6, 30).weekday() == 4
    assert dt.date(2023, 12, 29) in msf_dates


def test_ff_monthly_dates_values_and_dateff(src: SampleSource) -> None:
    """ff.factors_monthly: date on the 1st, decimal factors, dateff = last trading day except
    NULL for the last two months of data."""
    ff = read(src, "ff.factors_monthly")
    days = read(src, "ff.factors_daily")["date"].to_pylist()
    assert all(d.day == 1 for d in ff["date"].to_pylist())
    for col in ("mktrf", "smb", "hml", "rf", "umd"):
        values = ff[col].to_pylist()
        assert all(v is not None and abs(v) < 0.5 for v in values), col
    assert max(abs(v) for v in ff["mktrf"].to_pylist()) > 0.005  # decimals, not percent
    for row in ff.to_pylist():
        month_days = [d for d in days if (d.year, d.month) == (row["date"].year, row["date"].month)]
        if (row["date"].year, row["date"].month) in ((2022, 10), (2022, 11)):
            assert row["dateff"] is None
        else:
            assert row["dateff"] == max(month_days)
        assert (row["year"], row["month"]) == (row["date"].year, row["date"].month)


def test_ff_starts_in_july_1926_with_umd_missing_for_1926() -> None:
    """Data from 1926 start on 1926-07-01, and umd is NULL exactly in 1926."""
    early = SampleSource(seed=0, years=range(1926, 1928), n_securities=10)
    monthly = read(early, "ff.factors_monthly")
    assert monthly["date"][0].as_py() == dt.date(1926, 7, 1)
    assert len(monthly) == 6 + 11  # Jul-Dec 1926, then 1927 through November (vintage 1)
    for row in monthly.to_pylist():
        assert (row["umd"] is None) == (row["date"].year == 1926)
    assert read(early, "ff.factors_daily")["date"][0].as_py() == dt.date(1926, 7, 1)


# --- vintages ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", TIME_SERIES)
def test_vintage_2_appends_december_and_restates_one_year(
    src: SampleSource, src_v2: SampleSource, name: str
) -> None:
    """Vintage 2 equals vintage 1 except December of the last year and a few restated rows of
    the restated year (last - 2); the partition markers change exactly there."""
    date_col = BUILTIN_SPECS[name].partition_column
    assert date_col is not None
    for year in (2019, 2021):
        assert read(src, name, year).equals(read(src_v2, name, year))
    old, new = read(src, name, 2022), read(src_v2, name, 2022)
    assert 12 not in months_of(old, date_col)
    assert 12 in months_of(new, date_col)
    before_december = new.filter(pc.less(pc.month(new[date_col]), 12))
    if name == "ff.factors_monthly":  # October gets its dateff once November is complete
        assert before_december.drop_columns("dateff").equals(old.drop_columns("dateff"))
    else:
        assert before_december.equals(old)
    old, new = read(src, name, 2020), read(src_v2, name, 2020)
    assert len(old) == len(new)
    changed = sum(a != b for a, b in zip(old.to_pylist(), new.to_pylist(), strict=True))
    assert 1 <= changed <= 20
    old_m, new_m = markers(src, name), markers(src_v2, name)
    assert {y for y in YEARS if old_m[y] != new_m[y]} == {2020, 2022}
    spec = BUILTIN_SPECS[name]
    assert src.describe(spec).change_marker != src_v2.describe(spec).change_marker
    assert src.describe(spec).comment != src_v2.describe(spec).comment


def test_vintage_2_adds_late_filers_and_restates_funda(
    src: SampleSource, src_v2: SampleSource
) -> None:
    """comp.funda vintage 2 adds the last year's late filers and restates a few earlier rows."""
    key = ["gvkey", "datadate", "indfmt", "datafmt", "popsrc", "consol"]
    for year in (2019, 2021):
        assert read(src, "comp.funda", year).equals(read(src_v2, "comp.funda", year))
    old, new = read(src, "comp.funda", 2022), read(src_v2, "comp.funda", 2022)
    assert len(new) > len(old)
    old_rows = {tuple(r[k] for k in key): r for r in old.to_pylist()}
    new_rows = {tuple(r[k] for k in key): r for r in new.to_pylist()}
    assert all(new_rows[k] == row for k, row in old_rows.items())
    old, new = read(src, "comp.funda", 2020), read(src_v2, "comp.funda", 2020)
    changed = sum(a != b for a, b in zip(old.to_pylist(), new.to_pylist(), strict=True))
    assert len(old) == len(new)
    assert 1 <= changed <= 20
    old_m, new_m = markers(src, "comp.funda"), markers(src_v2, "comp.funda")
    assert {y for y in YEARS if old_m[y] != new_m[y]} == {2020, 2022}
    assert src.describe(BUILTIN_SPECS["comp.funda"]).comment.startswith("Last modified: ")


def test_vintage_2_extends_dimension_tables(src: SampleSource, src_v2: SampleSource) -> None:
    """Unpartitioned tables follow the end of data from November to December of the last year."""
    old, new = read(src, "crsp.msenames"), read(src_v2, "crsp.msenames")
    assert pc.max(old["nameendt"]).as_py() == dt.date(2022, 11, 30)
    assert pc.max(new["nameendt"]).as_py() == dt.date(2022, 12, 30)
    for name in (
        "crsp.msenames",
        "crsp.msedelist",
        "crsp.ccmxpf_lnkhist",
        "crsp.stksecurityinfohist",
    ):
        assert markers(src, name)[None] != markers(src_v2, name)[None]
    assert src.describe(BUILTIN_SPECS["crsp.ccmxpf_lnkhist"]).comment is None
    assert src.describe(BUILTIN_SPECS["crsp.msf"]).comment == (
        "Monthly Stock - Securities (Updated 2022-12-12)"
    )
    assert src_v2.describe(BUILTIN_SPECS["crsp.msf"]).comment == (
        "Monthly Stock - Securities (Updated 2023-02-08)"
    )


# --- shapes -----------------------------------------------------------------------------------


def connect(source: SampleSource, names: tuple[str, ...] = SERVED) -> duckdb.DuckDBPyConnection:
    """Return a DuckDB connection with the source's tables under their WRDS names."""
    con = duckdb.connect()
    for schema in ("crsp", "comp", "ff"):
        con.execute(f"CREATE SCHEMA {schema}").fetchall()
    for name in names:
        con.register("staged", read(source, name))
        con.execute(f"CREATE TABLE {name} AS SELECT * FROM staged").fetchall()
        con.unregister("staged")
    return con


def scalar(con: duckdb.DuckDBPyConnection, sql: str) -> object:
    return con.execute(sql).fetchall()[0][0]


def test_msf_ret_is_compounded_dsf_ret(src_v2: SampleSource) -> None:
    """msf.ret equals the month's compounded daily dsf.ret (restated rows included), and ret is
    NULL on a security's first day and in its first month."""
    con = connect(src_v2, ("crsp.dsf", "crsp.msf"))
    worst = scalar(
        con,
        """
        WITH d AS (
            SELECT permno, date_trunc('month', date) AS m,
                   exp(sum(ln(1 + CAST(ret AS DOUBLE)))) - 1 AS compounded
            FROM crsp.dsf WHERE ret IS NOT NULL GROUP BY ALL
        )
        SELECT max(abs(CAST(f.ret AS DOUBLE) - d.compounded))
        FROM crsp.msf AS f JOIN d ON f.permno = d.permno AND date_trunc('month', f.date) = d.m
        WHERE f.ret IS NOT NULL
    """,
    )
    assert isinstance(worst, float)
    assert worst <= 1e-6
    checked = scalar(con, "SELECT count(*) FROM crsp.msf WHERE ret IS NOT NULL")
    assert isinstance(checked, int)
    assert checked > 5_000
    firsts = con.execute("""
        SELECT d.ret IS NULL, m.ret IS NULL
        FROM (SELECT permno, min(date) AS first FROM crsp.dsf GROUP BY 1) AS f
        JOIN crsp.dsf AS d ON d.permno = f.permno AND d.date = f.first
        JOIN crsp.msf AS m ON m.permno = f.permno
         AND date_trunc('month', m.date) = date_trunc('month', f.first)
        WHERE f.first > DATE '2019-01-02'
    """).fetchall()
    assert firsts
    assert all(day and month for day, month in firsts)


def test_crsp_tables_look_like_crsp(src: SampleSource) -> None:
    """Negative prices, shrout in thousands, plausible daily volatility, share classes,
    delisting codes and name intervals look like CRSP's."""
    con = connect(src, ("crsp.dsf", "crsp.msf", "crsp.msenames", "crsp.msedelist"))
    neg = scalar(con, "SELECT avg(CAST(prc < 0 AS INT)) FROM crsp.msf")
    assert isinstance(neg, float)
    assert 0.02 < neg < 0.1
    assert con.execute("SELECT min(shrout), max(shrout) FROM crsp.msf").fetchall()[0] >= (1000, 0)
    assert scalar(con, "SELECT max(shrout) FROM crsp.msf") <= 500_000  # type: ignore[operator]
    sd = scalar(con, "SELECT stddev(CAST(ret AS DOUBLE)) FROM crsp.dsf")
    assert isinstance(sd, float)
    assert 0.01 < sd < 0.04
    nulls = scalar(con, "SELECT avg(CAST(ret IS NULL AS INT)) FROM crsp.dsf")
    assert isinstance(nulls, float)
    assert 0.002 < nulls < 0.02
    assert scalar(con, "SELECT count(*) FROM crsp.msenames WHERE nameendt IS NULL") == 0
    codes = con.execute("SELECT DISTINCT shrcd FROM crsp.msenames ORDER BY 1").fetchall()
    assert codes == [(10,), (11,), (12,)]
    exch = con.execute("SELECT DISTINCT exchcd FROM crsp.msenames ORDER BY 1").fetchall()
    assert exch == [(1,), (2,), (3,), (4,)]
    assert scalar(
        con,
        """SELECT count(*) FROM (SELECT permno FROM crsp.msenames GROUP BY 1
                          HAVING count(*) = 2)""",
    )
    assert scalar(
        con,
        """SELECT count(*) FROM (SELECT permco FROM crsp.msenames GROUP BY 1
                          HAVING count(DISTINCT permno) > 1)""",
    )
    overlapping = scalar(
        con,
        """SELECT count(*) FROM crsp.msenames a JOIN crsp.msenames b
        ON a.permno = b.permno AND a.namedt < b.namedt AND b.namedt <= a.nameendt""",
    )
    assert overlapping == 0
    one_per_permno = scalar(con, "SELECT count(*) = count(DISTINCT permno) FROM crsp.msedelist")
    assert one_per_permno is True
    assert scalar(con, "SELECT count(*) FROM crsp.msedelist WHERE dlstcd = 100")
    assert scalar(con, "SELECT count(*) FROM crsp.msedelist WHERE dlstcd >= 500") == scalar(
        con, "SELECT count(*) FROM crsp.msedelist WHERE dlstcd >= 500 AND dlret IS NULL"
    )
    mergers = con.execute("""SELECT count(*), count(dlret) FROM crsp.msedelist
                             WHERE dlstcd BETWEEN 200 AND 299""").fetchall()[0]
    assert mergers[0] > 0
    assert mergers[0] == mergers[1]
    in_range = scalar(
        con,
        """SELECT count(*) FROM crsp.msedelist
                              WHERE dlstcd <> 100 AND dlstdt >= DATE '2019-01-01'""",
    )
    assert in_range  # delistings inside the year range make the panel unbalanced


def test_link_table_looks_like_ccm(src: SampleSource) -> None:
    """The link table has LC/LU/LS and NR links, P/C/J primacy, NULL lpermno on NR rows and NULL
    linkenddt on active links."""
    con = connect(src, ("crsp.ccmxpf_lnkhist",))
    types = {
        r[0] for r in con.execute("SELECT DISTINCT linktype FROM crsp.ccmxpf_lnkhist").fetchall()
    }
    assert types == {"LC", "LU", "LS", "NR"}
    prim = {
        r[0] for r in con.execute("SELECT DISTINCT linkprim FROM crsp.ccmxpf_lnkhist").fetchall()
    }
    assert prim == {"P", "C", "J"}
    nr = con.execute("""SELECT count(*), count(lpermno) FROM crsp.ccmxpf_lnkhist
                        WHERE linktype = 'NR'""").fetchall()[0]
    assert nr[0] > 0
    assert nr[1] == 0
    assert scalar(
        con,
        """SELECT count(*) FROM crsp.ccmxpf_lnkhist
                          WHERE linktype <> 'NR' AND linkenddt IS NULL""",
    )
    assert scalar(con, "SELECT count(*) FROM crsp.ccmxpf_lnkhist WHERE linkenddt IS NOT NULL")


def test_funda_looks_like_compustat() -> None:
    """funda has FS and SUMM_STD duplicates, NULL seq, non-December year ends, two datadates in
    one fyear after a year-end change, and fyear follows the fyr rule."""
    source = SampleSource(seed=0, years=YEARS, n_securities=2000)
    con = connect(source, ("comp.funda",))
    formats = con.execute("SELECT DISTINCT indfmt, datafmt FROM comp.funda ORDER BY ALL").fetchall()
    assert formats == [("FS", "STD"), ("INDL", "STD"), ("INDL", "SUMM_STD")]
    assert scalar(con, "SELECT count(*) FROM comp.funda WHERE seq IS NULL")
    assert scalar(con, "SELECT count(*) FROM comp.funda WHERE month(datadate) <> 12")
    assert scalar(
        con,
        """SELECT count(*) FROM (SELECT gvkey, fyear FROM comp.funda
        WHERE indfmt = 'INDL' AND datafmt = 'STD' GROUP BY ALL HAVING count(*) = 2)""",
    )
    assert (
        scalar(
            con,
            """SELECT count(*) FROM comp.funda WHERE fyear <>
        CASE WHEN fyr >= 6 THEN year(datadate) ELSE year(datadate) - 1 END""",
        )
        == 0
    )
    assert (
        scalar(
            con,
            """SELECT count(*) FROM comp.funda
        WHERE datadate <> last_day(datadate) OR month(datadate) <> fyr""",
        )
        == 0
    )
    positive = scalar(con, 'SELECT avg(CAST("at" > 0 AS INT)) FROM comp.funda')
    assert positive == 1.0


@pytest.mark.parametrize("name", SERVED)
def test_rows_are_sorted_by_a_unique_primary_key(src: SampleSource, name: str) -> None:
    """Each partition is sorted by the dataset's primary key, and the key is unique."""
    spec = BUILTIN_SPECS[name]
    years = list(YEARS) if spec.partitioned else [None]
    for year in years:
        table = read(src, name, year)
        keys = table.select(list(spec.primary_key))
        assert keys.sort_by([(k, "ascending") for k in spec.primary_key]).equals(keys)
        assert len(keys.group_by(list(spec.primary_key)).aggregate([])) == len(keys)


# --- the reference research queries -----------------------------------------------------------


def test_reference_queries_return_rows(src: SampleSource) -> None:
    """The five research queries run on the sample tables and every view has rows; the SMB/HML
    replication has months with values."""
    con = connect(src)
    for number in range(1, 6):
        con.execute((QUERIES / f"q{number}.sql").read_text()).fetchall()
    for view in ("crsp_m", "crsp_m_v2", "comp_be", "ccm_june", "ff_replication"):
        count = scalar(con, f"SELECT count(*) FROM {view}")
        assert isinstance(count, int)
        assert count > 0, view
    replicated = scalar(
        con,
        """SELECT count(*) FROM ff_replication
                                WHERE smb_rep IS NOT NULL AND hml_rep IS NOT NULL""",
    )
    assert isinstance(replicated, int)
    assert replicated >= 12
    adjusted = scalar(con, "SELECT count(*) FROM crsp_m WHERE dlstcd IS NOT NULL AND dlstcd <> 100")
    assert adjusted  # delisting returns reach the monthly universe
