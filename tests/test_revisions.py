"""Keyed diff between snapshots: the vintage-2 update of SampleSource, exactly, and nothing else.

The expected changes are derived from SampleSource's own generation of both vintages (its rows as
Python values in pandas frames), never from the diff code. Crafted sources check the comparison
rules (NULL, NaN, tolerance, duplicate keys, schema changes) on a real vault and real DuckDB.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pytest

import wrdsvault
from wrdsvault.cli import main
from wrdsvault.datasets import DatasetSpec, builtin_spec
from wrdsvault.sources import SampleSource
from wrdsvault.sources.base import PartitionInfo, TableInfo

PARAMS: dict[str, Any] = {"seed": 0, "years": range(2019, 2024), "n_securities": 60}


def generated(source: SampleSource, name: str) -> pd.DataFrame:
    """Every row the source serves for ``name``, as Python values (NULL is None, NaN is nan)."""
    spec = builtin_spec(name)
    batches = [b for p in source.partitions(spec) for b in source.read_partition(spec, p.year)]
    table = pa.Table.from_batches(batches, schema=source.describe(spec).schema)
    return pd.DataFrame(
        {c: pd.Series(table.column(c).to_pylist(), dtype=object) for c in table.column_names}
    )


def same(a: object, b: object) -> bool:
    """The diff's rule, stated independently: NULL equals only NULL, NaN equals NaN."""
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b


class Expected:
    """What the vintage-2 update did to one dataset, computed with pandas from the source."""

    def __init__(self, name: str) -> None:
        old = generated(SampleSource(**PARAMS, vintage=1), name)
        new = generated(SampleSource(**PARAMS, vintage=2), name)
        key = list(builtin_spec(name).primary_key)
        self.key = key
        both = old.merge(new, on=key, how="outer", suffixes=("_o", "_n"), indicator=True)
        keys = [tuple(r) for r in both[key].itertuples(index=False)]
        self.added = {k for k, m in zip(keys, both["_merge"], strict=True) if m == "right_only"}
        self.removed = {k for k, m in zip(keys, both["_merge"], strict=True) if m == "left_only"}
        columns = [c for c in new.columns if c in old.columns and c not in key]
        self.cells: dict[tuple[tuple[Any, ...], str], tuple[Any, Any]] = {}
        matched = both[both["_merge"] == "both"]
        for c in columns:
            for k, a, b in zip(
                [tuple(r) for r in matched[key].itertuples(index=False)],
                matched[f"{c}_o"],
                matched[f"{c}_n"],
                strict=True,
            ):
                if not same(a, b):
                    self.cells[(k, c)] = (a, b)
        self.changed_rows = {k for k, _ in self.cells}


#: Every sample dataset but the daily CIZ file: it has crsp.dsf's rows and vintage rules at 50
#: columns, and this module's cell-by-cell reference diff (pandas) would double its time for no
#: case crsp.dsf and crsp.msf_v2 do not already cover.
DATASETS = [d for d in SampleSource(**PARAMS).datasets if d != "crsp.dsf_v2"]


@pytest.fixture(scope="module")
def revised(tmp_path_factory: pytest.TempPathFactory) -> Iterator[wrdsvault.Warehouse]:
    """A vault holding every sample dataset at vintage 1 (tag v1), then vintage 2 (latest)."""
    root = tmp_path_factory.mktemp("revisions") / "vault"
    with wrdsvault.Warehouse(root, source=SampleSource(**PARAMS, vintage=1)) as wh:
        wh.sync(DATASETS)
        wh.tag("v1")
        wh.source = SampleSource(**PARAMS, vintage=2)
        assert wh.sync(DATASETS).committed
        yield wh


@pytest.fixture(scope="module")
def rev(revised: wrdsvault.Warehouse) -> wrdsvault.Revision:
    return revised.diff("v1", "latest")


def keyed(rows: Sequence[dict[str, Any]], key: Sequence[str]) -> set[tuple[Any, ...]]:
    return {tuple(r[c] for c in key) for r in rows}


@pytest.mark.parametrize("name", DATASETS)
def test_vintage_two_diff_is_exactly_what_the_update_did(
    rev: wrdsvault.Revision, name: str
) -> None:
    """Added keys, removed keys and every changed (key, column, old, new) match the generation."""
    want = Expected(name)
    got = rev[name]
    assert got.key == tuple(want.key)
    assert keyed(got.added_keys().arrow().to_pylist(), want.key) == want.added
    assert keyed(got.removed_keys().arrow().to_pylist(), want.key) == want.removed
    assert (got.added, got.removed, got.changed) == (
        len(want.added),
        len(want.removed),
        len(want.changed_rows),
    )
    assert got.duplicate_keys_old == got.duplicate_keys_new == 0
    cells: dict[tuple[tuple[Any, ...], str], tuple[Any, Any]] = {}
    for column in {c for _, c in want.cells} | set(got.columns):
        for r in got.changes(column).arrow().to_pylist():
            cells[(tuple(r[c] for c in want.key), r["column"])] = (r["old"], r["new"])
    assert cells.keys() == want.cells.keys()
    for where, (old, new) in want.cells.items():
        assert same(cells[where][0], old) and same(cells[where][1], new), where
    everything = got.changes().arrow().to_pylist()  # all columns at once: the same cells
    assert {(tuple(r[c] for c in want.key), r["column"]) for r in everything} == set(want.cells)
    counts = {c: sum(1 for _, col in want.cells if col == c) for c in {c for _, c in want.cells}}
    assert {c: d.changed for c, d in got.columns.items()} == counts
    assert got.status == ("changed" if want.added or want.removed or want.cells else "unchanged")


def test_the_update_changes_something_in_each_kind(rev: wrdsvault.Revision) -> None:
    """The proof is not vacuous: vintage 2 appends rows and restates values in several datasets."""
    assert rev["crsp.msf"].added > 0 and rev["crsp.msf"].changed > 0
    assert rev["comp.funda"].added > 0 and rev["comp.funda"].changed > 0
    assert rev["ff.factors_monthly"].columns["dateff"].max_abs_change is None  # NULL -> a date


def test_restated_returns_by_size(rev: wrdsvault.Revision) -> None:
    """changes('ret', min_abs=) keeps the restatements at least that large, with max |change|."""
    want = Expected("crsp.msf")
    sizes = {k: abs(float(n) - float(o)) for (k, c), (o, n) in want.cells.items() if c == "ret"}
    threshold = sorted(sizes.values())[len(sizes) // 2]
    got = rev["crsp.msf"].changes("ret", min_abs=threshold).arrow().to_pylist()
    assert keyed(got, want.key) == {k for k, s in sizes.items() if s >= threshold}
    assert rev["crsp.msf"].columns["ret"].max_abs_change == pytest.approx(max(sizes.values()))


def test_only_partitions_whose_files_differ_are_read(
    revised: wrdsvault.Warehouse, tmp_path: Path
) -> None:
    """Destroying every file both snapshots share leaves the diff unchanged: it never reads them."""
    import shutil

    root = tmp_path / "copy"
    shutil.copytree(revised.root, root)
    before = revised.diff("v1", "latest").to_json()
    with wrdsvault.Warehouse(root) as wh:
        old, new = wh.snapshot("v1"), wh.snapshot("latest")
        shared = set()
        for name in DATASETS:
            shared |= set(old.files(name)) & set(new.files(name))
            differ = {p.year for p in old.dataset(name).partitions} ^ {
                p.year for p in new.dataset(name).partitions
            } | {
                p.year
                for p in new.dataset(name).partitions
                if (o := old.dataset(name).partition(p.year)) is not None and o.sha256 != p.sha256
            }
            assert set(before["datasets"][DATASETS.index(name)]["years_read"]) == differ
        old.close()
        new.close()
        assert shared
        for path in shared:  # same size, no Parquet left in it
            path.chmod(0o644)
            path.write_bytes(b"\0" * path.stat().st_size)
        rev = wh.diff("v1", "latest")
        assert rev.to_json() == before
        assert rev["crsp.msf"].files_read == 4  # the restated year and the appended year, twice
        assert len(rev["crsp.msf"].changes().df()) == rev["crsp.msf"].changed


def test_cli_diff_json_reports_the_same(revised: wrdsvault.Warehouse, capsys: Any) -> None:
    """`wrdsvault diff v1 latest --json --limit 0` lists the same added keys and changed cells."""
    assert (
        main(["diff", "v1", "latest", "--vault", str(revised.root), "--json", "--limit", "0"]) == 0
    )
    doc = json.loads(capsys.readouterr().out)
    assert [d["dataset"] for d in doc["datasets"]] == sorted(DATASETS)
    for entry in doc["datasets"]:
        want = Expected(entry["dataset"])

        def text(key: Sequence[Any]) -> tuple[str, ...]:
            return tuple(str(v) for v in key)

        assert entry["added"] == len(want.added)
        assert {text(keyed([r], want.key).pop()) for r in entry.get("added_keys", [])} == {
            text(k) for k in want.added
        }
        assert {
            (text(keyed([r], want.key).pop()), r["column"]) for r in entry.get("changes", [])
        } == {(text(k), c) for k, c in want.cells}


def test_cli_diff_text_summary(revised: wrdsvault.Warehouse, capsys: Any) -> None:
    """The text form names each dataset's counts and shows at most --limit changes."""
    assert (
        main(["diff", "v1", "latest", "crsp.msf", "--vault", str(revised.root), "--limit", "3"])
        == 0
    )
    out = capsys.readouterr().out
    assert "crsp.msf: changed:" in out and "ret:" in out
    table = out.split("crsp.msf: first changes\n", 1)[1].splitlines()
    assert table[0].split() == ["permno", "date", "column", "old", "new"]
    assert len([line for line in table[1:] if not line.startswith("...")]) == 3


def test_query_across_finds_the_same_restated_returns(
    revised: wrdsvault.Warehouse, rev: wrdsvault.Revision
) -> None:
    """The documented SQL across snapshots finds the rows the diff reports for ret."""
    df = revised.query_across(
        {"old": "v1", "new": "latest"},
        "select n.permno, n.date, o.ret as old_ret, n.ret as new_ret from new.crsp.msf n "
        "join old.crsp.msf o using (permno, date) where o.ret is distinct from n.ret",
    )
    assert len(df) == rev["crsp.msf"].columns["ret"].changed


def test_diff_of_a_snapshot_with_itself_reads_nothing(revised: wrdsvault.Warehouse) -> None:
    """Diffing a snapshot against itself: every dataset unchanged, no file read."""
    same_rev = revised.diff("latest", "latest")
    assert all(d.status == "unchanged" and d.files_read == 0 for d in same_rev)
    assert same_rev["crsp.msf"].changes().df().empty


# -- comparison rules on crafted data ----------------------------------------------------------


def f(name: str, typ: pa.DataType, declared: str) -> pa.Field:
    return pa.field(name, typ, metadata={b"source_type": declared.encode()})


FIELDS = [
    f("id", pa.int32(), "integer"),
    f("date", pa.date32(), "date"),
    f("x", pa.float64(), "double precision"),
    f("s", pa.string(), "varchar(8)"),
]


class Crafted:
    """A source serving given rows (one year each) under a change marker."""

    name = "crafted"

    def __init__(
        self, rows: list[dict[str, Any]], marker: str, fields: Sequence[pa.Field] = FIELDS
    ) -> None:
        self.schema = pa.schema(list(fields))
        self.rows = rows
        self.marker = marker

    def describe(self, spec: DatasetSpec) -> TableInfo:
        return TableInfo(schema=self.schema, change_marker=self.marker, comment=self.marker)

    def by_year(self) -> dict[int, list[dict[str, Any]]]:
        out: dict[int, list[dict[str, Any]]] = {}
        for r in self.rows:
            out.setdefault(r["date"].year, []).append(r)
        return out

    def partitions(self, spec: DatasetSpec) -> list[PartitionInfo]:
        return [
            PartitionInfo(year=y, row_count=len(r), marker=None)
            for y, r in sorted(self.by_year().items())
        ]

    def read_partition(
        self, spec: DatasetSpec, year: int | None, *, batch_rows: int = 131_072
    ) -> Iterator[pa.RecordBatch]:
        rows = [{c: r.get(c) for c in self.schema.names} for r in self.by_year()[year]]
        yield from pa.Table.from_pylist(rows, schema=self.schema).to_batches(batch_rows)

    def close(self) -> None:
        pass


D1, D2 = dt.date(2020, 1, 31), dt.date(2021, 1, 29)
NAN = float("nan")


def crafted_vault(
    tmp_path: Path,
    old: list[dict[str, Any]],
    new: list[dict[str, Any]],
    new_fields: Sequence[pa.Field] = FIELDS,
) -> wrdsvault.Warehouse:
    wh = wrdsvault.Warehouse(tmp_path / "vault", source=Crafted(old, "v1"))
    wh.sync("main2.t", date_column="date")
    wh.tag("v1")
    wh.source = Crafted(new, "v2", new_fields)
    assert wh.sync("main2.t", date_column="date", drift="accept").committed
    return wh


def row(i: int, x: float | None, s: str | None = "a", date: dt.date = D1) -> dict[str, Any]:
    return {"id": i, "date": date, "x": x, "s": s}


def test_null_nan_and_exact_float_rules(tmp_path: Path) -> None:
    """NULL to a value and back change; NaN equals NaN; the last bit counts unless tolerance=."""
    old = [row(1, None), row(2, 1.0), row(3, NAN), row(4, 1.0), row(5, NAN), row(6, 2.0, None)]
    new = [
        row(1, 1.0),
        row(2, None),
        row(3, NAN),
        row(4, 1.0 + 1e-12),
        row(5, 1.0),
        row(6, 2.0, "b"),
    ]
    with crafted_vault(tmp_path, old, new) as wh:
        exact = wh.diff("v1", "latest", key=("id",))["main2.t"]
        assert exact.changed == 5
        assert {r["id"] for r in exact.changes("x").arrow().to_pylist()} == {1, 2, 4, 5}
        assert exact.columns["x"].max_abs_change == pytest.approx(1e-12)
        assert [r["new"] for r in exact.changes("s").arrow().to_pylist()] == ["b"]
        loose = wh.diff("v1", "latest", key={"main2.t": ("id",)}, tolerance=1e-9)["main2.t"]
        assert {r["id"] for r in loose.changes("x").arrow().to_pylist()} == {1, 2, 5}
        assert {r["id"] for r in exact.changes("x", min_abs=0.5).arrow().to_pylist()} == {1, 2, 5}


def test_duplicate_keys_are_reported_not_joined(tmp_path: Path) -> None:
    """A key twice in one snapshot is listed with its counts and left out of added/changed."""
    old = [row(1, 1.0), row(2, 2.0), row(3, 3.0)]
    new = [row(1, 1.0), row(2, 5.0), row(2, 6.0), row(3, 4.0), row(4, 4.0)]
    with crafted_vault(tmp_path, old, new) as wh:
        d = wh.diff("v1", "latest", key=("id",))["main2.t"]
        assert (d.duplicate_keys_old, d.duplicate_keys_new) == (0, 1)
        assert (d.added, d.removed, d.changed) == (1, 0, 1)  # id 4 added, id 3 changed
        assert d.duplicate_keys().arrow().to_pylist() == [{"id": 2, "old_count": 1, "new_count": 2}]
        assert "duplicate keys: 0 old, 1 new" in d.summary()


def test_schema_changes_and_retyped_values(tmp_path: Path) -> None:
    """Added and dropped columns are schema changes; a retyped column compares cast values."""
    old = [row(1, 1.0, "a"), row(2, 2.5, "b")]
    fields = [FIELDS[0], FIELDS[1], f("x", pa.int64(), "bigint"), f("y", pa.int32(), "integer")]
    new = [{"id": 1, "date": D1, "x": 1, "y": 7}, {"id": 2, "date": D1, "x": 3, "y": 8}]
    with crafted_vault(tmp_path, old, new, fields) as wh:
        d = wh.diff("v1", "latest", key=("id",))["main2.t"]
        assert d.schema_changes.added == ("y",) and d.schema_changes.removed == ("s",)
        assert [c.column for c in d.schema_changes.changed] == ["x"]
        assert [r["id"] for r in d.changes("x").arrow().to_pylist()] == [2]
        assert d.columns["x"].max_abs_change == pytest.approx(0.5)


def test_rows_in_unchanged_years_are_not_reported(tmp_path: Path) -> None:
    """Only the year whose file changed is read; rows of the other year count for nothing."""
    old = [row(1, 1.0), row(2, 2.0, date=D2)]
    new = [row(1, 1.0), row(2, 3.0, date=D2)]
    with crafted_vault(tmp_path, old, new) as wh:
        d = wh.diff("v1", "latest", key=("id", "date"))["main2.t"]
        assert d.years_read == (2021,) and d.files_read == 2 and d.changed == 1
        whole = wh.diff("v1", "latest", key=("id",))["main2.t"]  # the key does not fix the year
        assert whole.years_read == (2020, 2021) and whole.changed == 1


def test_key_is_required_and_checked(tmp_path: Path) -> None:
    """A dataset without a spec key needs key=; a key column missing is an InvalidValueError."""
    with crafted_vault(tmp_path, [row(1, 1.0)], [row(1, 2.0)]) as wh:
        with pytest.raises(wrdsvault.InvalidValueError, match="key="):
            wh.diff("v1", "latest")
        with pytest.raises(wrdsvault.InvalidValueError, match="no column nope"):
            wh.diff("v1", "latest", key=("nope",))
        with pytest.raises(TypeError):
            wh.diff("v1", "latest", key="id")  # type: ignore[arg-type]
        with pytest.raises(wrdsvault.UnknownDatasetError):
            wh.diff("v1", "latest", datasets=["crsp.msf"])
        with pytest.raises(wrdsvault.InvalidValueError):
            wh.diff("v1", "latest", key=("id",), tolerance=-1)
        d = wh.diff("v1", "latest", key=("id",))["main2.t"]
        with pytest.raises(wrdsvault.InvalidValueError):
            d.changes("nope")
        with pytest.raises(wrdsvault.InvalidValueError):
            d.changes("s", min_abs=1)


def test_changes_stream_in_batches(rev: wrdsvault.Revision) -> None:
    """changes().batches(n) yields record batches of at most n rows: the same rows as arrow()."""
    lazy = rev["crsp.msf"].changes()
    batches = list(lazy.batches(5))
    assert len(batches) > 1 and all(b.num_rows <= 5 for b in batches)
    assert pa.Table.from_batches(batches).to_pylist() == lazy.arrow().to_pylist()
    assert lazy.head(3).arrow().to_pylist() == lazy.arrow().to_pylist()[:3]
