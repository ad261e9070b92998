"""The built-in rules pass on facts proven while rows stream, and only then.

A sync collects `StreamFacts` as each partition's batches stream into the staged file (NULL
counts, whether the key arrived strictly increasing, the distinct dates). These tests check, on
real Parquet files and a real DuckDB, that (1) a proof never changes a verdict: each rule gives
the same finding, with the same examples, with and without facts, for clean and broken
partitions in any row order; (2) a clean partition runs no SQL at all; (3) a real sync hands the
facts to the rules, so a clean sync opens no validation database (this fails if the proof is lost,
e.g. if the facts stopped reaching the rules or the key order stopped being proven).
"""

from __future__ import annotations

import datetime as dt
import functools
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import wrdsvault
from wrdsvault import validation
from wrdsvault._digest import Digester
from wrdsvault.datasets import DatasetSpec
from wrdsvault.sources.base import PartitionInfo, TableInfo
from wrdsvault.validation import (
    DatesInYear,
    KeyNotNull,
    MaxDateGap,
    MonthlyContinuity,
    PartitionData,
    Rule,
    StreamFacts,
    UniqueKey,
)

SCHEMA = pa.schema(
    [
        pa.field("permno", pa.int32(), metadata={b"source_type": b"integer"}),
        pa.field("date", pa.date32(), metadata={b"source_type": b"date"}),
        pa.field("ret", pa.float64(), metadata={b"source_type": b"double precision"}),
    ]
)
DAILY = DatasetSpec(
    name="crsp.dsf", partition_column="date", primary_key=("permno", "date"), frequency="daily"
)
MONTHLY = DatasetSpec(
    name="crsp.msf", partition_column="date", primary_key=("permno", "date"), frequency="monthly"
)


def rules_of(spec: DatasetSpec) -> list[Rule]:
    return [
        KeyNotNull(spec.primary_key),
        UniqueKey(spec.primary_key),
        DatesInYear(),
        MaxDateGap(7) if spec.frequency == "daily" else MonthlyContinuity(),
    ]


def weekdays(year: int, *, skip: Sequence[int] = ()) -> list[dt.date]:
    """Mondays to Fridays of ``year`` (the longest gap is 3 days), without the days ``skip``."""
    start = dt.date(year, 1, 1)
    days = [start + dt.timedelta(d) for d in range(366)]
    return [d for i, d in enumerate(days) if d.year == year and d.weekday() < 5 and i not in skip]


def rows_of(dates: Sequence[dt.date | None], permnos: Sequence[int | None] = (1, 2)) -> list[dict]:
    return [{"permno": p, "date": d, "ret": 0.01} for p in permnos for d in dates]


CASES: dict[str, tuple[DatasetSpec, Callable[[], list[dict]]]] = {
    "clean daily": (DAILY, lambda: rows_of(weekdays(2020))),
    "clean monthly": (MONTHLY, lambda: rows_of([dt.date(2020, m, 28) for m in range(1, 13)])),
    "NULL key": (DAILY, lambda: rows_of(weekdays(2020), permnos=(1, None))),
    "repeated key in order": (DAILY, lambda: sorted_rows(rows_of(weekdays(2020)) * 2)),
    "a date outside the year": (DAILY, lambda: rows_of([dt.date(2019, 12, 31), *weekdays(2020)])),
    "a NULL date": (DAILY, lambda: rows_of([*weekdays(2020), None])),
    "a 10-day hole": (DAILY, lambda: rows_of(weekdays(2020, skip=range(40, 50)))),
    "a missing month": (
        MONTHLY,
        lambda: rows_of([dt.date(2020, m, 28) for m in range(1, 13) if m != 6]),
    ),
}


def sorted_rows(rows: list[dict]) -> list[dict]:
    def key(r: dict) -> tuple:
        return (r["permno"] is None, r["permno"] or 0, r["date"] is None, r["date"] or dt.date.min)

    return sorted(rows, key=key)


def stream(rows: list[dict], spec: DatasetSpec, path: Path, batch_rows: int) -> StreamFacts:
    """Write ``rows`` to ``path`` in batches as a sync does; the facts a sync would collect."""
    table = pa.Table.from_pylist(rows, schema=SCHEMA)
    pq.write_table(table, path)
    facts = StreamFacts(SCHEMA, spec.partition_column)
    digester = Digester(SCHEMA, spec.primary_key)  # the writer's check of the key order
    for batch in table.to_batches(batch_rows):
        digester.update(batch)
        facts.update(batch)
    facts.ordered_key = tuple(digester.key) if digester.in_order else ()
    return facts


def partition(spec: DatasetSpec, path: Path, rows: int, facts: StreamFacts | None) -> PartitionData:
    return PartitionData(
        spec=spec,
        year=2020,
        path=path,
        row_count=rows,
        source_row_count=rows,
        previous=None,
        columns=SCHEMA.names,
        facts=facts,
    )


def verdicts(rules: Sequence[Rule], data: PartitionData) -> list[Any]:
    try:
        return [None if (f := r.check(data)) is None else f.to_json() for r in rules]
    finally:
        data.close()


@pytest.mark.parametrize("order", ["key order", "reversed"])
@pytest.mark.parametrize("case", list(CASES))
def test_a_proof_never_changes_a_verdict(tmp_path: Path, case: str, order: str) -> None:
    """Every built-in rule gives the same finding (message, count, examples) with and without
    the streamed facts, for clean and broken partitions, in key order or not."""
    spec, make = CASES[case]
    rows = sorted_rows(make())
    if order == "reversed":
        rows.reverse()
    path = tmp_path / "p.parquet"
    facts = stream(rows, spec, path, batch_rows=97)  # batch edges inside runs of one permno
    rules = rules_of(spec)
    with_facts = partition(spec, path, len(rows), facts)
    got = verdicts(rules, with_facts)
    expected = verdicts(rules, partition(spec, path, len(rows), None))
    assert got == expected
    if case.startswith("clean"):
        assert got == [None] * len(rules)
        if order == "key order":
            assert with_facts.queries == 0  # proven from the stream: the file was not read
    else:
        assert any(v is not None for v in got), "the broken partition must fail a rule"


def test_unsorted_unique_keys_are_checked_by_sql_and_pass(tmp_path: Path) -> None:
    """Keys out of order prove nothing: UniqueKey runs its SQL and passes unique keys."""
    rows = sorted_rows(rows_of(weekdays(2020)))
    rows[0], rows[1] = rows[1], rows[0]
    path = tmp_path / "p.parquet"
    facts = stream(rows, DAILY, path, batch_rows=1000)
    assert facts.ordered_key == ()
    data = partition(DAILY, path, len(rows), facts)
    assert UniqueKey(DAILY.primary_key).check(data) is None
    assert data.queries == 1
    data.close()


def test_timestamp_partition_column_counts_years_in_utc(tmp_path: Path) -> None:
    """A zone-aware timestamp column is in its year by its UTC instant, as year() in SQL."""
    schema = pa.schema([pa.field("id", pa.int32()), pa.field("t", pa.timestamp("us", "Etc/GMT+5"))])
    utc = dt.timezone.utc
    cases = {
        "inside": [dt.datetime(2020, 6, 1, tzinfo=utc), dt.datetime(2020, 12, 31, 22, tzinfo=utc)],
        # 2021-01-01 01:00 UTC is 2020-12-31 20:00 in the column's zone (UTC-5): outside 2020.
        "outside": [dt.datetime(2021, 1, 1, 1, tzinfo=utc)],
    }
    spec = DatasetSpec(name="x.events", partition_column="t", primary_key=("id",))
    for name, stamps in cases.items():
        table = pa.table({"id": pa.array(range(len(stamps)), pa.int32()), "t": stamps}, schema)
        path = tmp_path / f"{name}.parquet"
        pq.write_table(table, path)
        facts = StreamFacts(schema, "t")
        for batch in table.to_batches():
            facts.update(batch)
        data = functools.partial(
            PartitionData,
            spec=spec,
            year=2020,
            path=path,
            row_count=len(stamps),
            source_row_count=None,
            previous=None,
            columns=schema.names,
        )
        got = verdicts([DatesInYear()], data(facts=facts))
        assert got == verdicts([DatesInYear()], data())
        assert (got == [None]) == (name == "inside")


class DailySource:
    """Daily rows of two securities, one partition per year, sent in key order."""

    name = "daily"

    def __init__(self, years: Sequence[int]) -> None:
        self.years = years

    def describe(self, spec: DatasetSpec) -> TableInfo:
        return TableInfo(schema=SCHEMA, change_marker="v1")

    def partitions(self, spec: DatasetSpec) -> list[PartitionInfo]:
        return [PartitionInfo(year=y, row_count=2 * len(weekdays(y))) for y in self.years]

    def read_partition(
        self, spec: DatasetSpec, year: int | None, *, batch_rows: int = 131_072
    ) -> Iterator[pa.RecordBatch]:
        assert year is not None
        table = pa.Table.from_pylist(sorted_rows(rows_of(weekdays(year))), schema=SCHEMA)
        yield from table.to_batches(100)

    def close(self) -> None:
        pass


def opened_validation_database(run: Callable[[], object]) -> bool:
    """Run ``run`` in a fresh thread; whether it opened that thread's validation database."""
    out: dict[str, Any] = {}

    def body() -> None:
        try:
            run()
        except BaseException as exc:  # re-raised in the test's thread
            out["error"] = exc
        out["opened"] = getattr(validation._local, "con", None) is not None

    thread = threading.Thread(target=body)
    thread.start()
    thread.join()
    if "error" in out:
        raise out["error"]
    return bool(out["opened"])


def test_a_clean_sync_proves_its_rules_without_reading_the_files(tmp_path: Path) -> None:
    """A clean sync in key order passes the built-in rules on the streamed facts alone: it
    opens no validation database (the rules never read the staged files)."""
    wh = wrdsvault.Warehouse(tmp_path / "v", source=DailySource([2020, 2021]))
    assert not opened_validation_database(lambda: wh.sync("crsp.dsf"))
    assert wh.snapshot("latest").query("select count(*) from crsp.dsf").iloc[0, 0] == 2 * sum(
        len(weekdays(y)) for y in (2020, 2021)
    )


def test_a_user_rule_still_reads_the_file(tmp_path: Path) -> None:
    """A SqlRule is never skipped: it runs over the staged file and can fail the sync."""
    rule = validation.SqlRule("no_january", "select * from partition where month(date) = 1")
    wh = wrdsvault.Warehouse(tmp_path / "v", source=DailySource([2020]), rules={"crsp.dsf": [rule]})
    with pytest.raises(wrdsvault.ValidationFailedError, match="no_january"):
        wh.sync("crsp.dsf")


class _KeyErrorRule:
    name = "lookup"

    def check(self, partition: PartitionData) -> None:
        raise KeyError("no such column")


def test_a_rule_that_crashes_is_a_finding_in_a_process_without_duckdb(tmp_path: Path) -> None:
    """`run_rules` names DuckDB's errors only once a rule loaded DuckDB (a sync whose rules the
    stream proves never loads it): a broken SQL rule, run first in a fresh interpreter, and a
    rule raising KeyError both become findings instead of failing the sync."""
    import json
    import subprocess
    import sys
    import textwrap

    path = tmp_path / "part.parquet"
    pq.write_table(pa.Table.from_pylist(rows_of(weekdays(2020)), schema=SCHEMA), path)
    script = textwrap.dedent(
        f"""
        import json, sys
        from wrdsvault.datasets import DatasetSpec
        from wrdsvault.validation import PartitionData, SqlRule, run_rules
        assert "duckdb" not in sys.modules
        spec = DatasetSpec(name="crsp.dsf", partition_column="date", primary_key=("permno", "date"))
        data = PartitionData(spec=spec, year=2020, path={str(path)!r}, row_count=2,
                             source_row_count=2, previous=None, columns=["permno", "date", "ret"])
        found = run_rules([SqlRule("broken", "select no_such_column from partition")], data)
        print(json.dumps([f.message for f in found]))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    [message] = json.loads(done.stdout.splitlines()[-1])
    assert message.startswith("the rule itself failed: BinderException")

    data = partition(DAILY, path, 2, None)
    [finding] = validation.run_rules([_KeyErrorRule()], data)
    assert finding.rule == "lookup"
    assert "the rule itself failed: KeyError" in finding.message
