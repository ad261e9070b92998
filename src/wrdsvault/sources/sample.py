"""Deterministic synthetic WRDS-shaped data: `SampleSource`, the source for demos and tests.

`SampleSource` serves every table of the built-in catalog (CRSP legacy SIZ and CIZ stock files,
market indexes, names and delistings, the CCM link; Compustat annual, quarterly and company;
Fama-French) under their real WRDS names, with WRDS's column names in WRDS's order, WRDS's column
labels and the declared PostgreSQL types of either type profile (docs/wrds.md#two-type-profiles).
The rows are synthetic but shaped like the real tables, so that research code behaves as on WRDS:

* one security universe (permnos 10001..) laid out in absolute time: companies with one to three
  share classes (one permco, several permnos), listings, delistings (mergers with a delisting
  return, performance delistings without one), exchange moves, Compustat-only companies, and a
  CRSP/Compustat link history;
* a NYSE trading calendar computed from the holiday rules (New Year, MLK, Presidents, Good Friday,
  Memorial, Juneteenth from 2022, Independence, Labor, Thanksgiving, Christmas, with the weekend
  observance rules). One-off closures (9/11, hurricanes, days of mourning) are not modelled;
* daily returns from a factor model (market, SMB, HML) whose factors are the ``ff.factors_daily``
  rows, bridged to yearly price levels so that prices are continuous across years; prices are
  rounded to cents and returns are computed from the rounded prices, so ``msf.ret`` is exactly the
  compounded ``dsf.ret`` of the month (rounded to six decimals);
* Compustat annual rows with the standard-format rows, FS and SUMM_STD duplicates, fiscal year ends
  other than December, fiscal-year-end changes and NULLs where WRDS has them.

Determinism: the rows of a (dataset, year) depend only on the seed, ``n_securities``, the profile,
the year, and, through the vintage rules, on whether that year is the last (or the restated) year.
They never depend on which other years are requested.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
import threading
import zlib
from collections import OrderedDict
from collections.abc import Collection, Iterable, Iterator, Sequence
from functools import lru_cache
from typing import Any, Final, Literal, TypeVar

import attrs
import numpy as np
import numpy.typing as npt
import pyarrow as pa

from wrdsvault.datasets import DatasetSpec
from wrdsvault.errors import InvalidValueError, UnknownDatasetError
from wrdsvault.sources._labels import label
from wrdsvault.sources.base import COMMENT_KEY, SOURCE_TYPE_KEY, PartitionInfo, TableInfo

__all__ = ["SampleSource"]

_T = TypeVar("_T")
F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
BoolA = npt.NDArray[np.bool_]

#: Bump when the generated data changes, so that every marker changes with it.
_GENERATOR_VERSION: Final = "1"
_MIN_YEAR: Final = 1926
_MAX_YEAR: Final = 2100
_PROFILES: Final = ("2025", "sas")
#: Day numbers (days since 1970-01-01) used throughout the generator.
_ORIGIN: Final = int(np.datetime64("1925-12-31", "D").astype(np.int64))  # CRSP's first date
_FOREVER: Final = int(np.datetime64("2199-12-31", "D").astype(np.int64))  # "never delisted"
_COMPUSTAT_START: Final = int(np.datetime64("1950-01-01", "D").astype(np.int64))
_FF_START: Final = int(np.datetime64("1926-07-01", "D").astype(np.int64))  # first FF month
#: How many rows vintage 2 restates in the restated year.
_RESTATED_CRSP_ROWS: Final = 12
_RESTATED_FF_ROWS: Final = 5
_RESTATED_FUNDA_ROWS: Final = 10
#: Entries kept in a source's cache of generated small tables (monthly CRSP, funda, FF, ...).
_CACHE_ENTRIES: Final = 64


def _crc(text: str) -> int:
    return zlib.crc32(text.encode())


def _rng(seed: int, stream: str, *keys: int) -> np.random.Generator:
    return np.random.default_rng([seed, _crc(stream), *keys])


# --------------------------------------------------------------------------------------------
# Trading calendar
# --------------------------------------------------------------------------------------------


def _easter(year: int) -> dt.date:
    """Return Easter Sunday (anonymous Gregorian algorithm)."""
    a, b, c = year % 19, year // 100, year % 100
    d, e = divmod(b, 4)
    f = (b + 8) // 25
    g = (b - f + 1) // 3
    h = (19 * a + b - d - g + 15) % 30
    i, k = divmod(c, 4)
    ell = (32 + 2 * e + 2 * i - h - k) % 7
    m = (a + 11 * h + 22 * ell) // 451
    month, day = divmod(h + ell - 7 * m + 114, 31)
    return dt.date(year, month, day + 1)


def _nth_weekday(year: int, month: int, weekday: int, nth: int) -> dt.date:
    first = dt.date(year, month, 1)
    return first + dt.timedelta(days=(weekday - first.weekday()) % 7 + 7 * (nth - 1))


def _last_weekday(year: int, month: int, weekday: int) -> dt.date:
    nxt = dt.date(year + month // 12, month % 12 + 1, 1)
    last = nxt - dt.timedelta(days=1)
    return last - dt.timedelta(days=(last.weekday() - weekday) % 7)


def _observed(day: dt.date) -> dt.date:
    """Saturday holidays are observed on Friday, Sunday holidays on Monday."""
    if day.weekday() == 5:
        return day - dt.timedelta(days=1)
    if day.weekday() == 6:
        return day + dt.timedelta(days=1)
    return day


def _market_holidays(year: int) -> list[dt.date]:
    """Return the NYSE full-day holidays of ``year`` under today's rules (and their start years)."""
    mon, thu = 0, 3
    days: list[dt.date] = []
    new_year = dt.date(year, 1, 1)
    if new_year.weekday() == 6:
        days.append(new_year + dt.timedelta(days=1))
    elif new_year.weekday() < 5:  # on a Saturday it is not observed (the Friday before trades)
        days.append(new_year)
    if year >= 1998:
        days.append(_nth_weekday(year, 1, mon, 3))  # Martin Luther King Jr. Day
    days.append(_nth_weekday(year, 2, mon, 3) if year >= 1971 else _observed(dt.date(year, 2, 22)))
    days.append(_easter(year) - dt.timedelta(days=2))  # Good Friday
    days.append(_last_weekday(year, 5, mon) if year >= 1971 else _observed(dt.date(year, 5, 30)))
    if year >= 2022:
        days.append(_observed(dt.date(year, 6, 19)))  # Juneteenth
    days.append(_observed(dt.date(year, 7, 4)))
    days.append(_nth_weekday(year, 9, mon, 1))  # Labor Day
    days.append(_nth_weekday(year, 11, thu, 4) if year >= 1942 else _last_weekday(year, 11, thu))
    days.append(_observed(dt.date(year, 12, 25)))
    return [d for d in days if d.weekday() < 5]


@lru_cache(maxsize=1)
def _holidays() -> npt.NDArray[np.datetime64]:
    days = [d for y in range(_MIN_YEAR - 1, _MAX_YEAR + 2) for d in _market_holidays(y)]
    out = np.array(sorted(days), dtype="datetime64[D]")
    out.setflags(write=False)
    return out


@lru_cache(maxsize=512)
def _trading_days(year: int) -> I64:
    """Return the trading days of ``year`` as day numbers (days since 1970-01-01)."""
    days = np.arange(f"{year}-01-01", f"{year + 1}-01-01", dtype="datetime64[D]")
    out = days[np.is_busday(days, holidays=_holidays())].astype(np.int64)
    out.setflags(write=False)
    return out


def _month_of(days: I64) -> I64:
    """Return the calendar month (0..11) of day numbers."""
    return days.astype("datetime64[D]").astype("datetime64[M]").astype(np.int64) % 12


@lru_cache(maxsize=512)
def _month_ends(year: int) -> I64:
    """Return the last trading day of each month of ``year`` (12 day numbers)."""
    cal = _trading_days(year)
    last = np.flatnonzero(np.diff(_month_of(cal), append=-1) != 0)
    out = cal[last]
    out.setflags(write=False)
    return out


def _snap(days: I64, *, forward: bool) -> I64:
    """Move day numbers to the next (``forward``) or previous trading day."""
    roll: Literal["forward", "backward"] = "forward" if forward else "backward"
    out = np.busday_offset(days.astype("datetime64[D]"), 0, roll=roll, holidays=_holidays())
    return out.astype(np.int64)


def _month_end_trading(days: I64) -> I64:
    """Return the last trading day of the month of each day number."""
    next_month = days.astype("datetime64[D]").astype("datetime64[M]") + 1
    return _snap(next_month.astype("datetime64[D]").astype(np.int64) - 1, forward=False)


def _year_to_day(year: F64) -> I64:
    return np.rint((year - 1970.0) * 365.2425).astype(np.int64)


def _iso(day: int) -> str:
    return str(np.datetime64(int(day), "D"))


# --------------------------------------------------------------------------------------------
# Columns and types
# --------------------------------------------------------------------------------------------

_PG_INTEGERS: Final = {"smallint": pa.int16(), "integer": pa.int32(), "bigint": pa.int64()}
_NUMERIC_RE: Final = re.compile(r"numeric\((\d+),(\d+)\)")


def _is_number(pg: str) -> bool:
    return pg in _PG_INTEGERS or pg.startswith("numeric") or pg == "double precision"


def _arrow_type(pg: str) -> pa.DataType:
    """Map a declared PostgreSQL type to the Arrow type the vault stores."""
    if pg in _PG_INTEGERS:
        return _PG_INTEGERS[pg]
    match = _NUMERIC_RE.fullmatch(pg)
    if match:
        return pa.decimal128(int(match[1]), int(match[2]))
    if pg in ("numeric", "double precision"):
        return pa.float64()
    if pg == "date":
        return pa.date32()
    if pg.startswith("varchar") or pg == "text":
        return pa.string()
    msg = f"no Arrow mapping for declared type {pg!r}"  # pragma: no cover - table definitions only
    raise AssertionError(msg)


@attrs.frozen
class _Table:
    """A table the sample source serves: its columns (profile-2025 types) and how it behaves."""

    name: str
    columns: tuple[tuple[str, str], ...]
    partition_column: str | None
    title: str | None  # the comment title; None = the table has no comment
    comment_style: str = "updated"  # "updated" = "(Updated YYYY-MM-DD)"; "modified" = SAS style
    uses_universe: bool = True  # False: depends on the seed only (not n_securities or profile)
    time_series: bool = False  # monthly/daily: vintage 1 stops the last year after November


def _cols(spec: str) -> tuple[tuple[str, str], ...]:
    """Parse ``"name type, name type, ..."`` (types may contain commas inside parentheses)."""
    out = []
    for item in re.split(r",\s*(?![^()]*\))", spec.strip()):
        name, pg = item.split(None, 1)
        out.append((name, pg.strip()))
    return tuple(out)


_PRICE: Final = "numeric(11,5)"
_RET: Final = "numeric(10,6)"
_MSF_COLS = _cols(
    f"cusip varchar(8), permno integer, permco integer, issuno integer, hexcd smallint, "
    f"hsiccd integer, date date, bidlo {_PRICE}, askhi {_PRICE}, prc {_PRICE}, vol numeric, "
    f"ret {_RET}, bid {_PRICE}, ask {_PRICE}, shrout numeric, cfacpr numeric, cfacshr numeric, "
    f"altprc {_PRICE}, spread numeric, altprcdt date, retx {_RET}"
)
_DSF_COLS = _cols(
    f"cusip varchar(8), permno integer, permco integer, issuno integer, hexcd smallint, "
    f"hsiccd integer, date date, bidlo {_PRICE}, askhi {_PRICE}, prc {_PRICE}, vol numeric, "
    f"ret {_RET}, bid {_PRICE}, ask {_PRICE}, shrout numeric, cfacpr numeric, cfacshr numeric, "
    f"openprc {_PRICE}, numtrd integer, retx {_RET}"
)
_MSENAMES_COLS = _cols(
    "permno integer, namedt date, nameendt date, shrcd smallint, exchcd smallint, siccd integer, "
    "ncusip varchar(8), ticker varchar(8), comnam varchar(35), shrcls varchar(4), "
    "tsymbol varchar(10), naics varchar(7), primexch varchar(1), trdstat varchar(1), "
    "secstat varchar(1), permco integer, compno integer, issuno integer, hexcd smallint, "
    "hsiccd integer, cusip varchar(8)"
)
_MSEDELIST_COLS = _cols(
    f"permno integer, dlstdt date, dlstcd smallint, nwperm integer, nwcomp integer, nextdt date, "
    f"dlamt numeric, dlretx {_RET}, dlprc {_PRICE}, dlpdt date, dlret {_RET}, acperm integer, "
    f"accomp integer"
)
_LNKHIST_COLS = _cols(
    "gvkey varchar(6), linkprim varchar(1), liid varchar(3), linktype varchar(2), "
    "lpermno double precision, lpermco double precision, linkdt date, linkenddt date"
)
#: Compustat data items served (all ``double precision``), in WRDS's alphabetical order.
_FUNDA_ITEMS: Final = (
    "act", "at", "capx", "ceq", "che", "cogs", "csho", "dlc", "dltt", "dp", "ib", "invt", "itcb",
    "lct", "lt", "ni", "oancf", "ppent", "prcc_f", "pstk", "pstkl", "pstkrv", "re", "sale", "seq",
    "txdb", "txditc", "xint", "xsga",
)  # fmt: skip
_FUNDA_COLS = (
    _cols(
        "gvkey varchar(6), datadate date, fyear integer, indfmt varchar(12), consol varchar(2), "
        "popsrc varchar(2), datafmt varchar(12), tic varchar(8), cusip varchar(9), "
        "conm varchar(70)"
    )
    + tuple((item, "double precision") for item in _FUNDA_ITEMS)
    + _cols("curcd varchar(3), fyr integer, costat varchar(1)")
)
_FF_MONTHLY_COLS = _cols(
    "date date, mktrf double precision, smb double precision, hml double precision, "
    "rf double precision, year double precision, month double precision, umd double precision, "
    "dateff date"
)
_FF_DAILY_COLS = _cols(
    "date date, mktrf double precision, smb double precision, hml double precision, "
    "rf double precision, umd double precision"
)
_MSF_V2_COLS = _cols(
    "permno integer, yyyymm integer, mthcaldt date, mthcompflg varchar(1), "
    "mthcompsubflg varchar(1), mthprc numeric(13,6), mthprcflg varchar(2), mthprcdt date, "
    "mthdtflg varchar(2), mthdelflg varchar(1), mthcap numeric, mthprevprc numeric(13,6), "
    "mthprevprcflg varchar(2), mthprevdt date, mthprevdtflg varchar(2), mthprevcap numeric, "
    f"mthret {_RET}, mthretx {_RET}, mthretflg varchar(2), mthdiscnt integer, mthvol numeric, "
    "mthvolflg varchar(2), mthprcvol numeric, mthfacshrflg varchar(1), "
    "mthprcvolmisscnt integer, cusip varchar(8), ticker varchar(8), issuernm varchar(100), "
    "usincflg varchar(1), issuertype varchar(4), securitytype varchar(4), "
    "securitysubtype varchar(4), sharetype varchar(2), exchangetier varchar(4), "
    "primaryexch varchar(1), tradingstatusflg varchar(1), conditionaltype varchar(2), "
    "hdrcusip varchar(8), permco integer, siccd integer, nasdissuno integer, "
    "mthcumfacpr numeric, mthcumfacshr numeric, shrout integer, mthfloatshrqty numeric"
)
_SECINFO_COLS = _cols(
    "permno integer, secinfostartdt date, secinfoenddt date, securitybegdt date, "
    "securityenddt date, securityhdrflg varchar(1), hdrcusip varchar(8), hdrcusip9 varchar(9), "
    "cusip varchar(8), cusip9 varchar(9), primaryexch varchar(1), conditionaltype varchar(2), "
    "exchangetier varchar(4), tradingstatusflg varchar(1), securitynm varchar(100), "
    "shareclass varchar(4), usincflg varchar(1), issuertype varchar(4), securitytype varchar(4), "
    "securitysubtype varchar(4), sharetype varchar(2), securityactiveflg varchar(1), "
    "delactiontype varchar(3), delstatustype varchar(2), delreasontype varchar(3), "
    "delpaymenttype varchar(2), ticker varchar(8), tradingsymbol varchar(10), permco integer, "
    "siccd integer, naics varchar(7), icbindustry varchar(10), uesindustry varchar(10), "
    "nasdcompno integer, nasdissuno integer, issuernm varchar(100)"
)

_DSF_V2_COLS = _cols(
    "permno integer, hdrcusip varchar(8), permco integer, siccd integer, nasdissuno integer, "
    "yyyymmdd integer, sharetype varchar(2), securitytype varchar(4), "
    "securitysubtype varchar(4), usincflg varchar(1), issuertype varchar(4), "
    "primaryexch varchar(1), conditionaltype varchar(2), tradingstatusflg varchar(1), "
    "dlycaldt date, dlydelflg varchar(1), dlyprc numeric(13,6), dlyprcflg varchar(2), "
    "dlycap numeric, dlycapflg varchar(2), dlyprevprc numeric(13,6), dlyprevprcflg varchar(2), "
    "dlyprevdt date, dlyprevcap numeric, dlyprevcapflg varchar(2), "
    f"dlyret {_RET}, dlyretx {_RET}, dlyreti {_RET}, dlyretmissflg varchar(2), "
    "dlyretdurflg varchar(2), dlyorddivamt numeric, dlynonorddivamt numeric, dlyfacprc numeric, "
    "dlydistretflg varchar(2), dlyvol numeric, dlyclose numeric(13,6), dlylow numeric(13,6), "
    "dlyhigh numeric(13,6), dlybid numeric(13,6), dlyask numeric(13,6), dlyopen numeric(13,6), "
    "dlynumtrd integer, dlymmcnt smallint, dlyprcvol numeric, dlycumfacpr numeric, "
    "dlycumfacshr numeric, cusip varchar(8), ticker varchar(8), exchangetier varchar(4), "
    "shrout integer"
)
#: crsp.msi and crsp.dsi: the market index series (CRSP's NYSE/AMEX/Nasdaq universe).
_INDEX_COLS = _cols(
    "date date, vwretd double precision, vwretx double precision, ewretd double precision, "
    "ewretx double precision, sprtrn double precision, spindx double precision, "
    "totval double precision, totcnt integer, usdval double precision, usdcnt integer"
)
_STOCKNAMES_COLS = _cols(
    "permno integer, namedt date, nameenddt date, shrcd smallint, exchcd smallint, "
    "siccd integer, ncusip varchar(8), ticker varchar(8), comnam varchar(35), "
    "shrcls varchar(4), permco integer, hexcd smallint, cusip varchar(8), st_date date, "
    "end_date date"
)
_STKDELISTS_COLS = _cols(
    f"permno integer, delistingdt date, deldtprc numeric(13,6), deldtprcflg varchar(2), "
    f"delactiontype varchar(3), delstatustype varchar(2), delreasontype varchar(3), "
    f"delpaymenttype varchar(2), delpermno integer, delpermco integer, delret {_RET}, "
    f"delretmisstype varchar(2), delnextdt date, delnextprc numeric(13,6), "
    f"delnextprcflg varchar(2), delamtdt date, deldivamt numeric, deldistype varchar(4), "
    f"deldlydt date"
)
_LINKTABLE_COLS = _cols(
    "gvkey varchar(6), linkprim varchar(1), liid varchar(3), linktype varchar(2), "
    "lpermno double precision, lpermco double precision, usedflag smallint, linkdt date, "
    "linkenddt date"
)
#: Compustat quarterly items: (quarterly name, the annual item it is derived from, kind), in
#: WRDS's alphabetical order. Kinds: "stock" (a balance: Q4 equals the annual value), "flow"
#: (the four quarters add up to the annual value), "ytd" (year-to-date: Q4 is the annual value).
_FUNDQ_ITEMS: Final = (
    ("actq", "act", "stock"), ("atq", "at", "stock"), ("capxy", "capx", "ytd"),
    ("ceqq", "ceq", "stock"), ("cheq", "che", "stock"), ("cogsq", "cogs", "flow"),
    ("cshoq", "csho", "stock"), ("dlcq", "dlc", "stock"), ("dlttq", "dltt", "stock"),
    ("dpq", "dp", "flow"), ("ibq", "ib", "flow"), ("invtq", "invt", "stock"),
    ("lctq", "lct", "stock"), ("ltq", "lt", "stock"), ("niq", "ni", "flow"),
    ("oancfy", "oancf", "ytd"), ("ppentq", "ppent", "stock"), ("prccq", "prcc_f", "stock"),
    ("pstkq", "pstk", "stock"), ("pstkrq", "pstkrv", "stock"), ("req", "re", "stock"),
    ("revtq", "sale", "flow"), ("saleq", "sale", "flow"), ("seqq", "seq", "stock"),
    ("txdbq", "txdb", "stock"), ("txditcq", "txditc", "stock"), ("xintq", "xint", "flow"),
    ("xsgaq", "xsga", "flow"),
)  # fmt: skip
_FUNDQ_COLS = (
    _cols(
        "gvkey varchar(6), datadate date, fyearq integer, fqtr integer, fyr integer, "
        "indfmt varchar(12), consol varchar(2), popsrc varchar(2), datafmt varchar(12), "
        "tic varchar(8), cusip varchar(9), conm varchar(70), curcdq varchar(3), "
        "datacqtr varchar(6), datafqtr varchar(6), rdq date"
    )
    + tuple((item, "double precision") for item, _, _ in _FUNDQ_ITEMS)
    + _cols("costat varchar(1)")
)
_COMPANY_COLS = _cols(
    "gvkey varchar(6), conm varchar(70), conml varchar(100), tic varchar(8), cusip varchar(9), "
    "cik varchar(10), sic varchar(4), naics varchar(6), gsector varchar(2), ggroup varchar(4), "
    "gind varchar(6), gsubind varchar(8), ipodate date, dldte date, dlrsn varchar(8), "
    "costat varchar(1), fic varchar(3), loc varchar(3), state varchar(8), incorp varchar(8), "
    "fyrc integer"
)

_TABLES: Final[dict[str, _Table]] = {
    t.name: t
    for t in (
        _Table("crsp.msf", _MSF_COLS, "date", "Monthly Stock - Securities", time_series=True),
        _Table("crsp.dsf", _DSF_COLS, "date", "Daily Stock - Securities", time_series=True),
        _Table(
            "crsp.dsf_v2",
            _DSF_V2_COLS,
            "dlycaldt",
            "Daily Stock File created by WRDS",
            time_series=True,
        ),
        _Table("crsp.msi", _INDEX_COLS, "date", "Monthly Stock - Market Indexes", time_series=True),
        _Table("crsp.dsi", _INDEX_COLS, "date", "Daily Stock - Market Indexes", time_series=True),
        _Table("crsp.msenames", _MSENAMES_COLS, None, "Monthly Stock Event - Name History"),
        _Table("crsp.dsenames", _MSENAMES_COLS, None, "Daily Stock Event - Name History"),
        _Table("crsp.stocknames", _STOCKNAMES_COLS, None, "Stock Names"),
        _Table("crsp.msedelist", _MSEDELIST_COLS, None, "Monthly Stock Event - Delisting"),
        _Table("crsp.dsedelist", _MSEDELIST_COLS, None, "Daily Stock Event - Delisting"),
        _Table("crsp.stkdelists", _STKDELISTS_COLS, None, "Stock Delisting Events"),
        _Table("crsp.ccmxpf_lnkhist", _LNKHIST_COLS, None, None),
        _Table("crsp.ccmxpf_linktable", _LINKTABLE_COLS, None, None),
        _Table(
            "crsp.msf_v2",
            _MSF_V2_COLS,
            "mthcaldt",
            "Monthly Stock File created by WRDS",
            time_series=True,
        ),
        _Table(
            "crsp.stksecurityinfohist", _SECINFO_COLS, None, "Stock Security Information History"
        ),
        _Table("comp.funda", _FUNDA_COLS, "datadate", "Last modified", comment_style="modified"),
        _Table("comp.fundq", _FUNDQ_COLS, "datadate", "Merged Fundamental Quarterly File"),
        _Table("comp.company", _COMPANY_COLS, None, "Company"),
        _Table(
            "ff.factors_monthly",
            _FF_MONTHLY_COLS,
            "date",
            "Fama-French Factors - Monthly Frequency",
            uses_universe=False,
            time_series=True,
        ),
        _Table(
            "ff.factors_daily",
            _FF_DAILY_COLS,
            "date",
            "Fama-French Factors - Daily Frequency",
            uses_universe=False,
            time_series=True,
        ),
    )
}


@lru_cache(maxsize=64)
def _schema(name: str, profile: str) -> pa.Schema:
    fields = []
    for col, pg in _TABLES[name].columns:
        declared = "double precision" if profile == "sas" and _is_number(pg) else pg
        meta = {SOURCE_TYPE_KEY: declared.encode(), COMMENT_KEY: label(name, col).encode()}
        fields.append(pa.field(col, _arrow_type(declared), metadata=meta))
    return pa.schema(fields)


# --------------------------------------------------------------------------------------------
# Column data -> Arrow
# --------------------------------------------------------------------------------------------


@attrs.frozen(eq=False)
class _Pooled:
    """A string column stored as indices into a pool of distinct strings (-1 = NULL)."""

    pool: pa.Array[Any]
    idx: I64

    def __len__(self) -> int:
        return len(self.idx)


#: A column: float64 (NaN = NULL; dates as day numbers), an object array of str/None, or pooled.
_Column = F64 | npt.NDArray[np.object_] | _Pooled
_Frame = dict[str, _Column]


def _decimal(values: F64, nulls: BoolA, typ: pa.Decimal128Type) -> pa.Array[Any]:
    """Build a decimal128 array from float values exactly (values are pre-rounded to the scale)."""
    unscaled = np.rint(np.where(nulls, 0.0, values) * 10.0**typ.scale).astype(np.int64)
    words = np.empty((len(values), 2), dtype=np.int64)
    words[:, 0] = unscaled
    words[:, 1] = unscaled >> 63  # sign extension into the high 64 bits
    null_count = int(nulls.sum())
    validity = pa.array(~nulls).buffers()[1] if null_count else None
    return pa.Array.from_buffers(
        typ, len(values), [validity, pa.py_buffer(words.data)], null_count=null_count
    )


def _to_arrow(values: _Column, typ: pa.DataType, start: int, stop: int) -> pa.Array[Any]:
    if isinstance(values, _Pooled):
        idx = values.idx[start:stop]
        missing = idx < 0
        return values.pool.take(pa.array(np.where(missing, 0, idx), type=pa.int64(), mask=missing))
    if values.dtype == object:
        return pa.array(values[start:stop], type=pa.string())
    part = values[start:stop].astype(np.float64, copy=False)  # float64 already: no copy
    nulls = np.isnan(part)
    mask = nulls if nulls.any() else None
    if pa.types.is_decimal128(typ):
        return _decimal(part, nulls, typ)
    if pa.types.is_integer(typ):
        return pa.array(np.where(nulls, 0, part).astype(typ.to_pandas_dtype()), mask=mask)
    if pa.types.is_date32(typ):
        return pa.array(np.where(nulls, 0, part).astype(np.int32), mask=mask).view(pa.date32())
    return pa.array(part, type=pa.float64(), mask=mask)


def _frame_rows(frame: _Frame) -> int:
    return len(next(iter(frame.values())))


def _batches(frame: _Frame, schema: pa.Schema, batch_rows: int) -> Iterator[pa.RecordBatch]:
    rows = _frame_rows(frame)
    for start in range(0, rows, batch_rows):
        stop = min(start + batch_rows, rows)
        arrays = [_to_arrow(frame[f.name], f.type, start, stop) for f in schema]
        yield pa.RecordBatch.from_arrays(arrays, schema=schema)


def _obj(values: Iterable[Any]) -> npt.NDArray[np.object_]:
    items = list(values)
    out = np.empty(len(items), dtype=object)
    out[:] = items
    return out


def _f(values: Any) -> F64:
    return np.asarray(values, dtype=np.float64)


def _nan_where(mask: BoolA, values: Any) -> F64:
    return np.where(mask, np.nan, _f(values))


# --------------------------------------------------------------------------------------------
# Fama-French factors (depend on the seed and the year only)
# --------------------------------------------------------------------------------------------


@attrs.frozen(eq=False)
class _FFYear:
    """The daily factors of one year on every trading day (before any vintage restatement)."""

    days: I64
    mktrf: F64
    smb: F64
    hml: F64
    rf: F64
    umd: F64  # NaN in 1926 (momentum needs a year of history)


@lru_cache(maxsize=1024)
def _ff_year(seed: int, year: int) -> _FFYear:
    cal = _trading_days(year)
    rng = _rng(seed, "ff", year)
    z = rng.standard_normal((4, len(cal)))
    rf_annual = max(0.0, 0.035 + 0.025 * rng.standard_normal())
    rf_month = np.maximum(0.0, rf_annual + 0.003 * rng.standard_normal(12)) / 12.0
    mon = _month_of(cal)
    per_month = np.bincount(mon, minlength=12).astype(np.float64)
    rf = np.round(rf_month[mon] / per_month[mon], 5)
    umd = np.round(0.0003 + 0.007 * z[3], 4)
    return _FFYear(
        days=cal,
        mktrf=np.round(0.0003 + 0.0095 * z[0], 4),
        smb=np.round(0.0001 + 0.005 * z[1], 4),
        hml=np.round(0.0001 + 0.005 * z[2], 4),
        rf=rf,
        umd=np.full(len(cal), np.nan) if year == _MIN_YEAR else umd,
    )


def _ff_restated(seed: int, year: int) -> _FFYear:
    """Return the year's factors with vintage 2's restatement of a few daily rows."""
    base = _ff_year(seed, year)
    rows = np.flatnonzero(base.days >= _FF_START)
    rng = _rng(seed, "ff.restate", year)
    pick = rng.choice(rows, size=min(_RESTATED_FF_ROWS, len(rows)), replace=False)
    bump = rng.choice(np.array([-3.0, -2.0, -1.0, 1.0, 2.0, 3.0]), size=(2, len(pick))) * 1e-4
    smb, hml = base.smb.copy(), base.hml.copy()
    smb[pick] = np.round(smb[pick] + bump[0], 4)
    hml[pick] = np.round(hml[pick] + bump[1], 4)
    return attrs.evolve(base, smb=smb, hml=hml)


# --------------------------------------------------------------------------------------------
# The security universe (depends on the seed and n_securities only)
# --------------------------------------------------------------------------------------------

_WORDS_A: Final = (
    "ACME", "ALLIED", "AMERICAN", "ATLAS", "BAY", "BLUE", "CAPITAL", "CENTRAL", "CONTINENTAL",
    "CRESCENT", "DELTA", "EAGLE", "EMPIRE", "FIRST", "FRONTIER", "GENERAL", "GLOBAL", "GOLDEN",
    "GREAT", "HARBOR", "HERITAGE", "INTEGRATED", "LIBERTY", "MIDWEST", "NATIONAL", "NORTHERN",
    "PACIFIC", "PIONEER", "PRIME", "RIVER", "SUMMIT", "UNITED", "VALLEY", "WESTERN",
)  # fmt: skip
_WORDS_B: Final = (
    "BANCORP", "BIOSCIENCES", "BRANDS", "CHEMICAL", "COMMUNICATIONS", "ENERGY", "FOODS",
    "HOLDINGS", "INDUSTRIES", "INSTRUMENTS", "MINING", "MOTORS", "NETWORKS", "OIL", "PHARMA",
    "RESOURCES", "RETAIL", "SEMICONDUCTOR", "SOFTWARE", "STEEL", "SYSTEMS", "TECHNOLOGIES",
    "TELECOM", "TRANSPORT", "UTILITIES",
)  # fmt: skip
_SUFFIXES: Final = ("INC", "CORP", "CO", "LTD", "GROUP INC", "HOLDINGS INC")
#: (SIC, NAICS, relative weight); 6xxx are financial firms (FS rows in Compustat).
_INDUSTRIES: Final = (
    (1311, "211120", 1.0), (1381, "213111", 1.0), (2080, "312120", 1.0), (2834, "325412", 1.0),
    (2836, "325414", 1.0), (2911, "324110", 1.0), (3312, "331110", 1.0), (3571, "334111", 1.0),
    (3674, "334413", 1.0), (3711, "336111", 1.0), (3845, "334510", 1.0), (4512, "481111", 1.0),
    (4813, "517311", 1.0), (4911, "221112", 1.0), (5311, "452210", 1.0), (5411, "445110", 1.0),
    (5812, "722511", 1.0), (7370, "541511", 1.0), (7372, "511210", 1.0), (8731, "541714", 1.0),
    (6021, "522110", 0.6), (6022, "522110", 0.6), (6199, "522298", 0.6), (6311, "524113", 0.6),
    (6798, "531120", 0.6), (6282, "523930", 0.6),
)  # fmt: skip
_PRIMEXCH: Final = {1: "N", 2: "A", 3: "Q", 4: "P"}
_TIER: Final = {1: "N1", 2: "A1", 3: "Q1", 4: "P1"}
_MERGER_CODES: Final = (231, 233, 241, 251, 261)
_PERFORMANCE_CODES: Final = (500, 520, 550, 551, 552, 560, 561, 574, 580, 584)
_LIQUIDATION_CODES: Final = (450, 470)
_ALNUM: Final = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def _cusip_check_digit(cusip8: str) -> str:
    total = 0
    for pos, char in enumerate(cusip8):
        value = int(char) if char.isdigit() else ord(char) - ord("A") + 10
        if pos % 2 == 1:
            value *= 2
        total += value // 10 + value % 10
    return str((10 - total % 10) % 10)


@attrs.frozen(eq=False)
class _Universe:
    """Every security and company, in absolute time. Security ``i`` has permno ``10001 + i``."""

    n: int
    # per security
    first: I64  # listing date (first trading day)
    last: I64  # last trading day (_FOREVER = never delisted)
    change: I64  # first trading day on the new exchange (_FOREVER = no change)
    exch0: I64
    exch1: I64
    shrcd: I64
    permco: I64
    company: I64  # index into the company arrays
    share_class: I64  # 0 = primary class
    issuno: I64
    compno: I64
    siccd: I64
    cfac: F64
    beta: F64
    smb_load: F64
    hml_load: F64
    sigma: F64
    spread: F64
    div_yield: F64  # 0 = no dividends
    div_phase: I64
    level: F64  # (n, 176) log price at the start of each year 1926..2101
    shares: F64  # (n, 176) shares outstanding in thousands per year 1926..2100 (+1)
    dlstcd: I64
    dlret: F64  # NaN for performance delistings (CRSP lost the code)
    ciz_delret: F64  # the delisting return CIZ folds into mthret
    nwperm: F64
    linkprim: npt.NDArray[np.object_]
    linktype: npt.NDArray[np.object_]
    conditionaltype: npt.NDArray[np.object_]
    cusip: npt.NDArray[np.object_]
    ticker: npt.NDArray[np.object_]
    comnam: npt.NDArray[np.object_]
    shrcls: npt.NDArray[np.object_]
    naics: npt.NDArray[np.object_]
    issuertype: npt.NDArray[np.object_]
    cusip_pool: pa.Array[Any]
    # per Compustat company (gvkey order)
    gvkey: npt.NDArray[np.object_]
    gv_sec: I64  # primary security of the company, -1 = not in CRSP
    gv_secs: tuple[I64, ...]  # all securities of the company
    gv_start: I64  # first date with Compustat coverage
    gv_end: I64
    gv_nr_start: I64  # start of a no-link (NR) period before the listing, -1 = none
    gv_fyr: I64
    gv_fyr_change: I64  # year in which the fiscal year end moves to December, 0 = never
    gv_financial: BoolA
    gv_log_bm: F64
    gv_distress: BoolA
    gv_pstk: BoolA
    gv_size: F64  # log market equity ($ millions) for Compustat-only companies
    gv_price: F64  # log price for Compustat-only companies
    gv_curcd: npt.NDArray[np.object_]
    gv_tic: npt.NDArray[np.object_]
    gv_cusip: npt.NDArray[np.object_]
    gv_conm: npt.NDArray[np.object_]
    gv_sic: I64  # SIC code of the company's industry
    gv_naics: npt.NDArray[np.object_]


@lru_cache(maxsize=8)
def _universe(seed: int, n: int) -> _Universe:
    rng = _rng(seed, "universe", n)
    # Companies and their share classes: n securities in total.
    classes = rng.choice(np.array([1, 2, 3]), size=n, p=[0.92, 0.06, 0.02])
    total = np.cumsum(classes)
    k = int(np.searchsorted(total, n)) + 1
    classes = classes[:k].copy()
    classes[-1] -= int(total[k - 1] - n)
    u = rng.random((8, k))
    old = u[0] < 0.3  # listed before 1988; the rest list uniformly over 1988..2026
    list_year = np.where(old, 1926.0 + 62.0 * u[1], 1988.0 + 38.0 * u[1])
    c_first = _snap(_year_to_day(list_year), forward=True)
    c_first[old & (u[2] < 0.3)] = _ORIGIN
    life_days = ((0.25 + rng.exponential(13.0, k)) * 365.25).astype(np.int64)
    c_last = _snap(c_first + np.maximum(life_days, 60), forward=False)
    c_last = np.where(u[3] < 0.6, _FOREVER, c_last)
    c_exch = rng.choice(np.array([1, 2, 3, 4]), size=k, p=[0.30, 0.08, 0.57, 0.05])
    c_shrcd = rng.choice(np.array([10, 11, 12]), size=k, p=[0.30, 0.62, 0.08])
    weights = np.array([w for _, _, w in _INDUSTRIES])
    c_ind = rng.choice(len(_INDUSTRIES), size=k, p=weights / weights.sum())
    c_center = np.clip(np.log(12.0) + 0.9 * rng.standard_normal(k), np.log(1.5), np.log(600.0))
    c_log_bm = np.log(0.6) + 0.6 * rng.standard_normal(k)
    c_size_z = rng.standard_normal(k)
    c_issuer = rng.choice(np.array(["CORP", "ACOR"]), size=k, p=[0.9, 0.1])
    c_has_gvkey = u[4] < 0.88
    pre_years = np.where(u[5] < 0.4, 0.5 + 2.5 * u[6], 0.0)

    # Securities (expanded from companies), then ordered by listing date: that order is permno.
    comp = np.repeat(np.arange(k), classes)
    cls = np.arange(n) - np.repeat(np.cumsum(classes) - classes, classes)
    s = rng.random((6, n))
    offset = np.where((cls > 0) & (s[0] < 0.5), (3.0 * 365.25 * s[1]).astype(np.int64), 0)
    first = _snap(c_first[comp] + offset, forward=True)
    first = np.where(first > c_last[comp] - 30, c_first[comp], first)
    order = np.lexsort((cls, comp, first))
    comp, cls, first = comp[order], cls[order], first[order]
    last = c_last[comp]
    s = s[:, order]

    # Company numbers in order of first listing.
    c_rank = np.empty(k, dtype=np.int64)
    c_rank[np.lexsort((np.arange(k), c_first))] = np.arange(k)
    c_permco = 20000 + np.cumsum(rng.integers(1, 4, size=k))[c_rank]

    # Exchange moves (mostly Nasdaq -> NYSE) for about 12% of securities.
    exch0 = c_exch[comp]
    move_at = first + ((1.0 + 14.0 * s[2]) * 365.25).astype(np.int64)
    moves = (s[3] < 0.12) & (move_at < last - 60)
    change = np.where(moves, _snap(np.where(moves, move_at, first), forward=True), _FOREVER)
    target = np.select(
        [exch0 == 3, exch0 == 2, exch0 == 1],
        [np.where(s[4] < 0.75, 1, 2), np.where(s[4] < 0.6, 1, 3), np.full(n, 3)],
        default=1,
    )
    exch1 = np.where(moves, target, exch0)
    nasdaq = (exch0 == 3) | (exch1 == 3)

    # Return dynamics and the yearly log price level (a mean-reverting factor model).
    smallness = -c_size_z[comp]
    beta = np.clip(1.0 + 0.3 * rng.standard_normal(n), 0.2, 2.2)
    smb_load = np.clip(0.3 * smallness + 0.2 * rng.standard_normal(n), -0.8, 1.5)
    hml_load = np.clip(0.6 * (c_log_bm[comp] - np.log(0.6)) + 0.2 * rng.standard_normal(n), -1, 1.5)
    sigma = np.clip(
        np.exp(np.log(0.017) + 0.25 * smallness + 0.2 * rng.standard_normal(n)), 0.006, 0.05
    )
    spread = np.clip(
        np.exp(np.log(0.004) + 0.5 * smallness + 0.3 * rng.standard_normal(n)), 0.0005, 0.05
    )
    center = c_center[comp] + 0.1 * rng.standard_normal(n)
    n_years = _MAX_YEAR - _MIN_YEAR + 1
    sums = np.array([_ff_sums(seed, y) for y in range(_MIN_YEAR, _MAX_YEAR + 1)])
    shocks = 0.25 * rng.standard_normal((n, n_years))
    level = np.empty((n, n_years + 1))
    level[:, 0] = center + 0.4 * rng.standard_normal(n)
    lo, hi = np.log(0.5), np.log(5000.0)
    for t in range(n_years):
        step = (
            sums[t, 3]
            + beta * sums[t, 0]
            + smb_load * sums[t, 1]
            + hml_load * sums[t, 2]
            + shocks[:, t]
            + 0.2 * (center - level[:, t])
        )
        level[:, t + 1] = np.clip(level[:, t] + step, lo, hi)
    base = np.log(20000.0) - 0.9 * smallness + 0.5 * rng.standard_normal(n) - 0.7 * (cls > 0)
    drift = np.empty((n, n_years + 1))
    drift[:, 0] = rng.standard_normal(n)
    wiggle = rng.standard_normal((n, n_years))
    for t in range(n_years):
        drift[:, t + 1] = 0.85 * drift[:, t] + 0.5 * wiggle[:, t]
    shares = np.round(np.clip(np.exp(base[:, None] + 0.1 * drift), 1000.0, 500000.0))

    # Delisting events.
    delisted = last < _FOREVER
    kind = s[5]
    code = np.where(
        kind < 0.55,
        rng.choice(np.array(_MERGER_CODES), size=n),
        np.where(
            kind < 0.95,
            rng.choice(np.array(_PERFORMANCE_CODES), size=n),
            rng.choice(np.array(_LIQUIDATION_CODES), size=n),
        ),
    )
    merger = kind < 0.55
    dlstcd = np.where(delisted, code, 100)
    performance = delisted & (dlstcd >= 500)
    raw_dlret = np.where(
        merger, 0.02 + 0.06 * rng.standard_normal(n), -0.05 + 0.2 * rng.standard_normal(n)
    )
    dlret = _nan_where(~delisted | performance, np.round(np.maximum(raw_dlret, -0.99), 6))
    ciz_delret = np.where(performance, -np.round(0.1 + 0.7 * rng.random(n), 6), dlret)
    acquirer = rng.integers(0, n, size=n)
    nwperm = _nan_where(~(delisted & merger & (rng.random(n) < 0.5)), 10001 + acquirer)

    # Identifiers and names.
    issuer_codes = rng.choice(100_000 * 36, size=k, replace=False)
    c_issuer6 = [f"{c // 36:05d}{_ALNUM[c % 36]}" for c in issuer_codes]
    letters = rng.integers(0, 26, size=(k, 4))
    tick_len = rng.choice(np.array([3, 4]), size=k, p=[0.6, 0.4])
    c_ticker = [
        "".join(chr(65 + x) for x in row[:ln]) for row, ln in zip(letters, tick_len, strict=True)
    ]
    words = rng.integers(0, 1 << 30, size=(k, 3))
    c_name = [
        f"{_WORDS_A[a % len(_WORDS_A)]} {_WORDS_B[b % len(_WORDS_B)]} "
        f"{_SUFFIXES[c % len(_SUFFIXES)]}"[:35]
        for a, b, c in words
    ]
    multi = classes[comp] > 1
    cusip = _obj([f"{c_issuer6[c]}{10 * (j + 1)}" for c, j in zip(comp, cls, strict=True)])
    shrcls = _obj([("A", "B", "C")[j] if m else None for j, m in zip(cls, multi, strict=True)])
    ticker = _obj(
        [c_ticker[c] + (f".{shrcls[i]}" if cls[i] > 0 else "") for i, c in enumerate(comp)]
    )
    linkprim = np.where(cls > 0, "J", np.where(s[0] < 0.85, "P", "C")).astype(object)
    linktype = np.where(
        cls > 0, np.where(s[1] < 0.5, "LC", "LS"), np.where(s[2] < 0.7, "LC", "LU")
    ).astype(object)

    # Compustat companies: CRSP companies with a gvkey plus Compustat-only companies.
    n_only = max(1, round(0.12 * k))
    o = rng.random((4, n_only))
    only_start = _year_to_day(1950.0 + 82.0 * o[0])
    only_end = np.where(
        o[1] < 0.5,
        _FOREVER,
        only_start + ((1.0 + rng.exponential(10.0, n_only)) * 365.25).astype(int),
    )
    primary = np.full(k, -1, dtype=np.int64)
    primary[comp[cls == 0]] = np.flatnonzero(cls == 0)
    linked = np.flatnonzero(c_has_gvkey)
    pre_start = c_first[linked] - (pre_years[linked] * 365.25).astype(np.int64)
    crsp_start = np.maximum(pre_start, _COMPUSTAT_START)
    gv_start = np.concatenate([crsp_start, only_start])
    gv_end = np.concatenate([c_last[linked], only_end])
    gv_company = np.concatenate([linked, np.full(n_only, -1)])
    nr_start = np.where(crsp_start < c_first[linked], crsp_start, -1)
    gv_nr_start = np.concatenate([nr_start, np.full(n_only, -1)])
    g = len(gv_start)
    g_order = np.lexsort((np.arange(g), gv_start))
    numbers = np.sort(rng.choice(np.arange(1005, 340000), size=g - 1, replace=False))
    gvkey_num = np.concatenate([[1004], numbers])
    gv_company, gv_start, gv_end, gv_nr_start = (
        gv_company[g_order],
        gv_start[g_order],
        gv_end[g_order],
        gv_nr_start[g_order],
    )
    gv_sec = np.where(gv_company >= 0, primary[np.maximum(gv_company, 0)], -1)
    secs_of = {c: np.flatnonzero(comp == c) for c in gv_company[gv_company >= 0].tolist()}
    gv_secs = tuple(secs_of.get(int(c), np.zeros(0, dtype=np.int64)) for c in gv_company)
    ind = np.where(
        gv_company >= 0,
        c_ind[np.maximum(gv_company, 0)],
        rng.choice(len(_INDUSTRIES), size=g, p=weights / weights.sum()),
    )
    gv_financial = np.array([_INDUSTRIES[i][0] // 1000 == 6 for i in ind], dtype=bool)
    fyr = rng.choice(
        np.array([12, 6, 9, 3, 1, 2, 4, 5, 7, 8, 10, 11]),
        size=g,
        p=[0.70, 0.08, 0.08, 0.08] + [0.0075] * 8,
    )
    q = rng.random((5, g))
    start_year = gv_start.astype("datetime64[D]").astype("datetime64[Y]").astype(np.int64) + 1970
    change_year = np.maximum(start_year + 1, 1990) + (q[0] * 40).astype(np.int64)
    gv_fyr_change = np.where((fyr >= 6) & (fyr <= 11) & (q[1] < 0.5), change_year, 0)
    gv_log_bm = np.where(
        gv_company >= 0,
        c_log_bm[np.maximum(gv_company, 0)],
        np.log(0.6) + 0.6 * rng.standard_normal(g),
    )
    only_names = [
        f"{_WORDS_A[a % len(_WORDS_A)]} {_WORDS_B[b % len(_WORDS_B)]} {_SUFFIXES[c % 6]}"[:35]
        for a, b, c in rng.integers(0, 1 << 30, size=(g, 3))
    ]
    only_issuer = rng.choice(100_000 * 36, size=g, replace=False)
    gv_tic, gv_cusip, gv_conm = [], [], []
    for j, c in enumerate(gv_company):
        if c >= 0:
            cusip8 = str(cusip[gv_sec[j]])
            tic, name = c_ticker[c], c_name[c]
        else:
            cusip8 = f"{only_issuer[j] // 36:05d}{_ALNUM[only_issuer[j] % 36]}10"
            tic = "".join(chr(65 + x) for x in rng.integers(0, 26, size=4))
            name = only_names[j]
        gv_tic.append(tic)
        gv_cusip.append(cusip8 + _cusip_check_digit(cusip8))
        gv_conm.append(name)

    return _Universe(
        n=n,
        first=first,
        last=last,
        change=change,
        exch0=exch0,
        exch1=exch1,
        shrcd=c_shrcd[comp],
        permco=c_permco[comp],
        company=comp,
        share_class=cls,
        issuno=np.where(nasdaq, 10000 + (rng.random(n) * 89999).astype(np.int64), 0),
        compno=np.where(nasdaq, 60000000 + c_permco[comp], 0),
        siccd=np.array([_INDUSTRIES[i][0] for i in c_ind])[comp],
        cfac=rng.choice(np.array([1.0, 1.0, 1.0, 1.5, 2.0, 3.0, 4.0]), size=n),
        beta=beta,
        smb_load=smb_load,
        hml_load=hml_load,
        sigma=sigma,
        spread=spread,
        div_yield=np.where(rng.random(n) < 0.4, 0.01 + 0.04 * rng.random(n), 0.0),
        div_phase=rng.integers(0, 3, size=n),
        level=level,
        shares=shares,
        dlstcd=dlstcd,
        dlret=dlret,
        ciz_delret=ciz_delret,
        nwperm=nwperm,
        linkprim=linkprim,
        linktype=linktype,
        conditionaltype=rng.choice(np.array(["RW", "NW"]), size=n, p=[0.95, 0.05]).astype(object),
        cusip=cusip,
        ticker=ticker,
        comnam=_obj([c_name[c] for c in comp]),
        shrcls=shrcls,
        naics=_obj([_INDUSTRIES[c_ind[c]][1] for c in comp]),
        issuertype=c_issuer[comp].astype(object),
        cusip_pool=pa.array(list(cusip), type=pa.string()),
        gvkey=_obj([f"{v:06d}" for v in gvkey_num]),
        gv_sec=gv_sec,
        gv_secs=gv_secs,
        gv_start=gv_start,
        gv_end=gv_end,
        gv_nr_start=gv_nr_start,
        gv_fyr=fyr,
        gv_fyr_change=gv_fyr_change,
        gv_financial=gv_financial,
        gv_log_bm=gv_log_bm,
        gv_distress=q[2] < 0.04,
        gv_pstk=q[3] < 0.2,
        gv_size=np.log(300.0) + 1.5 * rng.standard_normal(g),
        gv_price=np.log(15.0) + 0.8 * rng.standard_normal(g),
        gv_curcd=np.where(q[4] < 0.03, "CAD", "USD").astype(object),
        gv_tic=_obj(gv_tic),
        gv_cusip=_obj(gv_cusip),
        gv_conm=_obj(gv_conm),
        gv_sic=np.array([_INDUSTRIES[i][0] for i in ind], dtype=np.int64),
        gv_naics=_obj([_INDUSTRIES[i][1] for i in ind]),
    )


@lru_cache(maxsize=1024)
def _ff_sums(seed: int, year: int) -> tuple[float, float, float, float]:
    """Return the year's summed daily (mktrf, smb, hml, rf): the factor part of a yearly move."""
    ff = _ff_year(seed, year)
    return (float(ff.mktrf.sum()), float(ff.smb.sum()), float(ff.hml.sum()), float(ff.rf.sum()))


# --------------------------------------------------------------------------------------------
# CRSP: daily rows and their monthly aggregation (one calendar year at a time)
# --------------------------------------------------------------------------------------------


@attrs.frozen(eq=False)
class _Alive:
    """Which securities trade in a year: calendar index range [start, stop) per security."""

    cal: I64
    start: I64  # per security
    stop: I64
    sel: I64  # securities with at least one day


def _alive(u: _Universe, year: int) -> _Alive:
    cal = _trading_days(year)
    start = np.searchsorted(cal, u.first, side="left").astype(np.int64)
    stop = np.searchsorted(cal, u.last, side="right").astype(np.int64)
    return _Alive(cal, start, stop, np.flatnonzero(stop > start))


def _crsp_counts(u: _Universe, year: int, months: int) -> tuple[int, int]:
    """Return (daily rows, monthly rows) of a year cut after ``months`` months, without data."""
    alive = _alive(u, year)
    cut = int(np.searchsorted(alive.cal, _month_ends(year)[months - 1], side="right"))
    start = alive.start[alive.sel]
    stop = np.minimum(alive.stop[alive.sel], cut)
    keep = stop > start
    start, stop = start[keep], stop[keep]
    mon = _month_of(alive.cal)
    daily = int((stop - start).sum())
    monthly = int((mon[stop - 1] - mon[start] + 1).sum())
    return daily, monthly


@attrs.frozen(eq=False)
class _Daily:
    """One year of daily rows (all months; callers cut the last year of vintage 1)."""

    sec: I64
    date: I64
    mon: I64
    price: F64  # the (hidden) price, also on days whose prc is missing
    prc: F64  # signed: negative = bid/ask midpoint; NaN = missing
    ret: F64
    retx: F64
    bid: F64
    ask: F64
    bidlo: F64
    askhi: F64
    vol: F64
    openprc: F64
    numtrd: F64
    shrout: F64
    div: F64
    first: BoolA
    missing: BoolA


@attrs.frozen(eq=False)
class _Monthly:
    """One year of security-months aggregated from `_Daily` (all months)."""

    sec: I64
    mon: I64
    date: I64
    ret: F64
    retx: F64
    prc: F64
    altprc: F64
    altprcdt: F64
    bid: F64
    ask: F64
    bidlo: F64
    askhi: F64
    vol: F64
    shrout: F64
    divs: F64
    missing_days: F64
    first_month: BoolA
    last_date: I64  # last trading day of the security in the month


def _crsp_year(u: _Universe, seed: int, year: int, *, restate: bool) -> tuple[_Daily, _Monthly]:
    """Generate a year of daily rows and their monthly aggregates for every live security."""
    alive = _alive(u, year)
    cal, sel = alive.cal, alive.sel
    n_days = len(cal)
    counts = alive.stop[sel] - alive.start[sel]
    rows = int(counts.sum())
    local = np.repeat(np.arange(len(sel)), counts)
    sec = sel[local]
    group_start = np.cumsum(counts) - counts
    day = np.arange(rows) - group_start[local] + alive.start[sel][local]
    date = cal[day]
    mon = _month_of(cal)[day]

    rng = _rng(seed, "crsp.daily", u.n, year)
    z0 = rng.standard_normal(rows)
    z = rng.standard_normal((2, rows))
    v = rng.random((5, rows))
    ff = _ff_year(seed, year)
    first = date == u.first[sec]
    missing = (v[0] < 0.005) & ~first
    step = (
        ff.rf[day]
        + u.beta[sec] * ff.mktrf[day]
        + u.smb_load[sec] * ff.smb[day]
        + u.hml_load[sec] * ff.hml[day]
        + u.sigma[sec] * z0
    )
    step[missing] = 0.0

    # Bridge the path from the level at its first day to the level at its last day.
    t = year - _MIN_YEAR
    level0, level1 = u.level[sel, t], u.level[sel, t + 1]
    through = alive.stop[sel] >= n_days
    begin = level0 + alive.start[sel] / n_days * (level1 - level0)
    end = level0 + np.minimum(alive.stop[sel], n_days) / n_days * (level1 - level0)
    traded = np.bincount(local, weights=~missing, minlength=len(sel))
    drift = end - begin - np.bincount(local, weights=step, minlength=len(sel))
    step += np.where(missing, 0.0, (drift / np.maximum(traded, 1.0))[local])
    cum = np.cumsum(step)
    log_price = begin[local] + cum - (cum[group_start] - step[group_start])[local]
    log_price[(group_start + counts - 1)[through]] = level1[through]
    price = np.maximum(np.round(np.exp(np.clip(log_price, np.log(0.25), np.log(20000.0))), 2), 0.01)
    del cum, log_price, step, z0

    # The previous day's price; on a security's first day of the year it is last year's close.
    prev = np.empty(rows)
    prev[1:] = price[:-1]
    carried = np.round(np.exp(np.clip(level0, np.log(0.25), np.log(20000.0))), 2)
    prev[group_start] = np.maximum(carried, 0.01)
    ex_day = ((mon - u.div_phase[sec]) % 3 == 0) & (_rank_in_month(year)[day] == 9)
    div = np.where(
        ex_day & ~first & ~missing & (u.div_yield[sec] > 0),
        np.maximum(np.round(prev * u.div_yield[sec] / 4.0, 2), 0.01),
        0.0,
    )
    bad = first | missing
    retx = _nan_where(bad, np.round(price / prev - 1.0, 6))
    ret = _nan_where(bad, np.round((price + div) / prev - 1.0, 6))
    midpoint = v[1] < 0.05
    prc = _nan_where(missing, np.where(midpoint, -price, price))
    half = u.spread[sec] * (0.5 + v[2]) / 2.0
    bid = np.round(price * (1.0 - half), 2)
    ask = np.maximum(np.round(price * (1.0 + half), 2), bid + 0.01)
    bidlo = _nan_where(missing, np.where(midpoint, bid, np.round(price * (1 - 0.02 * v[3]), 2)))
    askhi = _nan_where(missing, np.where(midpoint, ask, np.round(price * (1 + 0.02 * v[4]), 2)))
    shrout = u.shares[sec, t]
    vol = _nan_where(missing, np.round(shrout * 1000.0 * 0.004 * np.exp(0.6 * z[0])))
    opened = np.where(first, price, prev) * np.exp(0.004 * z[1])
    openprc = _nan_where(missing | (year < 1992), np.round(opened, 2))
    on_nasdaq = np.where(date < u.change[sec], u.exch0[sec], u.exch1[sec]) == 3
    numtrd = _nan_where(missing | ~on_nasdaq | (year < 1983), np.floor(vol / 250.0) + 1.0)

    # Monthly groups (security-months), their NULL returns, and vintage 2's restatement.
    group = local * 12 + mon
    m_start = np.flatnonzero(np.diff(group, prepend=-1) != 0) if rows else np.zeros(0, np.int64)
    m_first = np.logical_or.reduceat(first, m_start) if rows else np.zeros(0, bool)
    m_null = (_rng(seed, "crsp.monthly", u.n, year).random(len(m_start)) < 0.005) | m_first
    if restate:
        month_ok = np.repeat(~m_null, np.diff(np.append(m_start, rows)))
        candidates = np.flatnonzero(~np.isnan(ret) & month_ok)
        r = _rng(seed, "crsp.restate", u.n, year)
        size = min(_RESTATED_CRSP_ROWS, len(candidates))
        pick = r.choice(candidates, size=size, replace=False) if size else candidates[:0]
        ret[pick] = np.round(ret[pick] + np.round(r.uniform(0.002, 0.01, len(pick)), 6), 6)

    daily = _Daily(
        sec,
        date,
        mon,
        price,
        prc,
        ret,
        retx,
        bid,
        ask,
        bidlo,
        askhi,
        vol,
        openprc,
        numtrd,
        shrout,
        div,
        first,
        missing,
    )
    return daily, _aggregate(daily, m_start, m_null, year)


@lru_cache(maxsize=512)
def _rank_in_month(year: int) -> I64:
    """Return each trading day's position within its month (0 = first trading day)."""
    cal = _trading_days(year)
    starts = np.flatnonzero(np.diff(_month_of(cal), prepend=-1) != 0)
    out = np.arange(len(cal)) - np.repeat(starts, np.diff(np.append(starts, len(cal))))
    out.setflags(write=False)
    return out


def _aggregate(d: _Daily, start: I64, null: BoolA, year: int) -> _Monthly:
    rows = len(d.sec)
    if rows == 0:
        return _Monthly(
            **{
                f.name: np.zeros(0, dtype=bool if f.name == "first_month" else np.float64)
                for f in attrs.fields(_Monthly)
            }
        )
    end = np.append(start[1:], rows) - 1
    ret = np.round(np.expm1(np.add.reduceat(np.log1p(np.nan_to_num(d.ret)), start)), 6)
    retx = np.round(np.expm1(np.add.reduceat(np.log1p(np.nan_to_num(d.retx)), start)), 6)
    valid_at = np.where(np.isnan(d.prc), -1, np.arange(rows))
    last_valid = np.maximum.reduceat(valid_at, start)
    has_price = last_valid >= 0
    safe = np.maximum(last_valid, 0)
    mon = d.mon[start]
    return _Monthly(
        sec=d.sec[start],
        mon=mon,
        date=_month_ends(year)[mon],
        ret=_nan_where(null, ret),
        retx=_nan_where(null, retx),
        prc=d.prc[end],
        altprc=_nan_where(~has_price, d.prc[safe]),
        altprcdt=_nan_where(~has_price, d.date[safe]),
        bid=d.bid[end],
        ask=d.ask[end],
        bidlo=np.fmin.reduceat(d.bidlo, start),
        askhi=np.fmax.reduceat(d.askhi, start),
        vol=np.round(np.add.reduceat(np.nan_to_num(d.vol), start) / 100.0),
        shrout=d.shrout[end],
        divs=np.add.reduceat((d.div > 0).astype(np.float64), start),
        missing_days=np.add.reduceat(d.missing.astype(np.float64), start),
        first_month=np.logical_or.reduceat(d.first, start),
        last_date=d.date[end],
    )


def _header(u: _Universe, sec: I64) -> _Frame:
    """The CRSP header columns shared by msf and dsf."""
    return {
        "cusip": _Pooled(u.cusip_pool, sec),
        "permno": _f(10001 + sec),
        "permco": _f(u.permco[sec]),
        "issuno": _f(u.issuno[sec]),
        "hexcd": _f(np.where(u.change[sec] < _FOREVER, u.exch1[sec], u.exch0[sec])),
        "hsiccd": _f(u.siccd[sec]),
    }


def _dsf_frame(u: _Universe, d: _Daily, keep: BoolA) -> _Frame:
    def cut(values: Any) -> Any:
        return values if keep.all() else values[keep]

    frame = _header(u, cut(d.sec))
    cfac = u.cfac[cut(d.sec)]
    missing = cut(d.missing)
    frame.update(
        date=_f(cut(d.date)),
        bidlo=cut(d.bidlo),
        askhi=cut(d.askhi),
        prc=cut(d.prc),
        vol=cut(d.vol),
        ret=cut(d.ret),
        bid=_nan_where(missing, cut(d.bid)),
        ask=_nan_where(missing, cut(d.ask)),
        shrout=cut(d.shrout),
        cfacpr=cfac,
        cfacshr=cfac,
        openprc=cut(d.openprc),
        numtrd=cut(d.numtrd),
        retx=cut(d.retx),
    )
    return frame


def _msf_frame(u: _Universe, m: _Monthly) -> _Frame:
    frame = _header(u, m.sec)
    cfac = u.cfac[m.sec]
    frame.update(
        date=_f(m.date),
        bidlo=m.bidlo,
        askhi=m.askhi,
        prc=m.prc,
        vol=m.vol,
        ret=m.ret,
        bid=m.bid,
        ask=m.ask,
        shrout=m.shrout,
        cfacpr=cfac,
        cfacshr=cfac,
        altprc=m.altprc,
        spread=np.round(m.ask - m.bid, 5),
        altprcdt=m.altprcdt,
        retx=m.retx,
    )
    return frame


def _msf_v2_frame(u: _Universe, m: _Monthly, year: int) -> _Frame:
    sec = m.sec
    rows = len(sec)
    t = year - _MIN_YEAR
    mthprc: F64 = np.abs(np.where(np.isnan(m.prc), m.altprc, m.prc))
    mthprcdt = np.where(np.isnan(m.prc), m.altprcdt, _f(m.date))
    delisting = (u.last[sec] < _FOREVER) & (_month_end_trading(u.last[sec]) == m.date)
    delret = np.where(delisting, np.nan_to_num(u.ciz_delret[sec]), 0.0)
    mthret = np.round((1.0 + np.nan_to_num(m.ret)) * (1.0 + delret) - 1.0, 6)
    mthret = np.where(np.isnan(m.ret) & ~delisting, np.nan, mthret)
    mthretx = np.round((1.0 + np.nan_to_num(m.retx)) * (1.0 + delret) - 1.0, 6)
    mthretx = np.where(np.isnan(m.retx) & ~delisting, np.nan, mthretx)
    retflg = np.where(m.first_month, "NS", np.where(np.isnan(mthret), "MP", "RT")).astype(object)
    # Previous month: the row before within the same security, else last December's close.
    same = np.zeros(rows, dtype=bool)
    same[1:] = sec[1:] == sec[:-1]
    prev_prc = np.empty(rows)
    prev_prc[1:] = mthprc[:-1]
    prev_dt = np.empty(rows)
    prev_dt[1:] = m.date[:-1]
    prev_shr = np.empty(rows)
    prev_shr[1:] = m.shrout[:-1]
    carried = ~same & ~m.first_month & (m.mon == 0)
    prev_prc = np.where(
        carried,
        np.round(np.exp(np.clip(u.level[sec, t], np.log(0.25), np.log(20000.0))), 2),
        prev_prc,
    )
    if year > _MIN_YEAR:
        prev_dt = np.where(carried, _month_ends(year - 1)[11], prev_dt)
    prev_shr = np.where(carried, u.shares[sec, max(t - 1, 0)], prev_shr)
    no_prev = ~same & ~carried
    prev_prc = np.round(_nan_where(no_prev, prev_prc), 6)
    on_new = m.date >= u.change[sec]
    exch = np.where(on_new, u.exch1[sec], u.exch0[sec])
    common = u.shrcd[sec] != 12
    mthvol = m.vol * 100.0
    return {
        "permno": _f(10001 + sec),
        "yyyymm": _f(year * 100 + m.mon + 1),
        "mthcaldt": _f(m.date),
        "mthcompflg": _obj(["M"] * rows),
        "mthcompsubflg": _obj(["N"] * rows),
        "mthprc": np.round(mthprc, 6),
        "mthprcflg": np.where(np.isnan(m.prc), "BA", np.where(m.prc < 0, "BA", "TR")).astype(
            object
        ),
        "mthprcdt": mthprcdt,
        "mthdtflg": np.where(mthprcdt == m.date, "ME", "BM").astype(object),
        "mthdelflg": np.where(delisting, "Y", "N").astype(object),
        "mthcap": np.round(mthprc * m.shrout, 2),
        "mthprevprc": prev_prc,
        "mthprevprcflg": _obj([None if x else "TR" for x in no_prev]),
        "mthprevdt": _nan_where(no_prev, prev_dt),
        "mthprevdtflg": _obj([None if x else "ME" for x in no_prev]),
        "mthprevcap": np.round(_nan_where(no_prev, prev_prc * prev_shr), 2),
        "mthret": mthret,
        "mthretx": mthretx,
        "mthretflg": retflg,
        "mthdiscnt": m.divs,
        "mthvol": mthvol,
        "mthvolflg": _obj(["VA"] * rows),
        "mthprcvol": np.round(mthprc * mthvol, 2),
        "mthfacshrflg": _obj(["N"] * rows),
        "mthprcvolmisscnt": m.missing_days,
        "cusip": u.cusip[sec],
        "ticker": u.ticker[sec],
        "issuernm": u.comnam[sec],
        "usincflg": np.where(common, "Y", "N").astype(object),
        "issuertype": u.issuertype[sec],
        "securitytype": _obj(["EQTY"] * rows),
        "securitysubtype": _obj(["COM"] * rows),
        "sharetype": _obj(["NS"] * rows),
        "exchangetier": _obj([_TIER[int(x)] for x in exch]),
        "primaryexch": _obj([_PRIMEXCH[int(x)] for x in exch]),
        "tradingstatusflg": _obj(["A"] * rows),
        "conditionaltype": u.conditionaltype[sec],
        "hdrcusip": u.cusip[sec],
        "permco": _f(u.permco[sec]),
        "siccd": _f(u.siccd[sec]),
        "nasdissuno": _f(u.issuno[sec]),
        "mthcumfacpr": u.cfac[sec],
        "mthcumfacshr": u.cfac[sec],
        "shrout": m.shrout,
        "mthfloatshrqty": np.round(m.shrout * 850.0),
    }


# --------------------------------------------------------------------------------------------
# Fama-French tables
# --------------------------------------------------------------------------------------------


def _ff_frames(
    ff: _FFYear, year: int, months: int, dateff_null_from: int | None
) -> tuple[_Frame, _Frame]:
    """Return (daily, monthly) frames for a year cut after ``months`` months."""
    mon = _month_of(ff.days)
    keep = (ff.days >= _FF_START) & (mon < months)
    daily: _Frame = {
        "date": _f(ff.days[keep]),
        "mktrf": ff.mktrf[keep],
        "smb": ff.smb[keep],
        "hml": ff.hml[keep],
        "rf": ff.rf[keep],
        "umd": ff.umd[keep],
    }
    m_idx = np.unique(mon[keep])
    sl = [np.flatnonzero(keep & (mon == m)) for m in m_idx]

    def compound(x: F64) -> F64:
        return np.array([np.prod(1.0 + x[s]) - 1.0 for s in sl])

    rf_m = np.round(compound(ff.rf), 4)
    mkt = compound(ff.mktrf + ff.rf)
    first_days = (np.datetime64(f"{year}-01", "M") + m_idx).astype("datetime64[D]")
    dateff = _f(_month_ends(year)[m_idx])
    if dateff_null_from is not None:
        dateff = np.where(m_idx >= dateff_null_from, np.nan, dateff)
    monthly: _Frame = {
        "date": _f(first_days.astype(np.int64)),
        "mktrf": np.round(mkt - rf_m, 4),
        "smb": np.round(compound(ff.smb), 4),
        "hml": np.round(compound(ff.hml), 4),
        "rf": rf_m,
        "year": np.full(len(m_idx), float(year)),
        "month": _f(m_idx + 1),
        "umd": np.round(compound(ff.umd), 4),
        "dateff": dateff,
    }
    return daily, monthly


# --------------------------------------------------------------------------------------------
# Compustat
# --------------------------------------------------------------------------------------------


def _month_last_day(year: int, month0: I64) -> I64:
    first_next = (np.datetime64(f"{year}-01", "M") + month0 + 1).astype("datetime64[D]")
    return first_next.astype(np.int64) - 1


def _funda_frame(u: _Universe, seed: int, year: int, *, drop_late: bool, restate: bool) -> _Frame:
    g = len(u.gvkey)
    change = u.gv_fyr_change
    fyr_now = np.where((change > 0) & (year > change), 12, u.gv_fyr)
    switching = np.flatnonzero(change == year)
    company = np.concatenate([np.arange(g), switching])
    fyr = np.concatenate([fyr_now, np.full(len(switching), 12)])
    datadate = _month_last_day(year, fyr - 1)
    alive = (u.gv_start[company] <= datadate) & (datadate <= u.gv_end[company])
    company, fyr, datadate = company[alive], fyr[alive], datadate[alive]
    order = np.lexsort((datadate, company))
    company, fyr, datadate = company[order], fyr[order], datadate[order]
    rows = len(company)

    rng = _rng(seed, "comp.funda", u.n, year)
    z = rng.standard_normal((6, rows))
    w = rng.random((24, rows))
    sec = u.gv_sec[company]
    in_crsp = sec >= 0
    safe = np.maximum(sec, 0)
    t = year - _MIN_YEAR
    price = np.where(in_crsp, np.exp(u.level[safe, t + 1]), np.exp(u.gv_price[company]))
    shares_m = np.where(in_crsp, u.shares[safe, t] / 1000.0, 0.0)
    me = np.where(
        in_crsp, price * shares_m, np.exp(u.gv_size[company] + 0.03 * (year - 2000) + 0.3 * z[0])
    )
    shares_m = np.where(in_crsp, shares_m, me / price)
    be = me * np.exp(u.gv_log_bm[company] + 0.15 * z[1])
    be = np.where(u.gv_distress[company], -0.2 * be, be)
    size = np.abs(be)
    pstk = np.where(u.gv_pstk[company], 0.05 * size, 0.0)
    txditc = 0.03 * size * (1.0 + 0.1 * z[2])
    seq = be + pstk - txditc
    ceq = seq - pstk
    lt = np.abs(seq) * (np.exp(0.3 + 0.6 * z[3]) + np.where(seq < 0, 1.2, 0.0))
    at = seq + lt
    act = at * (0.2 + 0.4 * w[0])
    sale = at * np.exp(-0.2 + 0.5 * z[4])
    ni = sale * (0.05 + 0.08 * z[5])
    ppent = at * (0.05 + 0.45 * w[1])
    dp = ppent * (0.05 + 0.1 * w[2])
    financial = u.gv_financial[company]
    values = {
        "act": _nan_where(financial, act),
        "at": at,
        "capx": ppent * (0.05 + 0.15 * w[3]),
        "ceq": ceq,
        "che": act * (0.05 + 0.35 * w[4]),
        "cogs": sale * (0.4 + 0.4 * w[5]),
        "csho": shares_m,
        "dlc": lt * 0.15 * w[6],
        "dltt": lt * (0.1 + 0.4 * w[7]),
        "dp": dp,
        "ib": ni * (1.0 + 0.03 * (w[8] - 0.5)),
        "invt": _nan_where(financial, act * 0.4 * w[9]),
        "itcb": _nan_where(w[10] < 0.3, 0.2 * txditc),
        "lct": _nan_where(financial, act * (0.4 + 0.7 * w[11])),
        "lt": lt,
        "ni": ni,
        "oancf": ni + dp + 0.03 * sale * (w[12] - 0.5),
        "ppent": ppent,
        "prcc_f": price,
        "pstk": pstk,
        "pstkl": _nan_where(w[13] < 0.1, pstk),
        "pstkrv": _nan_where(w[14] < 0.2, pstk * (1.0 + 0.02 * (w[15] - 0.5))),
        "re": seq * (-0.5 + 1.4 * w[16]),
        "sale": sale,
        "seq": _nan_where(w[17] < 0.06, seq),
        "txdb": _nan_where(w[18] < 0.2, 0.8 * txditc),
        "txditc": _nan_where(w[19] < 0.1, txditc),
        "xint": _nan_where(w[20] < 0.05, lt * (0.01 + 0.04 * w[21])),
        "xsga": sale * (0.05 + 0.25 * w[22]),
    }
    values = {k: np.round(v, 3) for k, v in values.items()}
    values["prcc_f"] = np.round(price, 2)
    if restate and rows:
        r = _rng(seed, "comp.funda.restate", u.n, year)
        pick = r.choice(rows, size=min(_RESTATED_FUNDA_ROWS, rows), replace=False)
        factor = 1.0 + r.choice(np.array([-1.0, 1.0]), len(pick)) * r.uniform(0.02, 0.2, len(pick))
        for item in ("ni", "ib", "oancf"):
            values[item][pick] = np.round(values[item][pick] * factor, 3)
        delta = values["ni"][pick] * (factor - 1.0)
        for item in ("seq", "ceq", "at", "re"):
            values[item][pick] = np.round(values[item][pick] + delta, 3)
    std = np.ones(rows, dtype=bool)
    if drop_late:
        late = (_rng(seed, "comp.funda.late", u.n, year).random(rows) < 0.35) & (fyr >= 9)
        std = ~late
    # The standard row, an FS duplicate for financial firms and SUMM_STD duplicates.
    summ = (w[23] < 0.25) & std
    fs = financial & std
    base = np.flatnonzero(std)
    src = np.concatenate([base, np.flatnonzero(fs), np.flatnonzero(summ)])
    indfmt = np.concatenate([np.ones(len(base)), np.zeros(fs.sum()), np.ones(summ.sum())])
    datafmt = np.concatenate([np.zeros(len(base)), np.zeros(fs.sum()), np.ones(summ.sum())])
    order = np.lexsort((datafmt, indfmt, datadate[src], company[src]))
    src, indfmt, datafmt = src[order], indfmt[order], datafmt[order]
    comp_rows = company[src]
    fy = fyr[src]
    dd = datadate[src]
    dd_year = dd.astype("datetime64[D]").astype("datetime64[Y]").astype(np.int64) + 1970
    frame: _Frame = {
        "gvkey": u.gvkey[comp_rows],
        "datadate": _f(dd),
        "fyear": _f(np.where(fy >= 6, dd_year, dd_year - 1)),
        "indfmt": np.where(indfmt == 1, "INDL", "FS").astype(object),
        "consol": _obj(["C"] * len(src)),
        "popsrc": _obj(["D"] * len(src)),
        "datafmt": np.where(datafmt == 1, "SUMM_STD", "STD").astype(object),
        "tic": u.gv_tic[comp_rows],
        "cusip": u.gv_cusip[comp_rows],
        "conm": u.gv_conm[comp_rows],
    }
    for item in _FUNDA_ITEMS:
        frame[item] = values[item][src]
    frame["curcd"] = u.gv_curcd[comp_rows]
    frame["fyr"] = _f(fy)
    frame["costat"] = np.where(u.gv_end[comp_rows] < _FOREVER, "I", "A").astype(object)
    frame["_company"] = _f(comp_rows)  # not a column: lets comp.fundq find the company
    return frame


# --------------------------------------------------------------------------------------------
# Unpartitioned tables (they depend on the last date of data)
# --------------------------------------------------------------------------------------------


@attrs.frozen(eq=False)
class _Intervals:
    """Name-history intervals of every security listed by the end of data."""

    sec: I64
    start: I64
    end: I64
    exch: I64
    last_of_sec: BoolA


def _intervals(u: _Universe, data_end: int) -> _Intervals:
    secs = np.flatnonzero(u.first <= data_end)
    delisted = u.last[secs] <= data_end
    end = np.where(delisted, _month_end_trading(np.minimum(u.last[secs], data_end)), data_end)
    moved = u.change[secs] <= np.minimum(u.last[secs], data_end)
    two = secs[moved]
    before_move = _snap(u.change[two] - 1, forward=False)
    sec = np.concatenate([secs, two])
    start = np.concatenate([u.first[secs], u.change[two]])
    first_stop = end.copy()
    first_stop[moved] = before_move
    stop = np.concatenate([first_stop, end[moved]])
    exch = np.concatenate([u.exch0[secs], u.exch1[two]])
    last_flag = np.concatenate([~moved, np.ones(len(two), dtype=bool)])
    order = np.lexsort((start, sec))
    return _Intervals(sec[order], start[order], stop[order], exch[order], last_flag[order])


def _msenames_frame(u: _Universe, data_end: int) -> _Frame:
    iv = _intervals(u, data_end)
    s = iv.sec
    hexcd = np.where(u.change[s] < _FOREVER, u.exch1[s], u.exch0[s])
    return {
        "permno": _f(10001 + s),
        "namedt": _f(iv.start),
        "nameendt": _f(iv.end),
        "shrcd": _f(u.shrcd[s]),
        "exchcd": _f(iv.exch),
        "siccd": _f(u.siccd[s]),
        "ncusip": u.cusip[s],
        "ticker": u.ticker[s],
        "comnam": u.comnam[s],
        "shrcls": u.shrcls[s],
        "tsymbol": u.ticker[s],
        "naics": u.naics[s],
        "primexch": _obj([_PRIMEXCH[int(x)] for x in iv.exch]),
        "trdstat": _obj(["A"] * len(s)),
        "secstat": _obj(["R"] * len(s)),
        "permco": _f(u.permco[s]),
        "compno": _f(u.compno[s]),
        "issuno": _f(u.issuno[s]),
        "hexcd": _f(hexcd),
        "hsiccd": _f(u.siccd[s]),
        "cusip": u.cusip[s],
    }


def _last_price(u: _Universe, secs: I64, days: I64) -> F64:
    """Approximate a security's price on a day from its yearly levels."""
    years = days.astype("datetime64[D]").astype("datetime64[Y]").astype(np.int64) + 1970
    t = np.clip(years - _MIN_YEAR, 0, u.level.shape[1] - 2)
    frac = (days - _year_to_day(years.astype(np.float64))) / 365.25
    log_p: F64 = u.level[secs, t] + np.clip(frac, 0, 1) * (u.level[secs, t + 1] - u.level[secs, t])
    price: F64 = np.exp(log_p)
    return np.round(price, 2)


def _msedelist_frame(u: _Universe, data_end: int) -> _Frame:
    s = np.flatnonzero(u.first <= data_end)
    gone = u.last[s] <= data_end
    dlstdt = np.where(gone, u.last[s], data_end)
    code = np.where(gone, u.dlstcd[s], 100)
    merger = (code >= 200) & (code < 300)
    performance = code >= 500
    price = _last_price(u, s, dlstdt)
    nextdt = np.where(performance & (s % 2 == 0), _snap(dlstdt + 20, forward=True), -1)
    has_next = nextdt >= 0
    dlret = _nan_where(~gone, u.dlret[s])
    dlprc = np.where(
        merger,
        np.round(price * (1.0 + np.nan_to_num(dlret)), 2),
        np.where(has_next, np.round(price * (1.0 + u.ciz_delret[s]), 2), price),
    )
    nwperm = _nan_where(~gone, u.nwperm[s])
    acquirer = np.nan_to_num(nwperm, nan=10001).astype(np.int64) - 10001
    nwcomp = np.where(np.isnan(nwperm), np.nan, u.permco[acquirer])
    return {
        "permno": _f(10001 + s),
        "dlstdt": _f(dlstdt),
        "dlstcd": _f(code),
        "nwperm": np.nan_to_num(nwperm),
        "nwcomp": np.nan_to_num(nwcomp),
        "nextdt": _nan_where(~has_next, nextdt),
        "dlamt": _nan_where(~merger, dlprc),
        "dlretx": _nan_where(~gone, np.round(dlret - np.where(merger, 0.001, 0.0), 6)),
        "dlprc": _nan_where(performance & ~has_next, dlprc),
        "dlpdt": _nan_where(performance & ~has_next, np.where(has_next, nextdt, dlstdt)),
        "dlret": dlret,
        "acperm": nwperm,
        "accomp": nwcomp,
    }


def _lnkhist_frame(u: _Universe, data_end: int) -> _Frame:
    rows: list[tuple[Any, ...]] = []
    for j, gvkey in enumerate(u.gvkey):
        nr_start = int(u.gv_nr_start[j])
        if u.gv_sec[j] < 0:  # Compustat-only company: one no-link row
            start, end = int(u.gv_start[j]), int(u.gv_end[j])
            if start <= data_end:
                rows.append(
                    (gvkey, "C", "01", "NR", None, None, start, end if end <= data_end else None)
                )
            continue
        secs = u.gv_secs[j]
        if 0 <= nr_start <= data_end:
            rows.append(
                (
                    gvkey,
                    "C",
                    "01",
                    "NR",
                    None,
                    None,
                    nr_start,
                    min(int(u.first[secs[0]]) - 1, data_end),
                )
            )
        for rank, sec in enumerate(secs):
            if u.first[sec] > data_end:
                continue
            last = int(u.last[sec])
            rows.append(
                (
                    gvkey,
                    u.linkprim[sec],
                    f"{rank + 1:02d}",
                    u.linktype[sec],
                    float(10001 + sec),
                    float(u.permco[sec]),
                    int(u.first[sec]),
                    last if last <= data_end else None,
                )
            )
    rows.sort(key=lambda r: (r[0], r[6], r[1], r[2]))
    cols = list(zip(*rows, strict=True)) if rows else [()] * 8
    return {
        "gvkey": _obj(cols[0]),
        "linkprim": _obj(cols[1]),
        "liid": _obj(cols[2]),
        "linktype": _obj(cols[3]),
        "lpermno": _f([np.nan if x is None else x for x in cols[4]]),
        "lpermco": _f([np.nan if x is None else x for x in cols[5]]),
        "linkdt": _f(cols[6]),
        "linkenddt": _f([np.nan if x is None else x for x in cols[7]]),
    }


def _secinfo_frame(u: _Universe, data_end: int) -> _Frame:
    iv = _intervals(u, data_end)
    s = iv.sec
    rows = len(s)
    gone = u.last[s] <= data_end
    code = u.dlstcd[s]
    action = np.where(code < 300, "MER", np.where(code < 500, "LIQ", "DEL"))
    cusip9 = _obj([c + _cusip_check_digit(c) for c in u.cusip[s]])
    names = _obj(["COM" if c is None else f"CL {c} COM" for c in u.shrcls[s]])
    return {
        "permno": _f(10001 + s),
        "secinfostartdt": _f(iv.start),
        "secinfoenddt": _f(iv.end),
        "securitybegdt": _f(u.first[s]),
        "securityenddt": _f(np.where(gone, u.last[s], data_end)),
        "securityhdrflg": np.where(iv.last_of_sec, "Y", "N").astype(object),
        "hdrcusip": u.cusip[s],
        "hdrcusip9": cusip9,
        "cusip": u.cusip[s],
        "cusip9": cusip9,
        "primaryexch": _obj([_PRIMEXCH[int(x)] for x in iv.exch]),
        "conditionaltype": u.conditionaltype[s],
        "exchangetier": _obj([_TIER[int(x)] for x in iv.exch]),
        "tradingstatusflg": _obj(["A"] * rows),
        "securitynm": names,
        "shareclass": u.shrcls[s],
        "usincflg": np.where(u.shrcd[s] != 12, "Y", "N").astype(object),
        "issuertype": u.issuertype[s],
        "securitytype": _obj(["EQTY"] * rows),
        "securitysubtype": _obj(["COM"] * rows),
        "sharetype": _obj(["NS"] * rows),
        "securityactiveflg": np.where(gone, "N", "Y").astype(object),
        "delactiontype": _obj([a if g else None for a, g in zip(action, gone, strict=True)]),
        "delstatustype": _obj(["DL" if g else None for g in gone]),
        "delreasontype": _obj([str(c) if g else None for c, g in zip(code, gone, strict=True)]),
        "delpaymenttype": _obj(
            ["CA" if g and c < 300 else None for c, g in zip(code, gone, strict=True)]
        ),
        "ticker": u.ticker[s],
        "tradingsymbol": u.ticker[s],
        "permco": _f(u.permco[s]),
        "siccd": _f(u.siccd[s]),
        "naics": u.naics[s],
        "icbindustry": _obj([None] * rows),
        "uesindustry": _obj([None] * rows),
        "nasdcompno": _f(u.compno[s]),
        "nasdissuno": _f(u.issuno[s]),
        "issuernm": u.comnam[s],
    }


# --------------------------------------------------------------------------------------------
# Tables the published recipes read beside the core ones: CIZ daily, market indexes, the daily
# and CIZ event tables, stock names, the CCM link table, Compustat quarterly and company header.
# Each is derived from the same universe and the same generated years as the core tables, so
# that the relations CRSP and Compustat document hold across them (see docs/sources.md).
# --------------------------------------------------------------------------------------------


def _col(frame: _Frame, name: str) -> npt.NDArray[Any]:
    """A generated column as a numpy array (numbers, or an object array of strings)."""
    values = frame[name]
    assert isinstance(values, np.ndarray), name
    return values


def _const(text: str, rows: int) -> _Pooled:
    """A string column holding ``text`` on every row."""
    return _Pooled(pa.array([text], type=pa.string()), np.zeros(rows, dtype=np.int64))


def _codes(pool: Sequence[str], idx: I64) -> _Pooled:
    """A string column of ``pool[idx]`` (-1 = NULL)."""
    return _Pooled(pa.array(list(pool), type=pa.string()), idx.astype(np.int64))


def _per_security(values: npt.NDArray[np.object_], sec: I64) -> _Pooled:
    """A per-security string attribute (``u.ticker`` ...) on rows of securities ``sec``."""
    return _Pooled(pa.array(list(values), type=pa.string()), sec)


def _group_starts(sec: I64) -> BoolA:
    """Rows that start a security's run (rows are sorted by security)."""
    start = np.ones(len(sec), dtype=bool)
    start[1:] = sec[1:] != sec[:-1]
    return start


def _with_delisting(ret: F64, delisting: BoolA, delret: F64) -> F64:
    """CIZ returns: the delisting return is compounded into the return of the delisting period."""
    adjusted = np.round((1.0 + np.nan_to_num(ret)) * (1.0 + delret) - 1.0, 6)
    return np.where(delisting, adjusted, ret)


def _day_parts(days: I64) -> tuple[I64, I64, I64]:
    """Return (year, month 1..12, day of month) of day numbers."""
    d = days.astype("datetime64[D]")
    month = d.astype("datetime64[M]")
    year = month.astype("datetime64[Y]").astype(np.int64) + 1970
    return year, month.astype(np.int64) % 12 + 1, (d - month).astype(np.int64) + 1


def _dsf_v2_frame(u: _Universe, d: _Daily, keep: BoolA, year: int) -> _Frame:
    def cut(values: Any) -> Any:
        return values if keep.all() else values[keep]

    sec, date, price, prc = cut(d.sec), cut(d.date), cut(d.price), cut(d.prc)
    rows = len(sec)
    t = year - _MIN_YEAR
    starts = _group_starts(sec)
    # The previous close: the row before within the security, on its first row of the year
    # last year's close (as `_crsp_year` carries it), none on its listing day.
    level = np.clip(u.level[sec, t], np.log(0.25), np.log(20000.0))
    carried = np.maximum(np.round(np.exp(level), 2), 0.01)
    prev = np.empty(rows)
    prev[1:] = price[:-1]
    prev_dt = np.empty(rows)
    prev_dt[1:] = date[:-1]
    last_year_close = float(_trading_days(year - 1)[-1]) if year > _MIN_YEAR else np.nan
    listing = cut(d.first)
    prev = np.where(starts, np.where(listing, np.nan, carried), prev)
    prev_dt = np.where(starts, np.where(listing, np.nan, last_year_close), prev_dt)
    prev = np.round(prev, 6)
    missing = cut(d.missing)
    dlyprc = np.abs(prc)
    delisting = date == u.last[sec]
    delret = np.nan_to_num(u.ciz_delret[sec])
    ret = _with_delisting(cut(d.ret), delisting, delret)
    retx = _with_delisting(cut(d.retx), delisting, delret)
    shrout = cut(d.shrout)
    vol = cut(d.vol)
    exch = np.where(date < u.change[sec], u.exch0[sec], u.exch1[sec])
    y, m, dd = _day_parts(date)
    trade = ~missing & (prc > 0)
    cap = np.round(dlyprc * shrout, 2)
    prev_cap = np.round(prev * shrout, 2)
    no_ret = np.isnan(ret)
    return {
        "permno": _f(10001 + sec),
        "hdrcusip": _Pooled(u.cusip_pool, sec),
        "permco": _f(u.permco[sec]),
        "siccd": _f(u.siccd[sec]),
        "nasdissuno": _f(u.issuno[sec]),
        "yyyymmdd": _f(y * 10000 + m * 100 + dd),
        "sharetype": _const("NS", rows),
        "securitytype": _const("EQTY", rows),
        "securitysubtype": _const("COM", rows),
        "usincflg": _codes(("Y", "N"), (u.shrcd[sec] == 12).astype(np.int64)),
        "issuertype": _per_security(u.issuertype, sec),
        "primaryexch": _codes(("", "N", "A", "Q", "P"), exch),
        "conditionaltype": _per_security(u.conditionaltype, sec),
        "tradingstatusflg": _const("A", rows),
        "dlycaldt": _f(date),
        "dlydelflg": _codes(("N", "Y"), delisting.astype(np.int64)),
        "dlyprc": dlyprc,
        "dlyprcflg": _codes(("TR", "BA"), np.where(missing, -1, (prc < 0).astype(np.int64))),
        "dlycap": cap,
        "dlycapflg": _codes(("TR",), np.where(np.isnan(cap), -1, 0)),
        "dlyprevprc": prev,
        "dlyprevprcflg": _codes(("TR",), np.where(np.isnan(prev), -1, 0)),
        "dlyprevdt": prev_dt,
        "dlyprevcap": prev_cap,
        "dlyprevcapflg": _codes(("TR",), np.where(np.isnan(prev_cap), -1, 0)),
        "dlyret": ret,
        "dlyretx": retx,
        "dlyreti": np.round(ret - retx, 6),
        "dlyretmissflg": _codes(
            ("NS", "MP"), np.where(no_ret, np.where(listing, 0, 1), -1).astype(np.int64)
        ),
        "dlyretdurflg": _codes(("D1",), np.where(no_ret, -1, 0)),
        "dlyorddivamt": cut(d.div),
        "dlynonorddivamt": np.zeros(rows),
        "dlyfacprc": np.zeros(rows),
        "dlydistretflg": _codes(("DT",), np.where(cut(d.div) > 0, 0, -1)),
        "dlyvol": vol,
        "dlyclose": _nan_where(~trade, dlyprc),
        "dlylow": _nan_where(~trade, cut(d.bidlo)),
        "dlyhigh": _nan_where(~trade, cut(d.askhi)),
        "dlybid": _nan_where(missing, cut(d.bid)),
        "dlyask": _nan_where(missing, cut(d.ask)),
        "dlyopen": cut(d.openprc),
        "dlynumtrd": cut(d.numtrd),
        "dlymmcnt": np.full(rows, np.nan),
        "dlyprcvol": np.round(dlyprc * vol, 2),
        "dlycumfacpr": u.cfac[sec],
        "dlycumfacshr": u.cfac[sec],
        "cusip": _Pooled(u.cusip_pool, sec),
        "ticker": _per_security(u.ticker, sec),
        "exchangetier": _codes(("", "N1", "A1", "Q1", "P1"), exch),
        "shrout": shrout,
    }


@lru_cache(maxsize=256)
def _sp_index(seed: int, year: int) -> tuple[I64, F64, F64]:
    """A stand-in S&P composite on every trading day of ``year``: (days, return, level).

    The return is the market factor plus the risk-free rate of that day; the level continues
    from the factors of the years before, so it is continuous across years.
    """
    ff = _ff_year(seed, year)
    sprtrn = np.round(ff.mktrf + ff.rf, 6)
    before = sum(sum(_ff_sums(seed, y)[::3]) for y in range(_MIN_YEAR, year))
    level = np.round(10.0 * np.exp(before) * np.cumprod(1.0 + sprtrn), 2)
    for array in (sprtrn, level):
        array.setflags(write=False)
    return ff.days, sprtrn, level


def _index_frame(dates: I64, prc: F64, ret: F64, retx: F64, shrout: F64) -> _Frame:
    """Equal- and value-weighted market returns over the rows of each date (crsp.msi/dsi).

    ``totval``/``totcnt``: every row with a price; ``usdval``/``usdcnt``: the rows with a
    return, weighted by their previous market value (price / (1 + retx) * shrout).
    """
    out, inv = np.unique(dates, return_inverse=True)
    n = len(out)
    priced = ~np.isnan(prc)
    used = ~np.isnan(ret)
    size = np.abs(np.nan_to_num(prc)) * shrout
    prev_cap = np.where(used, size / (1.0 + np.nan_to_num(retx)), 0.0)
    usdcnt = np.bincount(inv, weights=used, minlength=n)
    usdval = np.bincount(inv, weights=prev_cap, minlength=n)
    safe_cnt = np.where(usdcnt > 0, usdcnt, np.nan)
    safe_val = np.where(usdval > 0, usdval, np.nan)

    def mean(values: F64, weights: F64 | None = None) -> F64:
        x = np.where(used, np.nan_to_num(values), 0.0)
        if weights is None:
            return np.round(np.bincount(inv, weights=x, minlength=n) / safe_cnt, 6)
        return np.round(np.bincount(inv, weights=x * weights, minlength=n) / safe_val, 6)

    return {
        "date": _f(out),
        "vwretd": mean(ret, prev_cap),
        "vwretx": mean(retx, prev_cap),
        "ewretd": mean(ret),
        "ewretx": mean(retx),
        "totval": _f(
            np.round(np.bincount(inv, weights=np.where(priced, size, 0.0), minlength=n), 2)
        ),
        "totcnt": _f(np.bincount(inv, weights=priced, minlength=n)),
        "usdval": _f(np.round(usdval, 2)),
        "usdcnt": _f(usdcnt),
    }


def _dsi_frame(seed: int, d: _Daily, keep: BoolA, year: int) -> _Frame:
    days, sprtrn, spindx = _sp_index(seed, year)
    frame = _index_frame(d.date[keep], d.prc[keep], d.ret[keep], d.retx[keep], d.shrout[keep])
    at = np.searchsorted(days, np.asarray(frame["date"]).astype(np.int64))
    frame["sprtrn"], frame["spindx"] = sprtrn[at], spindx[at]
    return frame


def _msi_frame(seed: int, m: _Monthly, year: int) -> _Frame:
    days, sprtrn, spindx = _sp_index(seed, year)
    months = _month_of(days)
    growth = np.ones(12)
    np.multiply.at(growth, months, 1.0 + sprtrn)
    frame = _index_frame(m.date, m.prc, m.ret, m.retx, m.shrout)
    out = np.asarray(frame["date"]).astype(np.int64)
    # The month's S&P return compounds its daily returns; the level is that of the month's end.
    frame["sprtrn"] = np.round(growth[_month_of(out)] - 1.0, 6)
    frame["spindx"] = spindx[np.searchsorted(days, out)]
    return frame


# -- names and delistings ----------------------------------------------------------------------


def _stocknames_frame(u: _Universe, data_end: int) -> _Frame:
    names = _msenames_frame(u, data_end)
    sec = (_col(names, "permno") - 10001).astype(np.int64)
    gone = u.last[sec] <= data_end
    return {
        "permno": names["permno"],
        "namedt": names["namedt"],
        "nameenddt": names["nameendt"],
        "shrcd": names["shrcd"],
        "exchcd": names["exchcd"],
        "siccd": names["siccd"],
        "ncusip": names["ncusip"],
        "ticker": names["ticker"],
        "comnam": names["comnam"],
        "shrcls": names["shrcls"],
        "permco": names["permco"],
        "hexcd": names["hexcd"],
        "cusip": names["cusip"],
        "st_date": _f(u.first[sec]),
        "end_date": _f(np.where(gone, u.last[sec], data_end)),
    }


def _stkdelists_frame(u: _Universe, data_end: int) -> _Frame:
    legacy = _msedelist_frame(u, data_end)
    gone = _col(legacy, "dlstcd") != 100
    s = (_col(legacy, "permno")[gone] - 10001).astype(np.int64)
    rows = len(s)
    code = u.dlstcd[s]
    merger = (code >= 200) & (code < 300)
    price = _last_price(u, s, u.last[s])
    nextdt = _col(legacy, "nextdt")[gone]
    has_next = ~np.isnan(nextdt)
    newperm = _col(legacy, "acperm")[gone]
    delret = np.round(u.ciz_delret[s], 6)
    return {
        "permno": _f(10001 + s),
        "delistingdt": _f(u.last[s]),
        "deldtprc": np.round(price, 6),
        "deldtprcflg": _const("TR", rows),
        "delactiontype": _codes(
            ("MER", "LIQ", "DEL"), np.where(code < 300, 0, np.where(code < 500, 1, 2))
        ),
        "delstatustype": _const("DL", rows),
        "delreasontype": _obj([str(c) for c in code]),
        "delpaymenttype": _codes(("CA",), np.where(merger, 0, -1)),
        "delpermno": newperm,
        "delpermco": _col(legacy, "accomp")[gone],
        "delret": delret,
        "delretmisstype": _codes(("NA",), np.where(np.isnan(delret), 0, -1)),
        "delnextdt": nextdt,
        "delnextprc": np.round(_nan_where(~has_next, price * (1.0 + np.nan_to_num(delret))), 6),
        "delnextprcflg": _codes(("TR",), np.where(has_next, 0, -1)),
        "delamtdt": _nan_where(~merger, u.last[s]),
        "deldivamt": _nan_where(~merger, _col(legacy, "dlamt")[gone]),
        "deldistype": _codes(("CASH",), np.where(merger, 0, -1)),
        "deldlydt": _f(u.last[s]),
    }


def _linktable_frame(u: _Universe, data_end: int) -> _Frame:
    hist = _lnkhist_frame(u, data_end)
    used = ~np.isnan(_col(hist, "lpermno")) & np.isin(_col(hist, "linktype"), ["LC", "LU", "LS"])
    frame = {k: v for k, v in hist.items() if k not in ("linkdt", "linkenddt")}
    frame["usedflag"] = np.where(used, 1.0, -1.0)
    frame["linkdt"] = _col(hist, "linkdt")
    frame["linkenddt"] = _col(hist, "linkenddt")
    return frame


# -- Compustat quarterly and company header ----------------------------------------------------

#: GICS sector of each SIC code the sample uses (financials 40, real estate 60).
_GSECTOR: Final = {
    1311: "10", 1381: "10", 2911: "10", 3312: "15", 4512: "20", 3711: "25", 5311: "25",
    5812: "25", 2080: "30", 5411: "30", 2834: "35", 2836: "35", 3845: "35", 8731: "35",
    6021: "40", 6022: "40", 6199: "40", 6282: "40", 6311: "40", 3571: "45", 3674: "45",
    7370: "45", 7372: "45", 4813: "50", 4911: "55", 6798: "60",
}  # fmt: skip
_STATES: Final = ("NY", "CA", "TX", "DE", "IL", "MA", "NJ", "PA")
_DLRSN: Final = {"merger": "01", "performance": "02", "liquidation": "03", "other": "10"}


def _company_frame(u: _Universe, data_end: int) -> _Frame:
    j = np.flatnonzero(u.gv_start <= data_end)
    number = np.array([int(g) for g in u.gvkey[j]], dtype=np.int64)
    sec = u.gv_sec[j]
    in_crsp = sec >= 0
    safe = np.maximum(sec, 0)
    deleted = u.gv_end[j] <= data_end
    code = np.where(in_crsp, u.dlstcd[safe], 0)
    reason = np.where(
        ~in_crsp,
        _DLRSN["other"],
        np.where(code < 300, _DLRSN["merger"], np.where(code < 500, "03", _DLRSN["performance"])),
    )
    sector = [_GSECTOR[int(s)] for s in u.gv_sic[j]]
    change = u.gv_fyr_change[j]
    end_year = int(_day_parts(np.array([data_end]))[0][0])
    foreign = u.gv_curcd[j] == "CAD"
    return {
        "gvkey": u.gvkey[j],
        "conm": u.gv_conm[j],
        "conml": _obj([str(c).title() for c in u.gv_conm[j]]),
        "tic": u.gv_tic[j],
        "cusip": u.gv_cusip[j],
        "cik": _obj([None if x % 5 == 0 else f"{(x * 7919) % 2_000_000:010d}" for x in number]),
        "sic": _obj([str(s) for s in u.gv_sic[j]]),
        "naics": _obj([str(x)[:6] for x in u.gv_naics[j]]),
        "gsector": _obj(sector),
        "ggroup": _obj([s + "10" for s in sector]),
        "gind": _obj([s + "1010" for s in sector]),
        "gsubind": _obj([s + "101010" for s in sector]),
        "ipodate": _nan_where(~in_crsp | (u.first[safe] <= _ORIGIN), u.first[safe]),
        "dldte": _nan_where(~deleted, u.gv_end[j]),
        "dlrsn": _obj([r if d else None for r, d in zip(reason, deleted, strict=True)]),
        "costat": np.where(u.gv_end[j] < _FOREVER, "I", "A").astype(object),
        "fic": np.where(foreign, "CAN", "USA").astype(object),
        "loc": np.where(foreign, "CAN", "USA").astype(object),
        "state": _obj([_STATES[x % len(_STATES)] for x in number]),
        "incorp": _obj(["DE" if x % 3 else _STATES[x % len(_STATES)] for x in number]),
        "fyrc": _f(np.where((change > 0) & (end_year > change), 12, u.gv_fyr[j])),
    }


def _fundq_frame(
    u: _Universe, seed: int, year: int, annual: Sequence[tuple[int, _Frame]]
) -> _Frame:
    """The quarters ending in ``year`` of the fiscal years of the ``(frame year, funda frame)``s.

    Each STD row of ``comp.funda`` (INDL, and FS for financial firms) becomes four quarters
    ending 9, 6, 3 and 0 months before its ``datadate``. Balance items of the fourth quarter
    equal the annual values, flows add up to them over the four quarters, year-to-date items
    reach them in the fourth quarter. A fiscal-year-end change makes quarters of the transition
    period that repeat an earlier fiscal year's quarter end: those are dropped (the earlier
    fiscal year's quarter stays), so the key is unique; ``(gvkey, fyearq, fqtr)`` can repeat, as
    on WRDS.
    """
    g = len(u.gvkey)
    pieces: list[dict[str, Any]] = []
    for frame_year, fa in annual:
        std = np.flatnonzero(fa["datafmt"] == "STD")
        if not len(std):
            continue
        company = np.asarray(fa["_company"])[std].astype(np.int64)
        datadate = np.asarray(fa["datadate"])[std].astype(np.int64)
        order_start = _group_starts(company)
        first_dd = np.maximum.accumulate(np.where(order_start, np.arange(len(std)), 0))
        occ = (datadate > datadate[first_dd]).astype(np.int64)
        rng = _rng(seed, "comp.fundq", u.n, frame_year)
        raw = rng.random((2, g, 4)) + 0.5
        shares = raw / raw.sum(axis=2, keepdims=True)
        damp = rng.random((2, g, 3))
        lag = rng.integers(20, 50, size=(2, g, 4))
        no_rdq = rng.random((2, g, 4)) < 0.1
        month_end = datadate.astype("datetime64[D]").astype("datetime64[M]")
        for q in range(1, 5):
            q_end = ((month_end - 3 * (4 - q) + 1).astype("datetime64[D]") - 1).astype(np.int64)
            inside = _day_parts(q_end)[0] == year
            if not inside.any():
                continue
            rows = np.flatnonzero(inside)
            c, o = company[rows], occ[rows]
            piece: dict[str, Any] = {
                "company": c,
                "fiscal": datadate[rows],
                "row": std[rows],
                "q": np.full(len(rows), q),
                "datadate": q_end[rows],
                "rdq": np.where(no_rdq[o, c, q - 1], np.nan, q_end[rows] + lag[o, c, q - 1]),
                "frame": fa,
            }
            for name, item, kind in _FUNDQ_ITEMS:
                annual_value = np.asarray(fa[item])[std][rows]
                if kind == "stock":
                    scale = 1.0 if q == 4 else 1.0 - 0.03 * (4 - q) * damp[o, c, q - 1]
                    value = annual_value * scale
                elif kind == "ytd":
                    value = annual_value * shares[o, c, :q].sum(axis=1) if q < 4 else annual_value
                elif q < 4:
                    value = np.round(annual_value * shares[o, c, q - 1], 3)
                else:
                    earlier = np.round(annual_value[:, None] * shares[o, c, :3], 3).sum(axis=1)
                    value = np.round(annual_value - earlier, 3)
                piece[name] = value if q == 4 else np.round(value, 2 if name == "prccq" else 3)
            pieces.append(piece)
    if not pieces:
        return {name: np.zeros(0) for name, _ in _FUNDQ_COLS}
    merged: dict[str, Any] = {}
    for key in pieces[0]:
        if key != "frame":
            merged[key] = np.concatenate([p[key] for p in pieces])
    source_frames = [p["frame"] for p in pieces]
    which = np.concatenate([np.full(len(p["company"]), i) for i, p in enumerate(pieces)])
    indfmt = np.concatenate([np.asarray(p["frame"]["indfmt"])[p["row"]] for p in pieces])
    fs = (indfmt == "FS").astype(np.int64)
    # Key order; among repeated quarter ends the earliest fiscal year comes first and stays.
    order = np.lexsort((merged["fiscal"], 1 - fs, merged["datadate"], merged["company"]))
    keep = np.ones(len(order), dtype=bool)
    c_o, d_o, f_o = merged["company"][order], merged["datadate"][order], fs[order]
    keep[1:] = (c_o[1:] != c_o[:-1]) | (d_o[1:] != d_o[:-1]) | (f_o[1:] != f_o[:-1])
    pick = order[keep]

    def from_annual(column: str) -> npt.NDArray[Any]:
        values = [
            np.asarray(source_frames[i][column])[r]
            for i, r in zip(which[pick], merged["row"][pick], strict=True)
        ]
        return _obj(values) if values and isinstance(values[0], str) else _f(values)

    comp_rows = merged["company"][pick]
    q = merged["q"][pick]
    fyear = from_annual("fyear")
    qy, qm, _ = _day_parts(merged["datadate"][pick])
    frame: _Frame = {
        "gvkey": u.gvkey[comp_rows],
        "datadate": _f(merged["datadate"][pick]),
        "fyearq": fyear,
        "fqtr": _f(q),
        "fyr": from_annual("fyr"),
        "indfmt": np.where(fs[pick] == 1, "FS", "INDL").astype(object),
        "consol": _obj(["C"] * len(pick)),
        "popsrc": _obj(["D"] * len(pick)),
        "datafmt": _obj(["STD"] * len(pick)),
        "tic": u.gv_tic[comp_rows],
        "cusip": u.gv_cusip[comp_rows],
        "conm": u.gv_conm[comp_rows],
        "curcdq": u.gv_curcd[comp_rows],
        "datacqtr": _obj([f"{y}Q{(m - 1) // 3 + 1}" for y, m in zip(qy, qm, strict=True)]),
        "datafqtr": _obj([f"{int(y)}Q{k}" for y, k in zip(fyear, q, strict=True)]),
        "rdq": _f(merged["rdq"][pick]),
    }
    for name, _, _ in _FUNDQ_ITEMS:
        frame[name] = _f(merged[name][pick])
    frame["costat"] = np.where(u.gv_end[comp_rows] < _FOREVER, "I", "A").astype(object)
    return frame


_UNPARTITIONED: Final = {
    "crsp.msenames": _msenames_frame,
    "crsp.dsenames": _msenames_frame,
    "crsp.stocknames": _stocknames_frame,
    "crsp.msedelist": _msedelist_frame,
    "crsp.dsedelist": _msedelist_frame,
    "crsp.stkdelists": _stkdelists_frame,
    "crsp.ccmxpf_lnkhist": _lnkhist_frame,
    "crsp.ccmxpf_linktable": _linktable_frame,
    "crsp.stksecurityinfohist": _secinfo_frame,
    "comp.company": _company_frame,
}


# --------------------------------------------------------------------------------------------
# The source
# --------------------------------------------------------------------------------------------


def _to_years(value: object) -> tuple[int, ...]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        msg = f"years must be a range or an iterable of int years, not {type(value).__name__}"
        raise TypeError(msg)
    years = list(value)
    for year in years:
        if isinstance(year, bool) or not isinstance(year, (int, np.integer)):
            msg = f"years must contain int years, got {year!r} ({type(year).__name__})"
            raise TypeError(msg)
    if not years:
        raise InvalidValueError(
            name="years", value=[], rule="must not be empty; pass e.g. years=range(2018, 2024)"
        )
    bad = [int(y) for y in years if not _MIN_YEAR <= y <= _MAX_YEAR]
    if bad:
        raise InvalidValueError(
            name="years", value=bad, rule=f"years must lie within {_MIN_YEAR}..{_MAX_YEAR}"
        )
    return tuple(sorted({int(y) for y in years}))


def _check_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        msg = f"{name} must be an int, not {type(value).__name__}"
        raise TypeError(msg)
    return int(value)


def _validate_seed(_inst: object, _attr: object, value: object) -> None:
    if _check_int("seed", value) < 0:
        raise InvalidValueError(name="seed", value=value, rule="an int >= 0")


def _validate_vintage(_inst: object, _attr: object, value: object) -> None:
    if _check_int("vintage", value) not in (1, 2):
        raise InvalidValueError(name="vintage", value=value, rule="1 or 2")


def _validate_n(_inst: object, _attr: object, value: object) -> None:
    if _check_int("n_securities", value) < 10:
        raise InvalidValueError(name="n_securities", value=value, rule="an int >= 10")


def _validate_profile(_inst: object, _attr: object, value: object) -> None:
    if value not in _PROFILES:
        raise InvalidValueError(
            name="profile", value=value, rule=f"one of {', '.join(map(repr, _PROFILES))}"
        )


def _digest(parts: object) -> str:
    text = json.dumps(parts, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:24]


@attrs.define(kw_only=True, eq=False, frozen=True)
class SampleSource:
    """Deterministic synthetic WRDS data under WRDS's table names, columns and declared types.

    Serves every table of `BUILTIN_SPECS` (`datasets`): partitioned by year ``crsp.msf``,
    ``crsp.dsf``, ``crsp.msf_v2``, ``crsp.dsf_v2``, ``crsp.msi``, ``crsp.dsi``, ``comp.funda``,
    ``comp.fundq`` (by ``year(datadate)``), ``ff.factors_monthly`` and ``ff.factors_daily``; as
    one partition ``crsp.msenames``, ``crsp.dsenames``, ``crsp.stocknames``, ``crsp.msedelist``,
    ``crsp.dsedelist``, ``crsp.stkdelists``, ``crsp.stksecurityinfohist``,
    ``crsp.ccmxpf_lnkhist``, ``crsp.ccmxpf_linktable`` and ``comp.company``. Every field carries
    its declared type and WRDS's column label in its metadata. The tables agree with each other
    as CRSP and Compustat document (docs/sources.md lists the relations). Cheap to construct:
    data are generated per (dataset, year) on demand; small results are kept in a bounded cache
    (`close` drops it).

    A vintage is the state of WRDS at one update. Vintage 1 holds data through the last trading
    day of **November** of the last year; vintage 2 is the next update. Exactly these differ:

    * ``crsp.msf``, ``crsp.dsf``, ``crsp.msf_v2``, ``crsp.dsf_v2``, ``crsp.msi``, ``crsp.dsi``,
      ``ff.factors_daily``: vintage 2 appends December of the last year (the rows of January to
      November are identical), and, in the restated year ``max(years) - 2`` (only if that year
      is in ``years``), changes ``ret`` of 12 dsf rows (a corrected dividend, ``retx``
      unchanged), hence ``ret`` of the msf rows, ``mthret``/``dlyret`` of the CIZ rows and the
      index returns of those days and months, and ``smb``/``hml`` of 5 factor days.
    * ``ff.factors_monthly``: December appended; ``dateff`` is NULL for the last two months of
      data (October and November in vintage 1, November and December in vintage 2, so October
      gains its ``dateff``); the restated year's months that contain a restated factor day
      change.
    * ``comp.funda``: vintage 1 lacks the late filers of the last year (about a third of the
      rows with a fiscal year end in September to December); vintage 2 has them, and restates
      ``ni``, ``ib``, ``oancf``, ``seq``, ``ceq``, ``at`` and ``re`` of 10 company-years in the
      restated year (their INDL/STD row and its FS/SUMM_STD duplicates, if any).
    * ``comp.fundq``: its quarters derive from the funda rows of their fiscal year, so the years
      holding quarters of those fiscal years (the year and the one before) change with them.
    * ``crsp.msenames``, ``crsp.dsenames``, ``crsp.stocknames``, ``crsp.msedelist``,
      ``crsp.dsedelist``, ``crsp.stkdelists``, ``crsp.stksecurityinfohist``,
      ``crsp.ccmxpf_lnkhist``, ``crsp.ccmxpf_linktable``, ``comp.company``: the end of data
      moves from the last trading day of November to that of December, so
      ``nameendt``/``secinfoenddt``/``securityenddt`` and the active rows' ``dlstdt`` move to it;
      securities listed in December appear; securities delisted in December get their delisting
      code, return and link end date.
    * The table comments' update date: ``(Updated YYYY-12-12)`` for vintage 1 and
      ``(Updated YYYY+1-02-08)`` for vintage 2, where YYYY is the last year; ``comp.funda`` uses
      the SAS style ``Last modified: 12/12/YYYY 02:40:46`` (``02/08/YYYY+1``); the CCM tables
      ``crsp.ccmxpf_lnkhist`` and ``crsp.ccmxpf_linktable`` have no comment.

    Every other partition is identical row for row, and so are the per-year markers.

    Args:
        seed: any int >= 0; everything is a pure function of it.
        years: the calendar years served (a range or an iterable of ints within 1926..2100).
        vintage: 1 or 2, see above.
        n_securities: permnos in the universe (10001..), >= 10. Securities list and delist in
            absolute time, so a given year has fewer live securities (about two thirds around
            2020, fewer before 2000).
        profile: ``"2025"`` (current WRDS types: integer ids, ``numeric(p,s)`` prices and
            returns) or ``"sas"`` (older WRDS: every number ``double precision``).

    Example:
        >>> from wrdsvault.datasets import BUILTIN_SPECS
        >>> src = SampleSource(years=range(2020, 2022), n_securities=50)
        >>> spec = BUILTIN_SPECS["crsp.msf"]
        >>> [p.year for p in src.partitions(spec)]
        [2020, 2021]
        >>> next(src.read_partition(spec, 2020)).schema.field("permno").type
        DataType(int32)
    """

    seed: int = attrs.field(default=0, validator=_validate_seed)
    years: tuple[int, ...] = attrs.field(default=range(2018, 2024), converter=_to_years)
    vintage: int = attrs.field(default=1, validator=_validate_vintage)
    n_securities: int = attrs.field(default=2000, validator=_validate_n)
    profile: str = attrs.field(default="2025", validator=_validate_profile)
    _cache: OrderedDict[tuple[Any, ...], Any] = attrs.field(
        init=False, factory=OrderedDict, repr=False
    )
    _lock: threading.Lock = attrs.field(init=False, factory=threading.Lock, repr=False)

    @property
    def name(self) -> str:
        """Return ``"sample"``, the name recorded in manifests."""
        return "sample"

    @property
    def datasets(self) -> tuple[str, ...]:
        """Return the names of the datasets this source serves, sorted."""
        return tuple(sorted(_TABLES))

    # -- the Source protocol -----------------------------------------------------------------

    def describe(self, spec: DatasetSpec) -> TableInfo:
        """Return the dataset's schema, change marker, exact row total and WRDS-style comment.

        Answers for any ``spec.partition_column`` (the schema does not depend on it: a sync
        with ``date_column="auto"`` describes the table before it knows the column);
        `partitions` and `read_partition` refuse one other than the sample table's.

        Raises:
            UnknownDatasetError: the dataset is not one of `datasets`.
        """
        table = self._table(spec, any_partitioning=True)
        parts = self._partition_infos(table)
        marker = "sample:" + _digest(["table", table.name, [[p.year, p.marker] for p in parts]])
        return TableInfo(
            schema=_schema(table.name, self.profile),
            change_marker=marker,
            row_estimate=sum(p.row_count or 0 for p in parts),
            comment=self._comment(table),
        )

    def partitions(
        self, spec: DatasetSpec, *, years: Collection[int] | None = None
    ) -> Sequence[PartitionInfo]:
        """Return the dataset's non-empty years, oldest first (one ``None`` year if unpartitioned).

        ``years`` keeps only those years (an unpartitioned table's ``None`` year is kept).

        Raises:
            UnknownDatasetError: the dataset is not one of `datasets`.
        """
        infos = self._partition_infos(self._table(spec))
        if years is None:
            return infos
        wanted = set(years)
        return [p for p in infos if p.year is None or p.year in wanted]

    def read_partition(
        self, spec: DatasetSpec, year: int | None, *, batch_rows: int = 131_072
    ) -> Iterator[pa.RecordBatch]:
        """Stream one year's rows (``year=None`` for an unpartitioned table) in key order.

        Every batch has exactly the `describe` schema (metadata included) and at most
        ``batch_rows`` rows. An empty year yields no batch.

        Raises:
            UnknownDatasetError: the dataset is not one of `datasets`.
            ValueError: ``year`` is not one of `years` (or not ``None`` for an unpartitioned
                table), or ``batch_rows < 1``.
        """
        table = self._table(spec)
        self._check_year(table, year)
        if isinstance(batch_rows, bool) or not isinstance(batch_rows, int) or batch_rows < 1:
            msg = f"batch_rows must be an int >= 1, got {batch_rows!r}"
            raise ValueError(msg)
        return self._read(table, year, batch_rows)

    def close(self) -> None:
        """Drop cached tables. Idempotent; the source stays usable."""
        with self._lock:
            self._cache.clear()

    # -- internals ---------------------------------------------------------------------------

    def _read(self, table: _Table, year: int | None, batch_rows: int) -> Iterator[pa.RecordBatch]:
        schema = _schema(table.name, self.profile)
        yield from _batches(self._frame(table, year), schema, batch_rows)

    def _table(self, spec: DatasetSpec, *, any_partitioning: bool = False) -> _Table:
        given: object = spec  # untyped callers can pass anything; mypy cannot see that
        if not isinstance(given, DatasetSpec):
            msg = f"spec must be a DatasetSpec, not {type(given).__name__}"
            raise TypeError(msg)
        table = _TABLES.get(spec.name)
        if table is None:
            raise UnknownDatasetError(
                dataset=spec.name,
                known=list(self.datasets),
                hint="SampleSource serves only these tables",
            )
        if not any_partitioning and spec.partition_column != table.partition_column:
            msg = (
                f"{spec.name}: SampleSource partitions by {table.partition_column!r}, "
                f"not {spec.partition_column!r}; use BUILTIN_SPECS[{spec.name!r}]"
            )
            raise ValueError(msg)
        return table

    def _check_year(self, table: _Table, year: int | None) -> None:
        if table.partition_column is None:
            if year is not None:
                msg = f"{table.name} is unpartitioned: read it with year=None, not {year!r}"
                raise ValueError(msg)
            return
        if (
            isinstance(year, bool)
            or not isinstance(year, (int, np.integer))
            or int(year) not in self.years
        ):
            msg = (
                f"{table.name}: year {year!r} is not served; this SampleSource has years "
                f"{self._years_text()}"
            )
            raise ValueError(msg)

    def _years_text(self) -> str:
        ys = self.years
        if ys == tuple(range(ys[0], ys[-1] + 1)):
            return f"{ys[0]}..{ys[-1]}"
        return ", ".join(map(str, ys))

    @property
    def _last_year(self) -> int:
        return self.years[-1]

    @property
    def _restated_year(self) -> int | None:
        year = self._last_year - 2
        return year if self.vintage == 2 and year in self.years else None

    def _months(self, year: int) -> int:
        """Months of data in ``year``: vintage 1 stops the last year after November."""
        return 11 if self.vintage == 1 and year == self._last_year else 12

    @property
    def _data_end(self) -> int:
        return int(_month_ends(self._last_year)[self._months(self._last_year) - 1])

    def _universe(self) -> _Universe:
        return _universe(self.seed, self.n_securities)

    def _comment(self, table: _Table) -> str | None:
        if table.title is None:
            return None
        y = self._last_year
        if table.comment_style == "modified":
            stamp = f"12/12/{y}" if self.vintage == 1 else f"02/08/{y + 1}"
            return f"Last modified: {stamp} 02:40:46"
        stamp = f"{y}-12-12" if self.vintage == 1 else f"{y + 1}-02-08"
        return f"{table.title} (Updated {stamp})"

    def _mods(self, table: _Table, year: int) -> list[str]:
        """The vintage rules that apply to one year (part of its marker)."""
        mods: list[str] = []
        if table.time_series and self._months(year) < 12:
            mods.append("through-november")
        if table.name == "ff.factors_monthly" and year == self._last_year:
            mods.append(f"dateff-null-from-{self._months(year) - 2}")
        if table.name == "comp.funda" and self.vintage == 1 and year == self._last_year:
            mods.append("late-filers-missing")
        if year == self._restated_year:
            mods.append("restated")
        if table.name == "comp.fundq":  # its quarters come from two fiscal years' funda rows
            mods.extend(f"funda:{m}" for m in self._funda_flags(year + 1))
            mods.extend(f"funda:{m}" for m in self._funda_flags(year))
        return mods

    def _funda_flags(self, year: int) -> list[str]:
        """The vintage rules that change comp.funda's rows of ``year`` (served or not)."""
        flags = []
        if self.vintage == 1 and year == self._last_year:
            flags.append(f"late-filers-missing-{year}")
        if year == self._restated_year:
            flags.append(f"restated-{year}")
        return flags

    def _dependency(self, table: _Table) -> list[Any]:
        if not table.uses_universe:
            return [self.seed]
        return [self.seed, self.n_securities, self.profile]

    def _partition_infos(self, table: _Table) -> list[PartitionInfo]:
        head = ["sample", _GENERATOR_VERSION, table.name, *self._dependency(table)]
        if table.partition_column is None:
            marker = _digest([*head, "data-end", _iso(self._data_end)])
            rows = _frame_rows(self._frame(table, None))
            return [PartitionInfo(year=None, row_count=rows, marker=f"sample:{marker}")]
        infos = []
        for year in self.years:
            rows = self._row_count(table, year)
            if rows:
                marker = _digest([*head, year, self._mods(table, year)])
                infos.append(PartitionInfo(year=year, row_count=rows, marker=f"sample:{marker}"))
        return infos

    def _row_count(self, table: _Table, year: int) -> int:
        months = self._months(year)
        if table.name in ("crsp.dsf", "crsp.dsf_v2", "crsp.msf", "crsp.msf_v2"):
            key = ("count", year, months)
            counts = self._cached(key)
            if counts is None:
                counts = self._remember(key, _crsp_counts(self._universe(), year, months))
            daily, monthly = counts
            return int(daily if table.name in ("crsp.dsf", "crsp.dsf_v2") else monthly)
        if table.name == "ff.factors_daily":
            days = _trading_days(year)
            return int(((days >= _FF_START) & (_month_of(days) < months)).sum())
        if table.name == "ff.factors_monthly":
            first_month = 6 if year == _MIN_YEAR else 0
            return months - first_month
        return _frame_rows(self._frame(table, year))

    def _cached(self, key: tuple[Any, ...]) -> Any:
        with self._lock:
            value = self._cache.get(key)
            if value is not None:
                self._cache.move_to_end(key)
            return value

    def _remember(self, key: tuple[Any, ...], value: _T) -> _T:
        with self._lock:
            self._cache[key] = value
            self._cache.move_to_end(key)
            while len(self._cache) > _CACHE_ENTRIES:
                self._cache.popitem(last=False)
        return value

    def _frame(self, table: _Table, year: int | None) -> _Frame:
        """Return the rows of one partition (cached unless the table is crsp.dsf)."""
        if year is None:
            key: tuple[Any, ...] = (table.name, self._data_end)
            frame: _Frame | None = self._cached(key)
            if frame is None:
                frame = self._remember(key, _UNPARTITIONED[table.name](self._universe(), key[1]))
            return frame
        months = self._months(year)
        restate = year == self._restated_year
        if table.name in ("crsp.dsf", "crsp.dsf_v2"):
            daily, _ = _crsp_year(self._universe(), self.seed, year, restate=restate)
            if table.name == "crsp.dsf":
                return _dsf_frame(self._universe(), daily, daily.mon < months)
            return _dsf_v2_frame(self._universe(), daily, daily.mon < months, year)
        key = (table.name, year, months, restate, year == self._last_year)
        if table.name == "comp.fundq":
            key = (*key, *self._funda_flags(year), *self._funda_flags(year + 1))
        cached: _Frame | None = self._cached(key)
        if cached is not None:
            return cached
        if table.name in ("crsp.msf", "crsp.msf_v2", "crsp.msi"):
            monthly = self._monthly(year, restate)
            cut = _take_monthly(monthly, monthly.mon < months)
            if table.name == "crsp.msf":
                frame = _msf_frame(self._universe(), cut)
            elif table.name == "crsp.msi":
                frame = _msi_frame(self.seed, cut, year)
            else:
                frame = _msf_v2_frame(self._universe(), cut, year)
        elif table.name == "crsp.dsi":
            daily, _ = _crsp_year(self._universe(), self.seed, year, restate=restate)
            frame = _dsi_frame(self.seed, daily, daily.mon < months, year)
        elif table.name == "comp.fundq":
            annual = [(y, self._funda(y)) for y in (year, year + 1) if y <= _MAX_YEAR]
            frame = _fundq_frame(self._universe(), self.seed, year, annual)
        elif table.name.startswith("ff."):
            ff = _ff_restated(self.seed, year) if restate else _ff_year(self.seed, year)
            null_from = months - 2 if year == self._last_year else None
            daily_f, monthly_f = _ff_frames(ff, year, months, null_from)
            frame = daily_f if table.name == "ff.factors_daily" else monthly_f
        else:  # comp.funda
            frame = self._funda(year)
        return self._remember(key, frame)

    def _funda(self, year: int) -> _Frame:
        """comp.funda's rows of ``year`` under this vintage's rules (also for a year not served)."""
        drop_late = self.vintage == 1 and year == self._last_year
        restate = year == self._restated_year
        key = ("funda", year, drop_late, restate)
        frame: _Frame | None = self._cached(key)
        if frame is None:
            frame = self._remember(
                key,
                _funda_frame(
                    self._universe(), self.seed, year, drop_late=drop_late, restate=restate
                ),
            )
        return frame

    def _monthly(self, year: int, restate: bool) -> _Monthly:
        key = ("monthly", year, restate)
        monthly: _Monthly | None = self._cached(key)
        if monthly is None:
            _, monthly = _crsp_year(self._universe(), self.seed, year, restate=restate)
            self._remember(key, monthly)
        return monthly


def _take_monthly(m: _Monthly, keep: BoolA) -> _Monthly:
    return _Monthly(**{f.name: getattr(m, f.name)[keep] for f in attrs.fields(_Monthly)})
