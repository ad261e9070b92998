"""Validation: rules that every staged partition must pass before it can be committed.

A rule is a small object with a ``name`` and a ``check(partition)`` method that returns a
`Finding` (or None when the partition passes). ``partition`` is a `PartitionData`: the staged file,
its dataset spec and year, the row count the source announced, the previous snapshot's file for
that year, and ``partition.query(sql)`` to run SQL over the staged rows, which appear as the table
``partition``. Checks return findings; the sync decides what a finding means (it quarantines the
staged files and fails with `ValidationFailedError`).

The easiest custom rule is a `SqlRule`, a query that returns offending rows::

    from wrdsvault.validation import SqlRule
    positive = SqlRule("positive_price", "select permno, date, prc from partition where prc = 0",
                       "a zero price is CRSP's 'missing' code and should be NULL")
    wh = Warehouse("data/wrds", source=src, rules={"crsp.msf": [positive]})

Built-in rules (`default_rules`): the row count equals the source's; key columns are not NULL; no
duplicate primary keys; every date lies in the partition's year; no missing month in monthly
data; no gap of more than ``max_gap_days`` calendar days in daily data; no sudden drop of rows
against the previous snapshot's file for the same year.

One rule looks at a dataset as a whole rather than at a staged partition: `RemovedYears`, on the
years the source stopped listing (a partition that is gone cannot be staged and checked).

**Proofs from the stream.** A sync learns facts about a partition's rows while they stream into
the staged file (`StreamFacts`): each column's NULL count (Arrow keeps it per batch), whether the
primary key arrived in strictly increasing order (the content digest checks it anyway, and the
WRDS COPY orders by the key), and the distinct dates of the partition column (a year has at most
366). When those facts already prove that a partition passes a built-in rule, the rule passes
without reading the file: no NULL key value proves `KeyNotNull`; keys in strictly increasing order
are pairwise different, which proves `UniqueKey`; the smallest and largest date in the year prove
`DatesInYear`; the sorted distinct dates prove `MaxDateGap` and `MonthlyContinuity`. When a proof
fails (or there are no facts: a partition resumed from a checkpoint, a rule over other columns),
the rule runs its SQL over the staged file exactly as before, so a failing partition gets the same
finding, with the same examples, either way. User rules (a `SqlRule`, your own class) always run.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Sequence
from itertools import pairwise
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import attrs

from wrdsvault.datasets import column_tuple

if TYPE_CHECKING:
    import duckdb
    import pandas as pd
    import pyarrow as pa

    from wrdsvault.datasets import DatasetSpec
    from wrdsvault.manifest import DatasetEntry, PartitionFile

__all__ = [
    "DatesInYear",
    "Finding",
    "KeyNotNull",
    "MaxDateGap",
    "MonthlyContinuity",
    "NoRowDrop",
    "PartitionData",
    "RemovedYears",
    "RowCountMatchesSource",
    "Rule",
    "SqlRule",
    "UniqueKey",
    "ValidationReport",
    "default_rules",
]

_EXAMPLES = 5


def _ident(name: str) -> str:
    """Quote a column name for DuckDB (names come from the source's schema)."""
    return '"' + name.replace('"', '""') + '"'


@attrs.frozen(kw_only=True)
class Finding:
    """A rule's verdict on one partition: what failed, how often, and example rows."""

    rule: str
    dataset: str
    year: int | None
    message: str
    count: int = 0
    examples: tuple[dict[str, Any], ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "dataset": self.dataset,
            "year": self.year,
            "message": self.message,
            "count": self.count,
            "examples": [{k: str(v) for k, v in e.items()} for e in self.examples],
        }


@attrs.frozen(kw_only=True)
class ValidationReport:
    """Every finding for one dataset in one sync; empty when all rules passed."""

    dataset: str
    findings: tuple[Finding, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.findings

    def to_json(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "ok": self.ok,
            "findings": [f.to_json() for f in self.findings],
        }

    def summary(self) -> str:
        lines = []
        for f in self.findings:
            year = "all" if f.year is None else f.year
            lines.append(f"{f.rule} failed for {f.dataset} {year}: {f.message}")
            lines.extend(f"    e.g. {e}" for e in f.examples[:3])
        return "\n".join(lines)


#: Distinct dates `StreamFacts` keeps at most (a calendar year has 366); past it, no date proofs.
_MAX_DAYS = 4_096


class StreamFacts:
    """What a sync learned about a partition's rows while they streamed into its staged file.

    `update` sees every batch written, in order. The built-in rules use the facts to pass a
    partition without reading its file when they prove it clean (see the module docstring); a
    fact that proves nothing leaves the rule to its SQL.

    Attributes:
        nulls: NULL values per column.
        ordered_key: key columns whose values arrived in strictly increasing order (so no two
            rows share them); empty when not proven. Set by the sync from the content digester,
            which checks that order as it hashes the batches.
        rows: rows seen.
    """

    def __init__(self, schema: pa.Schema, date_column: str | None) -> None:
        import pyarrow as pa

        self.nulls: dict[str, int] = dict.fromkeys(schema.names, 0)
        self.ordered_key: tuple[str, ...] = ()
        self.rows = 0
        self._date = date_column if date_column in self.nulls else None
        kind = schema.field(self._date).type if self._date is not None else pa.null()
        #: distinct non-NULL dates (days since 1970-01-01) of a date32 partition column
        self._days: set[int] | None = set() if pa.types.is_date32(kind) else None
        #: the smallest and largest year (UTC) of a timestamp partition column
        self._timestamps = pa.types.is_timestamp(kind)
        self._years: tuple[int, int] | None = None

    def update(self, batch: pa.RecordBatch) -> None:
        """Take in the next batch written (the staged file's schema)."""
        import pyarrow as pa
        import pyarrow.compute as pc

        for name, array in zip(batch.schema.names, batch.columns, strict=True):
            self.nulls[name] += array.null_count
        self.rows += batch.num_rows
        if self._date is None or batch.num_rows == 0:
            return
        column: Any = batch.column(self._date)
        if self._days is not None:
            # A year of daily data has ~250 distinct dates per batch: cheap to keep them all.
            from wrdsvault._arrays import values

            days = pc.unique(column.drop_null()).cast(pa.int32())
            self._days.update(values(days, "<i4").tolist())
            if len(self._days) > _MAX_DAYS:
                self._days = None
        elif self._timestamps and column.null_count < len(column):
            if column.type.tz is not None:  # the instant's UTC wall time, as year() sees it
                column = column.cast(pa.timestamp(column.type.unit))
            low, high = (v.as_py() for v in pc.min_max(pc.year(column)).values())
            if self._years is not None:
                low, high = min(low, self._years[0]), max(high, self._years[1])
            self._years = (low, high)

    def days(self, column: str | None) -> list[int] | None:
        """The sorted distinct dates of ``column`` (days since 1970-01-01), if tracked."""
        if column is None or column != self._date or self._days is None:
            return None
        return sorted(self._days)

    def no_nulls(self, columns: Sequence[str]) -> bool:
        """Whether none of ``columns`` holds a NULL (False for a column it does not know)."""
        return all(self.nulls.get(c) == 0 for c in columns)

    def unique(self, columns: Sequence[str]) -> bool:
        """Whether no two rows share their values of ``columns``: true when the rows arrived in
        strictly increasing order of some of them (rows that differ there differ in all)."""
        return bool(self.ordered_key) and set(self.ordered_key) <= set(columns)

    def in_year(self, column: str, year: int) -> bool:
        """Whether every value of the partition column ``column`` is non-NULL and in ``year``.

        A timestamp with a zone counts in UTC, as the validation session's ``year()`` does.
        """
        if column != self._date or self.nulls[column]:
            return False
        if self.rows == 0:
            return True
        if self._days:
            import numpy as np

            span = np.array([min(self._days), max(self._days)], dtype="datetime64[D]")
            first, last = (int(y) + 1970 for y in span.astype("datetime64[Y]").astype(np.int64))
            return first == year == last
        return self._years is not None and self._years[0] == year == self._years[1]


class PartitionData:
    """A staged partition as rules see it. ``query(sql)`` runs over the table ``partition``.

    ``facts`` holds what the sync learned while the rows streamed in (`StreamFacts`), or None;
    the built-in rules pass on it without reading the file when it proves them.
    """

    def __init__(
        self,
        *,
        spec: DatasetSpec,
        year: int | None,
        path: Path,
        row_count: int,
        source_row_count: int | None,
        previous: PartitionFile | None,
        columns: Sequence[str],
        facts: StreamFacts | None = None,
    ) -> None:
        self.spec = spec
        self.year = year
        self.path = path
        self.row_count = row_count
        self.source_row_count = source_row_count
        self.previous = previous
        self.columns = tuple(columns)
        self.facts = facts
        #: SQL statements run over the staged file so far (the proofs above run none).
        self.queries = 0
        self._con: duckdb.DuckDBPyConnection | None = None
        self._lock = threading.Lock()

    def _execute(self, sql: str, params: Sequence[Any] | None) -> duckdb.DuckDBPyConnection:
        with self._lock:
            if self._con is None:
                # One validation database per thread; partitions of a thread are checked one
                # after another, so the view is simply replaced (relation API: no SQL strings).
                self._con = _session().cursor()
                self._con.read_parquet(str(self.path)).create_view("partition", replace=True)
            self.queries += 1
            return self._con.execute(sql, params or [])

    def query(self, sql: str, params: Sequence[Any] | None = None) -> pd.DataFrame:
        """Run ``sql`` (trusted code: the rule's, not a user's) over the staged rows."""
        return self._execute(sql, params).df()

    def count(self, sql: str, params: Sequence[Any] | None = None) -> int:
        """The number of rows ``sql`` returns over the staged rows (no DataFrame is built)."""
        row = self._execute(f"select count(*) from ({sql})", params).fetchone()
        return int(row[0]) if row is not None else 0

    def rows_if_any(self, sql: str, params: Sequence[Any] | None = None) -> pd.DataFrame | None:
        """``query(sql)`` if it returns rows, else None (checked first without pandas)."""
        if self.count(sql, params) == 0:
            return None
        return self.query(sql, params)

    def finding(
        self, rule: str, message: str, *, count: int = 0, examples: pd.DataFrame | None = None
    ) -> Finding:
        """Build a finding for this partition (examples: up to five offending rows)."""
        rows: tuple[dict[str, Any], ...] = ()
        if examples is not None and len(examples):
            records = examples.head(_EXAMPLES).to_dict("records")
            rows = tuple({str(k): v for k, v in r.items()} for r in records)
        return Finding(
            rule=rule,
            dataset=self.spec.name,
            year=self.year,
            message=message,
            count=count,
            examples=rows,
        )

    def close(self) -> None:
        with self._lock:
            if self._con is not None:
                self._con.execute("DROP VIEW IF EXISTS partition")
                self._con.close()  # closes the cursor, not the thread's database
                self._con = None


def _date_column(partition: PartitionData) -> str | None:
    """The quoted partition column, or None if the dataset has none (rule does not apply)."""
    col = partition.spec.partition_column
    return _ident(col) if col is not None and col in partition.columns else None


def _rows_finding(
    partition: PartitionData, rule: str, rows: pd.DataFrame, message: str
) -> Finding | None:
    """A finding with ``rows`` as count and examples, or None when there are none."""
    if len(rows) == 0:
        return None
    return partition.finding(rule, message, count=len(rows), examples=rows)


_local = threading.local()


def _session() -> duckdb.DuckDBPyConnection:
    """One in-memory DuckDB per thread for validation (connecting costs ~11 ms; a cursor ~0)."""
    con = getattr(_local, "con", None)
    if con is None:
        # DuckDB is imported when rows are first checked: an unchanged sync never loads it.
        from wrdsvault._query import connect

        con = _local.con = connect()  # TimeZone=UTC: a rule's year() must not depend on TZ
    return con


@runtime_checkable
class Rule(Protocol):
    """A validation rule. ``check`` returns a Finding when the partition fails, else None.

    ``name`` is read-only so that frozen rules (the built-in ones, `SqlRule`, a user's
    ``attrs.frozen`` or ``NamedTuple`` rule) satisfy the protocol; a plain attribute works too.
    """

    @property
    def name(self) -> str: ...

    def check(self, partition: PartitionData) -> Finding | None: ...


@attrs.frozen
class SqlRule:
    """Fail when ``sql`` (over the table ``partition``) returns any row."""

    name: str
    sql: str
    message: str = "rows violate the rule"

    def check(self, partition: PartitionData) -> Finding | None:
        return _rows_finding(partition, self.name, partition.query(self.sql), self.message)


@attrs.frozen
class RowCountMatchesSource:
    """The staged rows equal the count the source announced for the partition."""

    name: str = "row_count_matches_source"

    def check(self, partition: PartitionData) -> Finding | None:
        expected = partition.source_row_count
        if expected is None or expected == partition.row_count:
            return None
        return partition.finding(
            self.name,
            f"the source announced {expected:,} rows but sent {partition.row_count:,}",
            count=abs(expected - partition.row_count),
        )


@attrs.frozen
class KeyNotNull:
    """No NULL in any primary-key column."""

    columns: tuple[str, ...] = attrs.field(converter=column_tuple)
    name: str = "key_not_null"

    def check(self, partition: PartitionData) -> Finding | None:
        cols = [c for c in self.columns if c in partition.columns]
        if not cols:
            return None
        if partition.facts is not None and partition.facts.no_nulls(cols):
            return None  # no NULL streamed into these columns
        cond = " or ".join(f"{_ident(c)} is null" for c in cols)
        n = partition.count(f"select 1 from partition where {cond}")
        if n == 0:
            return None
        ex = partition.query(f"select * from partition where {cond} limit {_EXAMPLES}")
        return partition.finding(
            self.name,
            f"{n:,} rows have a NULL in key column(s) {', '.join(cols)}",
            count=n,
            examples=ex,
        )


@attrs.frozen
class UniqueKey:
    """No two rows share a primary key."""

    columns: tuple[str, ...] = attrs.field(converter=column_tuple)
    name: str = "unique_key"

    def check(self, partition: PartitionData) -> Finding | None:
        cols = [c for c in self.columns if c in partition.columns]
        if len(cols) != len(self.columns) or not cols:
            return None
        if partition.facts is not None and partition.facts.unique(cols):
            return None  # the rows arrived in strictly increasing key order
        keys = ", ".join(_ident(c) for c in cols)
        dup = partition.rows_if_any(
            f"select {keys}, count(*) as copies from partition group by all having count(*) > 1 "
            f"order by copies desc"
        )
        if dup is None:
            return None
        return _rows_finding(
            partition, self.name, dup, f"{len(dup):,} key values ({', '.join(cols)}) repeat"
        )


@attrs.frozen
class DatesInYear:
    """Every partition-column value lies in the partition's calendar year (and is not NULL)."""

    name: str = "dates_in_year"

    def check(self, partition: PartitionData) -> Finding | None:
        c = _date_column(partition)
        if c is None or partition.year is None:
            return None
        facts = partition.facts
        column = partition.spec.partition_column
        if facts is not None and column is not None and facts.in_year(column, partition.year):
            return None  # no NULL, and the first and last value lie in the year
        cond = f"{c} is null or year({c}) <> {int(partition.year)}"
        n = partition.count(f"select 1 from partition where {cond}")
        if n == 0:
            return None
        bad = partition.query(f"select * from partition where {cond} limit {_EXAMPLES}")
        return partition.finding(
            self.name,
            f"{n:,} rows have {c} NULL or outside {partition.year}",
            count=n,
            examples=bad,
        )


@attrs.frozen
class MonthlyContinuity:
    """Monthly data has every month between its first and last month in the partition."""

    name: str = "monthly_continuity"

    def check(self, partition: PartitionData) -> Finding | None:
        c = _date_column(partition)
        if c is None:
            return None
        facts = partition.facts
        days = facts.days(partition.spec.partition_column) if facts is not None else None
        if days is not None:
            import numpy as np

            months = np.unique(np.array(days, dtype="datetime64[D]").astype("datetime64[M]"))
            if not (np.diff(months.astype(np.int64)) > 1).any():
                return None  # the distinct months streamed in have no hole
        gaps = partition.rows_if_any(
            f"with m as (select distinct date_trunc('month', {c}) as month from partition "
            f"where {c} is not null), "
            f"s as (select month, lead(month) over (order by month) as next from m) "
            f"select month, next from s where next > month + interval 1 month order by month"
        )
        if gaps is None:
            return None
        return _rows_finding(
            partition, self.name, gaps, f"{len(gaps)} gap(s) between months of {c}"
        )


@attrs.frozen
class MaxDateGap:
    """Daily data has no gap longer than ``max_gap_days`` calendar days between dates."""

    max_gap_days: int = 7
    name: str = "max_date_gap"

    def check(self, partition: PartitionData) -> Finding | None:
        c = _date_column(partition)
        if c is None:
            return None
        facts = partition.facts
        days = facts.days(partition.spec.partition_column) if facts is not None else None
        if days is not None and all(b - a <= self.max_gap_days for a, b in pairwise(days)):
            return None  # the distinct dates streamed in have no longer gap
        gaps = partition.rows_if_any(
            f"with d as (select distinct {c} as day from partition where {c} is not null), "
            f"s as (select day, lead(day) over (order by day) as next from d) "
            f"select day, next, datediff('day', day, next) as days from s "
            f"where datediff('day', day, next) > $1 order by day",
            [self.max_gap_days],
        )
        if gaps is None:
            return None
        return _rows_finding(
            partition, self.name, gaps, f"{len(gaps)} gap(s) of more than {self.max_gap_days} days"
        )


@attrs.frozen
class NoRowDrop:
    """A year does not lose more than ``max_drop`` of its rows against the previous snapshot."""

    max_drop: float = 0.5
    name: str = "no_row_drop"

    def check(self, partition: PartitionData) -> Finding | None:
        prev = partition.previous
        if prev is None or prev.row_count == 0:
            return None
        drop = 1 - partition.row_count / prev.row_count
        if drop <= self.max_drop:
            return None
        return partition.finding(
            self.name,
            f"rows fell from {prev.row_count:,} to {partition.row_count:,} "
            f"({drop:.0%} > {self.max_drop:.0%}) against the previous snapshot",
            count=prev.row_count - partition.row_count,
        )


@attrs.frozen
class RemovedYears:
    """Years that vanish from the source's listing take at most ``max_fraction`` of the rows.

    A year the previous snapshot holds and the source no longer lists leaves the new snapshot
    (its file stays for older snapshots). On WRDS that is rare and a listing cut short (a failed
    or partial query, a permissions change) is the likelier cause, so by default (0) no year
    with rows may go. The sync runs it when ``Warehouse.sync(allow_removal=False)`` (the
    default), with the vault's ``max_removed_fraction`` setting.

    A dataset whose partition column changed is re-cut into other years, not losing them: then
    the whole dataset's row count may fall by at most ``max_fraction``.
    """

    max_fraction: float = 0.0
    name: str = "removed_years"

    def check(
        self,
        previous: DatasetEntry,
        partitions: Sequence[PartitionFile],
        partition_column: str | None,
    ) -> Finding | None:
        """A finding when the new ``partitions`` lose too many of ``previous``'s rows."""
        kept = {p.year for p in partitions}
        removed = [p for p in previous.partitions if p.year not in kept]
        total = previous.row_count
        if not removed or total == 0:
            return None
        if partition_column != previous.partition_column:
            lost = max(0, total - sum(p.row_count for p in partitions))
        else:
            lost = sum(p.row_count for p in removed)
        if lost <= self.max_fraction * total:
            return None
        years = ", ".join("all" if p.year is None else str(p.year) for p in removed)
        return Finding(
            rule=self.name,
            dataset=previous.name,
            year=None,
            message=f"the source no longer lists {len(removed)} year(s) of the previous snapshot "
            f"({years}); {lost:,} of its {total:,} rows would go ({lost / total:.0%}, at most "
            f"{self.max_fraction:.0%} may). If the source really dropped them, sync with "
            "allow_removal=True (CLI: --allow-removal) or raise the max_removed_fraction setting",
            count=lost,
            examples=tuple({"year": p.year, "rows": p.row_count} for p in removed[:_EXAMPLES]),
        )


def default_rules(spec: DatasetSpec) -> list[Rule]:
    """The built-in rules for a dataset, chosen from its spec."""
    rules: list[Rule] = [RowCountMatchesSource(), NoRowDrop()]
    if spec.primary_key:
        rules += [KeyNotNull(spec.primary_key), UniqueKey(spec.primary_key)]
    if spec.partitioned:
        rules.append(DatesInYear())
        if spec.frequency == "monthly":
            rules.append(MonthlyContinuity())
        elif spec.frequency == "daily":
            rules.append(MaxDateGap())
    return rules


def _rule_errors() -> tuple[type[BaseException], ...]:
    """The errors that make a rule itself a finding. DuckDB's only once a rule has loaded it:
    rules the stream's facts prove never import it (evaluated when a rule raises)."""
    duckdb = sys.modules.get("duckdb")
    errors: tuple[type[BaseException], ...] = (ValueError, KeyError, TypeError)
    return errors if duckdb is None else (duckdb.Error, *errors)


def run_rules(rules: Sequence[Rule], partition: PartitionData) -> list[Finding]:
    """Run every rule; a rule that crashes is itself a finding (never a silent pass)."""
    findings = []
    try:
        for rule in rules:
            try:
                found = rule.check(partition)
            except _rule_errors() as exc:
                found = partition.finding(
                    getattr(rule, "name", type(rule).__name__),
                    f"the rule itself failed: {type(exc).__name__}: {exc}",
                )
            if found is not None:
                findings.append(found)
    finally:
        partition.close()
    return findings
