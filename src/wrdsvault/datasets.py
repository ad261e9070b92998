"""Dataset names and specs: what a WRDS table is called, how it is partitioned, what its key is.

A dataset is named ``library.table`` exactly as WRDS names it (``crsp.dsf``). Names are validated
against a strict pattern before they are used anywhere: they become DuckDB view names and folder
names under ``data/``, so nothing else may get through.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import TYPE_CHECKING, Final

import attrs

from wrdsvault.errors import InvalidNameError, SyncError, UnknownDatasetError

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = [
    "BUILTIN_SPECS",
    "DATASET_NAME_RE",
    "RESERVED_LIBRARIES",
    "DatasetSpec",
    "builtin_spec",
    "reserved_library",
    "validate_dataset",
    "validate_new_dataset",
]

#: The only accepted shape of a dataset name (lower case, as WRDS names its schemas and tables).
DATASET_NAME_RE: Final = re.compile(r"^[a-z][a-z0-9_]{0,62}\.[a-z][a-z0-9_]{0,62}$")
_COLUMN_RE: Final = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")

#: Library names a query could not reach: each library becomes a DuckDB schema of the query
#: connection's ``memory`` catalog, and these are names DuckDB already gives its own catalogs
#: (``memory``, ``system``, ``temp``: ``temp.x`` would be ambiguous) and schemas (``main``,
#: ``information_schema``, ``pg_catalog``: creating them fails). A snapshot holding one could not
#: build its views, so a sync refuses them (tests/test_drop.py checks the list against DuckDB).
RESERVED_LIBRARIES: Final = frozenset(
    {"main", "memory", "system", "temp", "information_schema", "pg_catalog"}
)


def validate_dataset(name: object) -> str:
    """Return ``name`` if it is a valid ``library.table`` name, else raise `InvalidNameError`.

    Raises:
        TypeError: ``name`` is not a string.
        InvalidNameError: it does not match ``^[a-z][a-z0-9_]*\\.[a-z][a-z0-9_]*$``.
    """
    if not isinstance(name, str):
        msg = f"a dataset name must be a str, not {type(name).__name__}"
        raise TypeError(msg)
    # fullmatch, not match: "$" would accept a trailing newline.
    if DATASET_NAME_RE.fullmatch(name) is None:
        raise InvalidNameError(
            kind="dataset",
            value=name,
            rule="expected 'library.table' in lower case letters, digits and '_' "
            "(for example 'crsp.msf'), at most 63 characters each",
        )
    return name


def reserved_library(name: str) -> bool:
    """Whether the library of the (well-formed) dataset ``name`` is one of `RESERVED_LIBRARIES`."""
    return name.split(".", 1)[0] in RESERVED_LIBRARIES


def validate_new_dataset(name: object) -> str:
    """`validate_dataset`, and the library must not be a name DuckDB reserves.

    Applied to what a sync would write (`DatasetSpec`); reading stays with `validate_dataset`, so
    that a vault written before this check can still be opened and the dataset dropped.

    Raises:
        TypeError: ``name`` is not a string.
        InvalidNameError: a malformed name, or a library in `RESERVED_LIBRARIES`.
    """
    name = validate_dataset(name)
    if reserved_library(name):
        raise InvalidNameError(
            kind="dataset",
            value=name,
            rule=f"the library {name.split('.', 1)[0]!r} is a name DuckDB gives its own catalogs "
            f"and schemas ({', '.join(sorted(RESERVED_LIBRARIES))}), so its tables could not be "
            "queried; mirror the table under another library name",
        )
    return name


def _validate_column(_inst: object, _attr: object, value: str | None) -> None:
    if value is not None and _COLUMN_RE.fullmatch(value) is None:
        raise InvalidNameError(kind="column", value=value, rule="lower case letters, digits, '_'")


def column_tuple(columns: Iterable[str]) -> tuple[str, ...]:
    """Column names as a tuple (the attrs converter of key fields; typed, unlike bare ``tuple``).

    Raises:
        TypeError: ``columns`` is a single string (it would become one column per character).
    """
    if isinstance(columns, str):
        msg = (
            f"expected a sequence of column names, not the string {columns!r}; write ({columns!r},)"
        )
        raise TypeError(msg)
    return tuple(columns)


@attrs.frozen
class DatasetSpec:
    """How one WRDS table is mirrored.

    Attributes:
        name: ``library.table``; the library must not be one of `RESERVED_LIBRARIES`.
        partition_column: the date column whose calendar year picks the partition; ``None`` for
            tables stored as one partition (dimension tables such as ``crsp.msenames``).
        primary_key: the logical key, a sequence of column names (WRDS declares none in
            PostgreSQL; these are the documented ones). A bare string is a TypeError.
        title: a short human description.
        frequency: ``"daily"``, ``"monthly"``, ``"annual"``, ``"quarterly"`` or ``None``.
    """

    name: str = attrs.field(converter=validate_new_dataset)
    partition_column: str | None = attrs.field(default=None, validator=_validate_column)
    primary_key: tuple[str, ...] = attrs.field(default=(), converter=column_tuple)
    title: str = ""
    frequency: str | None = None

    @property
    def library(self) -> str:
        """The WRDS library (PostgreSQL schema), e.g. ``crsp``."""
        return self.name.split(".", 1)[0]

    @property
    def table(self) -> str:
        """The table name within its library, e.g. ``msf``."""
        return self.name.split(".", 1)[1]

    @property
    def partitioned(self) -> bool:
        """Whether rows are split into one file per calendar year."""
        return self.partition_column is not None


def _spec(
    name: str, col: str | None, key: tuple[str, ...], title: str, freq: str | None = None
) -> DatasetSpec:
    return DatasetSpec(
        name=name, partition_column=col, primary_key=key, title=title, frequency=freq
    )


#: Built-in specs for the WRDS tables published recipes read (docs/sources.md lists them).
BUILTIN_SPECS: Final[dict[str, DatasetSpec]] = {
    s.name: s
    for s in (
        _spec(
            "crsp.msf",
            "date",
            ("permno", "date"),
            "CRSP Monthly Stock File (legacy SIZ)",
            "monthly",
        ),
        _spec(
            "crsp.dsf", "date", ("permno", "date"), "CRSP Daily Stock File (legacy SIZ)", "daily"
        ),
        _spec(
            "crsp.msf_v2",
            "mthcaldt",
            ("permno", "mthcaldt"),
            "CRSP Monthly Stock File (CIZ)",
            "monthly",
        ),
        _spec(
            "crsp.dsf_v2",
            "dlycaldt",
            ("permno", "dlycaldt"),
            "CRSP Daily Stock File (CIZ)",
            "daily",
        ),
        _spec("crsp.msi", "date", ("date",), "CRSP Monthly Stock Market Indexes", "monthly"),
        _spec("crsp.dsi", "date", ("date",), "CRSP Daily Stock Market Indexes", "daily"),
        _spec("crsp.msenames", None, ("permno", "namedt"), "CRSP monthly name history"),
        _spec("crsp.dsenames", None, ("permno", "namedt"), "CRSP daily name history"),
        _spec("crsp.msedelist", None, ("permno",), "CRSP monthly delisting events"),
        _spec("crsp.dsedelist", None, ("permno",), "CRSP daily delisting events"),
        _spec(
            "crsp.stocknames",
            None,
            ("permno", "namedt"),
            "CRSP stock names: identifiers and codes per name interval",
        ),
        _spec("crsp.stkdelists", None, ("permno",), "CRSP CIZ delistings (delisted securities)"),
        _spec(
            "crsp.stksecurityinfohist",
            None,
            ("permno", "secinfostartdt"),
            "CRSP CIZ security information history",
        ),
        _spec(
            "crsp.ccmxpf_lnkhist",
            None,
            ("gvkey", "linkdt", "linkprim", "liid"),
            "CRSP/Compustat Merged link history",
        ),
        _spec(
            "crsp.ccmxpf_linktable",
            None,
            ("gvkey", "linkdt", "linkprim", "liid"),
            "CRSP/Compustat Merged link table (link history with usedflag)",
        ),
        _spec(
            "comp.funda",
            "datadate",
            ("gvkey", "datadate", "indfmt", "datafmt", "popsrc", "consol"),
            "Compustat Fundamentals Annual",
            "annual",
        ),
        _spec(
            "comp.fundq",
            "datadate",
            ("gvkey", "datadate", "indfmt", "datafmt", "popsrc", "consol"),
            "Compustat Fundamentals Quarterly",
            "quarterly",
        ),
        _spec("comp.company", None, ("gvkey",), "Compustat company header"),
        _spec(
            "ff.factors_monthly",
            "date",
            ("date",),
            "Fama-French 3 factors + momentum, monthly",
            "monthly",
        ),
        _spec(
            "ff.factors_daily",
            "date",
            ("date",),
            "Fama-French 3 factors + momentum, daily",
            "daily",
        ),
    )
}


def builtin_spec(name: str) -> DatasetSpec:
    """Return the built-in spec for ``name``.

    Raises:
        InvalidNameError: the name is malformed.
        UnknownDatasetError: no built-in spec; pass ``date_column=`` to sync any other table.
    """
    validate_dataset(name)
    try:
        return BUILTIN_SPECS[name]
    except KeyError:
        raise UnknownDatasetError(
            dataset=name,
            known=sorted(BUILTIN_SPECS),
            hint="Pass date_column='...' (or date_column=None for one partition) to sync any "
            "other table",
        ) from None


#: Date columns WRDS tables are conventionally keyed by, most specific first: CRSP ``date``,
#: Compustat ``datadate``, CRSP index ``caldt``, IBES ``statpers``/``anndats``, TFN ``fdate``,
#: ``rdate``, Fama-French ``dateff``.
DATE_COLUMN_NAMES: Final = (
    "date",
    "datadate",
    "caldt",
    "statpers",
    "anndats",
    "fdate",
    "rdate",
    "dateff",
)

#: ``sync(..., date_column=AUTO_DATE_COLUMN)``: pick the date column from the table's columns.
AUTO_DATE_COLUMN: Final = "auto"


def detect_date_column(name: str, schema: pa.Schema) -> str | None:
    """Choose the partition column of a table without a built-in spec.

    The first of `DATE_COLUMN_NAMES` that is a date or timestamp column; else the table's only
    date or timestamp column; ``None`` (one partition) when it has none.

    Raises:
        SyncError: several date columns and none of the conventional names; the message lists
            them so that ``date_column=`` can pick one.
    """
    import pyarrow as pa

    dates = [
        f.name
        for f in schema
        if (pa.types.is_date(f.type) or pa.types.is_timestamp(f.type))
        and _COLUMN_RE.fullmatch(f.name)
    ]
    for candidate in DATE_COLUMN_NAMES:
        if candidate in dates:
            return candidate
    if len(dates) <= 1:
        return dates[0] if dates else None
    raise SyncError(
        dataset=name,
        reason=f"date_column='auto' cannot choose: the table has several date columns "
        f"({', '.join(dates)}) and none is a conventional partition column; pass "
        "date_column='<one of them>' (or None for one partition)",
    )
