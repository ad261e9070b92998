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
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import attrs

from wrdsvault.datasets import column_tuple

if TYPE_CHECKING:
    import duckdb
    import pandas as pd

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


class PartitionData:
    """A staged partition as rules see it. ``query(sql)`` runs over the table ``partition``."""

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
    ) -> None:
        self.spec = spec
        self.year = year
        self.path = path
        self.row_count = row_count
        self.source_row_count = source_row_count
        self.previous = previous
        self.columns = tuple(columns)
        self._con: duckdb.DuckDBPyConnection | None = None
        self._lock = threading.Lock()

    def query(self, sql: str, params: Sequence[Any] | None = None) -> pd.DataFrame:
        """Run ``sql`` (trusted code: the rule's, not a user's) over the staged rows."""
        with self._lock:
            if self._con is None:
                # One validation database per thread; partitions of a thread are checked one
                # after another, so the view is simply replaced (relation API: no SQL strings).
                self._con = _session().cursor()
                self._con.read_parquet(str(self.path)).create_view("partition", replace=True)
            return self._con.execute(sql, params or []).df()

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
        cond = " or ".join(f"{_ident(c)} is null" for c in cols)
        n = int(partition.query(f"select count(*) as n from partition where {cond}")["n"][0])
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
        keys = ", ".join(_ident(c) for c in cols)
        dup = partition.query(
            f"select {keys}, count(*) as copies from partition group by all having count(*) > 1 "
            f"order by copies desc"
        )
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
        cond = f"{c} is null or year({c}) <> {int(partition.year)}"
        bad = partition.query(f"select * from partition where {cond} limit {_EXAMPLES}")
        if len(bad) == 0:
            return None
        n = int(partition.query(f"select count(*) as n from partition where {cond}")["n"][0])
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
        gaps = partition.query(
            f"with m as (select distinct date_trunc('month', {c}) as month from partition "
            f"where {c} is not null), "
            f"s as (select month, lead(month) over (order by month) as next from m) "
            f"select month, next from s where next > month + interval 1 month order by month"
        )
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
        gaps = partition.query(
            f"with d as (select distinct {c} as day from partition where {c} is not null), "
            f"s as (select day, lead(day) over (order by day) as next from d) "
            f"select day, next, datediff('day', day, next) as days from s "
            f"where datediff('day', day, next) > $1 order by day",
            [self.max_gap_days],
        )
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


def run_rules(rules: Sequence[Rule], partition: PartitionData) -> list[Finding]:
    """Run every rule; a rule that crashes is itself a finding (never a silent pass)."""
    import duckdb

    findings = []
    try:
        for rule in rules:
            try:
                found = rule.check(partition)
            except (duckdb.Error, ValueError, KeyError, TypeError) as exc:
                found = partition.finding(
                    getattr(rule, "name", type(rule).__name__),
                    f"the rule itself failed: {type(exc).__name__}: {exc}",
                )
            if found is not None:
                findings.append(found)
    finally:
        partition.close()
    return findings
