"""Revisions: what changed between two snapshots, row by row, keyed by each dataset's primary key.

`Warehouse.diff` compares two committed snapshots. Files are content-addressed, so a partition
(one calendar year) whose SHA-256 is the same in both snapshots holds the same rows: it is never
read. Only the years whose files differ are opened, in the same sandboxed DuckDB connection as a
query (`PinnedConnection`: views built by the relation API, ``allowed_paths`` = exactly those
files, external access off, configuration locked), and every statement is a checked SELECT.

Rows are matched by key (``IS NOT DISTINCT FROM``: a NULL key part matches a NULL). A key that
occurs more than once in either snapshot is reported as a duplicate and left out of the match, so
duplicates are never joined into a cross product. Values compare exactly: NULL to a value (and
back) is a change, NaN equals NaN, floats differ at the last bit unless ``tolerance=`` is given.
A retyped column compares the old value cast to the new type. docs/revisions.md shows the
researcher's workflow.
"""

from __future__ import annotations

import contextlib
import math
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Final, TypeVar

import attrs

from wrdsvault._query import LazyResult, Params, PinnedConnection, check_timeout, fetch_rows
from wrdsvault.errors import InvalidValueError, UnknownDatasetError
from wrdsvault.schema import SchemaDrift, arrow_schema
from wrdsvault.schema import diff as schema_diff

if TYPE_CHECKING:
    import duckdb
    import pyarrow as pa

    from wrdsvault.manifest import DatasetEntry
    from wrdsvault.warehouse import Warehouse

__all__ = ["ColumnDiff", "DatasetDiff", "Revision"]

T = TypeVar("T")

_NUMERIC: Final = re.compile(
    r"^(TINYINT|SMALLINT|INTEGER|BIGINT|HUGEINT|UTINYINT|USMALLINT|UINTEGER|UBIGINT|UHUGEINT"
    r"|FLOAT|DOUBLE|DECIMAL\(\d+,\d+\))$"
)
_INEXACT: Final = re.compile(r"^(FLOAT|DOUBLE|DECIMAL\(\d+,\d+\))$")


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _lit(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


@attrs.frozen
class ColumnDiff:
    """One column's changes among the rows whose key is in both snapshots.

    Attributes:
        column: the column name.
        changed: rows whose value changed (NULL to a value and back counts; NaN equals NaN).
        max_abs_change: the largest finite ``|new - old|`` for a numeric column (None otherwise,
            or when no change has a finite size, e.g. only NULLs appeared).
    """

    column: str
    changed: int
    max_abs_change: float | None

    def to_json(self) -> dict[str, Any]:
        return {
            "column": self.column,
            "changed": self.changed,
            "max_abs_change": self.max_abs_change,
        }


@attrs.frozen(kw_only=True)
class _Plan:
    """What to read for one dataset: the views' names, files and types."""

    index: int
    key: tuple[str, ...]
    old_files: tuple[str, ...]
    new_files: tuple[str, ...]
    old_entry: DatasetEntry | None
    new_entry: DatasetEntry | None
    years: tuple[int | None, ...]

    @property
    def old_view(self) -> str:
        return f"d{self.index}.a"

    @property
    def new_view(self) -> str:
        return f"d{self.index}.b"

    def views(self) -> dict[str, list[str]]:
        return {self.old_view: list(self.old_files), self.new_view: list(self.new_files)}

    def schemas(self) -> dict[str, Any]:
        """Columns of a side without files (a dataset only the other snapshot holds)."""
        out = {}
        for view, files, entry, other in (
            (self.old_view, self.old_files, self.old_entry, self.new_entry),
            (self.new_view, self.new_files, self.new_entry, self.old_entry),
        ):
            source = entry if entry is not None else other
            if not files and source is not None:
                out[view] = arrow_schema(source.columns)
        return out


class DatasetDiff:
    """How one dataset changed between the two snapshots of a `Revision`.

    Attributes:
        dataset: ``library.table``.
        status: ``"unchanged"``, ``"changed"``, ``"added"`` (only the new snapshot holds it) or
            ``"removed"`` (only the old one does).
        key: the columns rows are matched by.
        added: rows whose key is only in the new snapshot.
        removed: rows whose key is only in the old snapshot.
        changed: rows whose key is in both and at least one value differs.
        columns: column -> `ColumnDiff`, for every compared column with at least one change.
        schema_changes: added, dropped and retyped columns (`wrdsvault.schema.diff`).
        duplicate_keys_old / duplicate_keys_new: keys occurring more than once in that snapshot
            (among the rows read); their rows are left out of the counts above.
        years_read: the partitions whose files differ, the only ones read.
        files_read: how many Parquet files the diff read.
    """

    def __init__(
        self,
        revision: Revision,
        plan: _Plan,
        *,
        status: str,
        counts: Mapping[str, int],
        columns: Mapping[str, ColumnDiff],
        compared: Sequence[tuple[str, str, str]],
        schema_changes: SchemaDrift,
    ) -> None:
        self._revision = revision
        self._plan = plan
        self._compared = list(compared)  # (column, old type, new type)
        self.dataset = _name(plan)
        self.status = status
        self.key = plan.key
        self.added = counts.get("added", 0)
        self.removed = counts.get("removed", 0)
        self.changed = counts.get("changed", 0)
        self.duplicate_keys_old = counts.get("dup_old", 0)
        self.duplicate_keys_new = counts.get("dup_new", 0)
        self.columns = dict(columns)
        self.schema_changes = schema_changes
        self.years_read = plan.years
        self.files_read = len(plan.old_files) + len(plan.new_files)

    def __repr__(self) -> str:
        return (
            f"DatasetDiff({self.dataset!r}, status={self.status!r}, added={self.added}, "
            f"removed={self.removed}, changed={self.changed})"
        )

    # -- lazy results ----------------------------------------------------------------------

    def changes(self, column: str | None = None, *, min_abs: float | None = None) -> LazyResult:
        """The changed values, one row per (key, column): key..., column, old, new.

        Ordered by key, then column position. Runs when asked (``.df()``, ``.arrow()``).

        Args:
            column: only this column; its old and new values keep their types. Without it,
                every compared column, with old and new as DuckDB's text form (VARCHAR).
            min_abs: keep only numeric changes with ``|new - old| >= min_abs``; a NULL that
                appears or disappears, and a NaN, always count as large enough. Non-numeric
                columns are left out.

        Raises:
            InvalidValueError: an unknown or non-compared ``column``; ``min_abs`` on a
                non-numeric column, or not a finite number >= 0.
        """
        chosen = self._compared
        if column is not None:
            chosen = [c for c in self._compared if c[0] == column]
            if not chosen:
                raise InvalidValueError(
                    name="column",
                    value=column,
                    rule=f"not a compared column of {self.dataset} (compared: "
                    f"{', '.join(c[0] for c in self._compared) or 'none'}; key columns and "
                    "columns only one snapshot has are not compared)",
                )
        if min_abs is not None:
            if isinstance(min_abs, bool) or not isinstance(min_abs, (int, float)):
                msg = f"min_abs must be a number, not {type(min_abs).__name__}"
                raise TypeError(msg)
            if not (math.isfinite(min_abs) and min_abs >= 0):
                raise InvalidValueError(name="min_abs", value=min_abs, rule="a finite number >= 0")
            numeric = [c for c in chosen if _NUMERIC.match(c[1]) and _NUMERIC.match(c[2])]
            if column is not None and not numeric:
                raise InvalidValueError(
                    name="min_abs",
                    value=min_abs,
                    rule=f"{column} is not numeric ({chosen[0][2]}); drop min_abs",
                )
            chosen = numeric
        return LazyResult(
            self._revision._runner(self._plan),
            self._changes_sql(chosen, column is not None, min_abs),
            None,
        )

    def added_keys(self) -> LazyResult:
        """The keys only the new snapshot has, in key order."""
        return self._side_rows("n", "o", keys_only=True)

    def removed_keys(self) -> LazyResult:
        """The keys only the old snapshot had, in key order."""
        return self._side_rows("o", "n", keys_only=True)

    def added_rows(self) -> LazyResult:
        """The rows only the new snapshot has (by key), as stored."""
        return self._side_rows("n", "o")

    def removed_rows(self) -> LazyResult:
        """The rows only the old snapshot had (by key), as stored."""
        return self._side_rows("o", "n")

    def duplicate_keys(self) -> LazyResult:
        """Keys occurring more than once in either snapshot: key..., old_count, new_count."""
        k = self.key
        keys = ", ".join(f"coalesce(ka.{_q(c)}, kb.{_q(c)}) AS {_q(c)}" for c in k)
        sql = (
            f"{self._key_counts()} SELECT {keys}, coalesce(ka.__n, 0) AS old_count,"
            f" coalesce(kb.__n, 0) AS new_count FROM ka FULL JOIN kb ON {_on('ka', 'kb', k)}"
            f" WHERE ka.__n > 1 OR kb.__n > 1 ORDER BY {_positions(len(k))}"
        )
        return LazyResult(self._revision._runner(self._plan), sql, None)

    # -- SQL -------------------------------------------------------------------------------

    def _key_counts(self) -> str:
        k = ", ".join(_q(c) for c in self.key)
        a, b = _view(self._plan.old_view), _view(self._plan.new_view)
        return (
            f"WITH ka AS (SELECT {k}, count(*) AS __n FROM {a} GROUP BY ALL),"
            f" kb AS (SELECT {k}, count(*) AS __n FROM {b} GROUP BY ALL)"
        )

    def _sides(self) -> str:
        """CTEs ``o`` and ``n``: each side's rows without the duplicated keys.

        Without duplicates (known once the diff is built) the sides are the views themselves:
        no key count and no anti join, about half the work.
        """
        k = self.key
        cols = ", ".join(_q(c) for c in k)
        a, b = _view(self._plan.old_view), _view(self._plan.new_view)
        if not (self.duplicate_keys_old or self.duplicate_keys_new):
            return f"WITH o AS (SELECT * FROM {a}), n AS (SELECT * FROM {b})"
        return (
            f"{self._key_counts()},"
            f" dup AS (SELECT {cols} FROM ka WHERE __n > 1 UNION ALL"
            f" SELECT {cols} FROM kb WHERE __n > 1),"
            f" o AS (SELECT x.* FROM {a} x ANTI JOIN dup ON {_on('x', 'dup', k)}),"
            f" n AS (SELECT x.* FROM {b} x ANTI JOIN dup ON {_on('x', 'dup', k)})"
        )

    def _side_rows(self, side: str, other: str, *, keys_only: bool = False) -> LazyResult:
        k = self.key
        keys = ", ".join(_q(c) for c in k)
        shown = ", ".join(f"{side}.{_q(c)}" for c in k) if keys_only else f"{side}.*"
        sql = (
            f"{self._sides()} SELECT {shown} FROM {side} ANTI JOIN {other}"
            f" ON {_on(side, other, k)} ORDER BY {keys}"
        )
        return LazyResult(self._revision._runner(self._plan), sql, None)

    def _joined(self, compared: Sequence[tuple[str, str, str]]) -> str:
        """CTE ``j``: matched rows, keys, each column's old/new value and changed flag."""
        k = self.key
        parts = [f"coalesce(o.{_q(c)}, n.{_q(c)}) AS {_q(c)}" for c in k]
        parts += ["o.__in AS __in_o", "n.__in AS __in_n"]
        for i, (name, old_type, new_type) in enumerate(compared):
            parts.append(f"o.{_q(name)} AS __o{i}, n.{_q(name)} AS __n{i}")
            changed = _changed(
                f"o.{_q(name)}", f"n.{_q(name)}", old_type, new_type, self._revision.tolerance
            )
            parts.append(f"({changed}) AS __d{i}")
        return (
            f"{self._sides()}, j AS (SELECT {', '.join(parts)} FROM"
            f" (SELECT true AS __in, * FROM o) o FULL JOIN (SELECT true AS __in, * FROM n) n"
            f" ON {_on('o', 'n', k)})"
        )

    def _changes_sql(
        self, chosen: Sequence[tuple[str, str, str]], native: bool, min_abs: float | None
    ) -> str:
        k = self.key
        keys = ", ".join(_q(c) for c in k)
        if not chosen:
            nulls = ", ".join(f"{_q(c)}" for c in k)
            return (
                f"SELECT {nulls}, NULL::VARCHAR AS column, NULL::VARCHAR AS old,"
                f" NULL::VARCHAR AS new FROM {_view(self._plan.old_view)} WHERE false"
            )
        big = [
            (
                ""
                if min_abs is None
                else f" AND (__o{i} IS NULL OR __n{i} IS NULL OR abs(__n{i}::DOUBLE - "
                f"__o{i}::DOUBLE) >= {float(min_abs)!r})"
            )
            for i in range(len(chosen))
        ]
        if native:
            return (
                f"{self._joined(chosen)} SELECT {keys}, {_lit(chosen[0][0])} AS column,"
                f" __o0 AS old, __n0 AS new FROM j WHERE __in_o AND __in_n AND __d0{big[0]}"
                f" ORDER BY {keys}"
            )
        items = ", ".join(
            f"{{'i': {i}, 'column': {_lit(name)}, 'old': __o{i}::VARCHAR, 'new': __n{i}::VARCHAR,"
            f" 'd': __d{i}{big[i]}}}"
            for i, (name, _, _) in enumerate(chosen)
        )
        return (
            f"{self._joined(chosen)} SELECT {keys}, ch.column AS column, ch.old AS old,"
            f" ch.new AS new FROM (SELECT {keys}, unnest(list_filter([{items}], lambda x: x.d))"
            f" AS ch FROM j WHERE __in_o AND __in_n) ORDER BY {keys}, ch.i"
        )

    def _summary_sql(self) -> str:
        aggs = [
            "count(*) FILTER (WHERE __in_n AND __in_o IS NULL) AS added",
            "count(*) FILTER (WHERE __in_o AND __in_n IS NULL) AS removed",
        ]
        flags = " OR ".join(f"__d{i}" for i in range(len(self._compared))) or "false"
        aggs.append(f"count(*) FILTER (WHERE __in_o AND __in_n AND ({flags})) AS changed")
        for i, (_, old_type, new_type) in enumerate(self._compared):
            aggs.append(f"count(*) FILTER (WHERE __in_o AND __in_n AND __d{i})")
            if _NUMERIC.match(old_type) and _NUMERIC.match(new_type):
                delta = f"abs(__n{i}::DOUBLE - __o{i}::DOUBLE)"
                where = f"__in_o AND __in_n AND __d{i} AND isfinite({delta})"
                aggs.append(f"max({delta}) FILTER (WHERE {where})")
            else:
                aggs.append("NULL::DOUBLE")
        return f"{self._joined(self._compared)} SELECT {', '.join(aggs)} FROM j"

    def _duplicates_sql(self) -> str:
        return (
            f"{self._key_counts()} SELECT (SELECT count(*) FROM ka WHERE __n > 1),"
            " (SELECT count(*) FROM kb WHERE __n > 1)"
        )

    # -- output ----------------------------------------------------------------------------

    def summary(self) -> str:
        """One line (plus one per changed column and schema change) a person reads."""
        head = f"{self.dataset}: {self.status}"
        if self.status == "unchanged":
            return head
        head += (
            f": {self.added:,} added, {self.removed:,} removed, {self.changed:,} changed rows"
            f" (key {', '.join(self.key)}; read {self.files_read} files)"
        )
        lines = [head]
        if self.duplicate_keys_old or self.duplicate_keys_new:
            lines.append(
                f"  duplicate keys: {self.duplicate_keys_old:,} old, {self.duplicate_keys_new:,}"
                " new (left out of the counts; see duplicate_keys())"
            )
        drift = self.schema_changes
        for name in drift.added:
            lines.append(f"  column added: {name}")
        for name in drift.removed:
            lines.append(f"  column dropped: {name}")
        for change in drift.changed:
            lines.append(f"  column retyped: {change.describe()}")
        for col in self.columns.values():
            size = "" if col.max_abs_change is None else f", max |change| {col.max_abs_change:.6g}"
            lines.append(f"  {col.column}: {col.changed:,} values changed{size}")
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        drift = self.schema_changes
        return {
            "dataset": self.dataset,
            "status": self.status,
            "key": list(self.key),
            "added": self.added,
            "removed": self.removed,
            "changed": self.changed,
            "duplicate_keys_old": self.duplicate_keys_old,
            "duplicate_keys_new": self.duplicate_keys_new,
            "columns": [c.to_json() for c in self.columns.values()],
            "schema_changes": {
                "added": list(drift.added),
                "dropped": list(drift.removed),
                "retyped": [c.describe() for c in drift.changed],
            },
            "years_read": list(self.years_read),
            "files_read": self.files_read,
        }


def _view(name: str) -> str:
    schema, table = name.split(".")
    return f"{_q(schema)}.{_q(table)}"


def _on(left: str, right: str, key: Sequence[str]) -> str:
    return " AND ".join(f"{left}.{_q(c)} IS NOT DISTINCT FROM {right}.{_q(c)}" for c in key)


def _positions(n: int) -> str:
    return ", ".join(str(i + 1) for i in range(n))


def _changed(old: str, new: str, old_type: str, new_type: str, tolerance: float | None) -> str:
    """SQL that is true when the value changed (NULL-safe; NaN equals NaN)."""
    if old_type != new_type:
        cast = f"TRY_CAST({old} AS {new_type})"
        return f"{cast} IS DISTINCT FROM {new} OR ({old} IS NOT NULL AND {cast} IS NULL)"
    if tolerance is not None and _INEXACT.match(new_type):
        # coalesce: with one side NULL the distance is NULL, and that is a change
        return (
            f"NOT ({old} IS NOT DISTINCT FROM {new} OR"
            f" coalesce(abs({new}::DOUBLE - {old}::DOUBLE) <= {float(tolerance)!r}, false))"
        )
    return f"{old} IS DISTINCT FROM {new}"


class _Runner:
    """Runs a lazy result's SELECT on a fresh sandboxed connection over one dataset's files."""

    def __init__(self, revision: Revision, plan: _Plan) -> None:
        self._revision = revision
        self._plan = plan

    def _run(
        self,
        sql: str,
        params: Params,
        timeout_s: float | None,
        fetch: Callable[[duckdb.DuckDBPyRelation], T],
    ) -> T:
        with self._revision._connection([self._plan]) as con:
            return con.run(sql, params, self._revision._timeout(timeout_s), fetch)

    def _stream(
        self, sql: str, params: Params, timeout_s: float | None, batch_rows: int
    ) -> Iterator[pa.RecordBatch]:
        with self._revision._connection([self._plan]) as con:
            yield from con.stream(sql, params, self._revision._timeout(timeout_s), batch_rows)


class Revision:
    """The differences between two snapshots, per dataset. Get one from `Warehouse.diff`.

    Attributes:
        old_snapshot_id, new_snapshot_id: the two snapshot ids (refs are resolved once, when
            the diff is made).
        tolerance: the absolute tolerance for FLOAT/DOUBLE/DECIMAL values, or None (exact).
        datasets: dataset name -> `DatasetDiff`.

    Lazy results (``rev["crsp.msf"].changes()``) reopen the two snapshots by id when run, under
    reader leases, and read only the differing files again.
    """

    def __init__(
        self,
        warehouse: Warehouse,
        old_snapshot_id: str,
        new_snapshot_id: str,
        tolerance: float | None,
    ) -> None:
        self._warehouse = warehouse
        self.old_snapshot_id = old_snapshot_id
        self.new_snapshot_id = new_snapshot_id
        self.tolerance = tolerance
        self.datasets: dict[str, DatasetDiff] = {}

    def __getitem__(self, dataset: str) -> DatasetDiff:
        try:
            return self.datasets[dataset]
        except KeyError:
            raise UnknownDatasetError(
                dataset=dataset,
                known=sorted(self.datasets),
                hint="the diff covers only the datasets listed",
            ) from None

    def __iter__(self) -> Iterator[DatasetDiff]:
        return iter(self.datasets.values())

    def __repr__(self) -> str:
        ids = f"{self.old_snapshot_id!r} -> {self.new_snapshot_id!r}"
        return f"Revision({ids}, datasets={list(self.datasets)!r})"

    def _timeout(self, timeout_s: float | None) -> float | None:
        if timeout_s is not None:
            return check_timeout(timeout_s)
        return self._warehouse.settings.query_timeout_s

    def _runner(self, plan: _Plan) -> _Runner:
        return _Runner(self, plan)

    @contextmanager
    def _connection(self, plans: Sequence[_Plan]) -> Iterator[PinnedConnection]:
        """A sandboxed connection over the plans' files, both snapshots leased and checked."""
        wh = self._warehouse
        with wh.snapshot(self.old_snapshot_id) as old, wh.snapshot(self.new_snapshot_id) as new:
            pinned = {str(p) for name in old.datasets for p in old.files(name)}
            pinned |= {str(p) for name in new.datasets for p in new.files(name)}
            views: dict[str, list[str]] = {}
            schemas: dict[str, Any] = {}
            for plan in plans:
                views.update(plan.views())
                schemas.update(plan.schemas())
            # Only files the two snapshots pin, just checked by opening them, are ever read.
            assert all(f in pinned for files in views.values() for f in files)
            con = PinnedConnection(
                views,
                threads=wh.settings.query_threads,
                memory_limit=wh.settings.query_memory_limit,
                schemas=schemas,
            )
            try:
                yield con
            finally:
                con.close()

    def summary(self) -> str:
        """What changed, dataset by dataset, as text."""
        changed = [d for d in self if d.status != "unchanged"]
        lines = [
            f"{self.old_snapshot_id} -> {self.new_snapshot_id}: {len(changed)} of"
            f" {len(self.datasets)} datasets"
            " changed"
        ]
        lines += [d.summary() for d in self]
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        return {
            "old_snapshot_id": self.old_snapshot_id,
            "new_snapshot_id": self.new_snapshot_id,
            "tolerance": self.tolerance,
            "datasets": [d.to_json() for d in self],
        }


def resolve_keys(
    names: Sequence[str],
    key: Mapping[str, Sequence[str]] | Sequence[str] | None,
    entries: Mapping[str, DatasetEntry],
) -> dict[str, tuple[str, ...]]:
    """Each dataset's key: ``key=`` (one tuple for all, or a dict per dataset), else its own."""
    if isinstance(key, str):
        msg = f"key must be a tuple of column names or a dict, not the string {key!r}"
        raise TypeError(msg)
    out: dict[str, tuple[str, ...]] = {}
    for name in names:
        given = key.get(name) if isinstance(key, Mapping) else key
        if isinstance(given, str):
            msg = f"the key of {name} must be a tuple of column names, not the string {given!r}"
            raise TypeError(msg)
        chosen = tuple(given) if given is not None else entries[name].primary_key
        if not chosen:
            raise InvalidValueError(
                name="key",
                value=given,
                rule=f"{name} has no primary key in its spec; pass key={{{name!r}: "
                "('col', ...)}} with the columns that identify a row",
            )
        out[name] = chosen
    return out


def build(
    warehouse: Warehouse,
    old_snapshot_id: str,
    new_snapshot_id: str,
    *,
    datasets: Sequence[str] | None,
    key: Mapping[str, Sequence[str]] | Sequence[str] | None,
    tolerance: float | None,
) -> Revision:
    """Compute the diff of two snapshot ids (`Warehouse.diff` resolves refs and checks args)."""
    rev = Revision(warehouse, old_snapshot_id, new_snapshot_id, tolerance)
    old_m, new_m = warehouse._manifest(old_snapshot_id), warehouse._manifest(new_snapshot_id)
    every = sorted(set(old_m.datasets) | set(new_m.datasets))
    if datasets is None:
        names = every
    else:
        names = []
        for name in datasets:
            if name not in every:
                raise UnknownDatasetError(
                    dataset=name,
                    known=every,
                    hint=f"neither {old_snapshot_id} nor {new_snapshot_id} holds it",
                )
            if name not in names:
                names.append(name)
    entries = {n: new_m.datasets.get(n) or old_m.datasets[n] for n in names}
    keys = resolve_keys(names, key, entries)
    plans: list[_Plan] = []
    for i, name in enumerate(names):
        plans.append(
            _plan(
                i,
                name,
                keys[name],
                old_m.datasets.get(name),
                new_m.datasets.get(name),
                warehouse._layout.resolve_relpath_str,
            )
        )
    to_read = [p for p in plans if p.years]
    for plan in plans:  # datasets with nothing to read need no connection
        if not plan.years:
            rev.datasets[_name(plan)] = _dataset_diff(rev, plan, [])
    if not to_read:
        return rev
    limit = rev._timeout(None)
    with rev._connection(to_read) as con:
        for plan in to_read:
            name = _name(plan)
            a_cols, a_types = con.run(
                f"SELECT * FROM {_view(plan.old_view)} LIMIT 0", None, limit, _names
            )
            b_cols, b_types = con.run(
                f"SELECT * FROM {_view(plan.new_view)} LIMIT 0", None, limit, _names
            )
            for side, cols in (("old", a_cols), ("new", b_cols)):
                missing = [c for c in plan.key if c not in cols]
                if missing:
                    raise InvalidValueError(
                        name="key",
                        value=plan.key,
                        rule=f"the {side} snapshot's {name} has no column "
                        f"{', '.join(missing)}; pass key= with columns both snapshots have",
                    )
            old_types = dict(zip(a_cols, a_types, strict=True))
            compared = [
                (c, old_types[c], t)
                for c, t in zip(b_cols, b_types, strict=True)
                if c in old_types and c not in plan.key
            ]
            d = _dataset_diff(rev, plan, compared)
            dup = con.run(d._duplicates_sql(), None, limit, fetch_rows)[0]
            d.duplicate_keys_old, d.duplicate_keys_new = int(dup[0]), int(dup[1])
            row = con.run(d._summary_sql(), None, limit, fetch_rows)[0]
            d.added, d.removed, d.changed = int(row[0]), int(row[1]), int(row[2])
            for i, (column, _, _) in enumerate(compared):
                count, size = row[3 + 2 * i], row[4 + 2 * i]
                if count:
                    d.columns[column] = ColumnDiff(
                        column=column,
                        changed=int(count),
                        max_abs_change=None if size is None else float(size),
                    )
            rev.datasets[name] = d
    rev.datasets = {n: rev.datasets[n] for n in names}
    return rev


def _name(plan: _Plan) -> str:
    entry = plan.new_entry or plan.old_entry
    assert entry is not None  # a plan is made for a dataset one of the snapshots holds
    return entry.name


def _dataset_diff(
    rev: Revision, plan: _Plan, compared: Sequence[tuple[str, str, str]]
) -> DatasetDiff:
    """A `DatasetDiff` with zero counts; its status from the plan and the schema."""
    old, new = plan.old_entry, plan.new_entry
    name = _name(plan)
    if old is not None and new is not None:
        drift = schema_diff(name, old.columns, new.columns)
    else:
        drift = schema_diff(name, (), ())
    status = _status(plan)
    if status == "unchanged" and (drift.added or drift.removed or drift.changed):
        status = "changed"  # same files, but the declared source types differ
    return DatasetDiff(
        rev, plan, status=status, counts={}, columns={}, compared=compared, schema_changes=drift
    )


def _names(rel: duckdb.DuckDBPyRelation) -> tuple[list[str], list[str]]:
    return list(rel.columns), [str(t) for t in rel.types]


def _status(plan: _Plan) -> str:
    if plan.old_entry is None:
        return "added"
    if plan.new_entry is None:
        return "removed"
    return "changed" if plan.years else "unchanged"


def _plan(
    index: int,
    name: str,
    key: tuple[str, ...],
    old: DatasetEntry | None,
    new: DatasetEntry | None,
    resolve: Callable[[str], str],
) -> _Plan:
    """Which partitions to read: only those whose file differs, when the key fixes the year.

    A row's key fixes its file when the partition column is part of the key (or the dataset is
    one partition): equal files then hold equal rows for every key they contain. With a key
    without the date (or a changed partition column) a duplicate key could span a changed and an
    unchanged year, so every file is read to find it.
    """
    old_parts = {p.year: p for p in (old.partitions if old else ())}
    new_parts = {p.year: p for p in (new.partitions if new else ())}
    prunable = (
        old is not None
        and new is not None
        and old.partition_column == new.partition_column
        and (old.partition_column is None or old.partition_column in key)
    )
    years = sorted(
        set(old_parts) | set(new_parts),
        key=lambda y: -1 if y is None else y,
    )
    if prunable:
        years = [
            y
            for y in years
            if y not in old_parts
            or y not in new_parts
            or old_parts[y].sha256 != new_parts[y].sha256
        ]

    def files(entry: DatasetEntry | None, parts: Mapping[int | None, Any]) -> tuple[str, ...]:
        if entry is None:
            return ()
        return tuple(resolve(parts[y].path) for y in years if y in parts)

    return _Plan(
        index=index,
        key=key,
        old_files=files(old, old_parts),
        new_files=files(new, new_parts),
        old_entry=old,
        new_entry=new,
        years=tuple(years),
    )


_ALIAS_RE: Final = re.compile(r"[a-z][a-z0-9_]{0,62}")


def _reserved_keywords() -> frozenset[str]:
    from wrdsvault._query import connect

    con = connect()
    try:
        rows = con.execute(
            "SELECT keyword_name FROM duckdb_keywords() WHERE keyword_category = 'reserved'"
        ).fetchall()
    finally:
        con.close()
    return frozenset(str(r[0]).lower() for r in rows)


def check_aliases(aliases: object) -> dict[str, str]:
    """``aliases`` as alias -> ref, each alias a safe DuckDB catalog name (InvalidNameError)."""
    from wrdsvault.datasets import RESERVED_LIBRARIES
    from wrdsvault.errors import InvalidNameError

    if not isinstance(aliases, Mapping):
        msg = f"aliases must be a dict of alias -> ref, not {type(aliases).__name__}"
        raise TypeError(msg)
    if not aliases:
        raise InvalidValueError(
            name="aliases", value={}, rule='name at least one snapshot, e.g. {"old": "v1"}'
        )
    reserved = _reserved_keywords()
    out: dict[str, str] = {}
    for alias, ref in aliases.items():
        if not isinstance(alias, str) or not isinstance(ref, str):
            msg = "aliases maps str alias -> str ref"
            raise TypeError(msg)
        if _ALIAS_RE.fullmatch(alias) is None:
            raise InvalidNameError(
                kind="alias",
                value=alias,
                rule="lower case letters, digits and '_', starting with a letter (at most 63)",
            )
        if alias in RESERVED_LIBRARIES or alias in reserved:
            raise InvalidNameError(
                kind="alias",
                value=alias,
                rule="a name DuckDB reserves for its own catalogs or as a keyword; pick another",
            )
        out[alias] = ref
    return out


def run_across(
    warehouse: Warehouse,
    aliases: Mapping[str, str],
    sql: str,
    params: Params,
    timeout_s: float | None,
    fetch: Callable[[duckdb.DuckDBPyRelation], T],
) -> T:
    """Run one checked SELECT over several snapshots, each under its alias (a catalog)."""
    from wrdsvault.datasets import reserved_library
    from wrdsvault.errors import InvalidNameError

    chosen = check_aliases(aliases)
    limit = check_timeout(timeout_s) if timeout_s is not None else None
    with contextlib.ExitStack() as stack:
        snaps = {a: stack.enter_context(warehouse.snapshot(ref)) for a, ref in chosen.items()}
        libraries = {n.split(".", 1)[0] for s in snaps.values() for n in s.datasets}
        for alias in snaps:
            if alias in libraries:
                raise InvalidNameError(
                    kind="alias",
                    value=alias,
                    rule=f"{alias} is also a library in these snapshots, so {alias}.x.y would be "
                    "ambiguous; pick another alias",
                )
        views: dict[str, list[str]] = {}
        schemas: dict[str, Any] = {}
        for alias, snap in snaps.items():
            for name in snap.datasets:
                if reserved_library(name):
                    continue
                files = [str(p) for p in snap.files(name)]
                views[f"{alias}.{name}"] = files
                if not files:
                    schemas[f"{alias}.{name}"] = arrow_schema(snap.dataset(name).columns)
        con = PinnedConnection(
            views,
            threads=warehouse.settings.query_threads,
            memory_limit=warehouse.settings.query_memory_limit,
            schemas=schemas,
        )
        stack.callback(con.close)
        if limit is None:
            limit = warehouse.settings.query_timeout_s
        return con.run(sql, params, limit, fetch)
