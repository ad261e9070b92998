"""Content digests and reproducibility receipts: equal for equal rows, whatever their encoding.

Vaults are built by real syncs (SampleSource, or a subclass that edits what it serves) with
different row-group sizes and codecs; digests are checked against the Parquet files on disk.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Callable, Collection, Iterator, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

import attrs
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from hypothesis import given
from hypothesis import strategies as st

import wrdsvault
from wrdsvault._digest import file_digest, table_digest
from wrdsvault.datasets import DatasetSpec
from wrdsvault.manifest import canonical_json
from wrdsvault.sources import SampleSource
from wrdsvault.sources.base import PartitionInfo, TableInfo

SMALL: dict[str, Any] = {"seed": 0, "years": range(2019, 2023), "n_securities": 40}
DATASETS = ["crsp.msf", "ff.factors_monthly"]

Edit = Callable[[pa.Table], pa.Table]


class EditedSource:
    """The SMALL sample, but ``crsp.msf``'s rows of one year go through ``edit`` when served."""

    name = "sample"

    def __init__(self, edit: Edit, year: int = 2021) -> None:
        self.inner = SampleSource(**SMALL)
        self.edit, self.edit_year = edit, year

    def describe(self, spec: DatasetSpec) -> TableInfo:
        return self.inner.describe(spec)

    def partitions(
        self, spec: DatasetSpec, *, years: Collection[int] | None = None
    ) -> Sequence[PartitionInfo]:
        parts = self.inner.partitions(spec, years=years)
        if spec.name != "crsp.msf":
            return parts
        return [attrs.evolve(p, row_count=None, marker=None) for p in parts]

    def read_partition(
        self, spec: DatasetSpec, year: int | None, *, batch_rows: int = 131_072
    ) -> Iterator[pa.RecordBatch]:
        batches = list(self.inner.read_partition(spec, year, batch_rows=batch_rows))
        if spec.name != "crsp.msf" or year != self.edit_year:
            yield from batches
            return
        table = self.edit(pa.Table.from_batches(batches))
        yield from table.to_batches(batch_rows)

    def close(self) -> None:
        self.inner.close()


def build(root: Path, source: Any = None, **settings: Any) -> wrdsvault.Warehouse:
    """A vault at ``root`` synced from ``source`` (default: the SMALL sample) with ``settings``."""
    wh = wrdsvault.Warehouse(
        root,
        source=source or SampleSource(**SMALL),
        settings=wrdsvault.VaultSettings(**settings),
    )
    wh.sync(DATASETS)
    return wh


def change_first_ret(table: pa.Table) -> pa.Table:
    """The first non-null ``ret`` (numeric(10,6)) one unit higher in its last decimal place."""
    i = table.schema.get_field_index("ret")
    field = table.schema.field(i)
    values = table.column(i).to_pylist()
    first = next(k for k, v in enumerate(values) if v is not None)
    values[first] += Decimal("0.000001")
    return table.set_column(i, field, pa.array(values, field.type))


@pytest.fixture
def two_encodings(tmp_path: Path) -> Iterator[tuple[wrdsvault.Warehouse, wrdsvault.Warehouse]]:
    """The same source synced twice: default settings, and tiny row groups with gzip."""
    a = build(tmp_path / "a")
    b = build(tmp_path / "b", row_group_rows=97, compression="gzip", compression_level=None)
    yield a, b
    a.close()
    b.close()


def test_receipts_are_equal_across_row_group_sizes_and_codecs(
    two_encodings: tuple[wrdsvault.Warehouse, wrdsvault.Warehouse],
) -> None:
    """Two vaults with different files (row groups, codec) give equal digests and row counts."""
    a, b = two_encodings
    with a.snapshot() as sa, b.snapshot() as sb:
        assert sa.fingerprint != sb.fingerprint  # the files really differ ...
        ra, rb = sa.receipt(DATASETS), sb.receipt(DATASETS)
        for name in DATASETS:
            ea, eb = sa.dataset(name), sb.dataset(name)
            assert {p.sha256 for p in ea.partitions}.isdisjoint(p.sha256 for p in eb.partitions)
        assert pq.ParquetFile(sb.files("crsp.msf")[0]).metadata.num_row_groups > 1
    assert [(d.name, d.row_count, d.content_digest) for d in ra.datasets] == [
        (d.name, d.row_count, d.content_digest) for d in rb.datasets
    ]  # ... their rows do not
    assert not any(d.computed for d in ra.datasets)


def test_stored_digest_is_the_digest_of_the_file_on_disk(
    two_encodings: tuple[wrdsvault.Warehouse, wrdsvault.Warehouse],
) -> None:
    """Each partition's manifest digest equals the digest recomputed from its Parquet file."""
    a, _ = two_encodings
    with a.snapshot() as snap:
        for name in DATASETS:
            entry = snap.dataset(name)
            for part, path in zip(entry.partitions, snap.files(name), strict=True):
                assert part.content_digest == file_digest(path, entry.primary_key)


def test_one_changed_value_changes_the_digest_of_that_dataset_only(tmp_path: Path) -> None:
    """One ``ret`` one unit off in the last decimal: crsp.msf's digest differs, the rest not."""
    a = build(tmp_path / "a")
    b = build(tmp_path / "b", EditedSource(change_first_ret))
    ra, rb = a.snapshot().receipt(), b.snapshot().receipt()
    msf_a, msf_b = ra.dataset("crsp.msf"), rb.dataset("crsp.msf")
    assert msf_a is not None and msf_b is not None
    assert msf_a.row_count == msf_b.row_count
    assert msf_a.content_digest != msf_b.content_digest
    assert ra.dataset("ff.factors_monthly") == rb.dataset("ff.factors_monthly")


def test_receipt_names_snapshot_vintage_rows_and_versions(tmp_path: Path) -> None:
    """A receipt holds id, fingerprint, per-dataset comment/marker/rows/digest, and versions."""
    import duckdb

    wh = build(tmp_path / "v")
    wh.tag("paper-v1")
    snap = wh.snapshot("paper-v1")
    r = snap.receipt(["crsp.msf"])
    entry = snap.dataset("crsp.msf")
    assert (r.snapshot_id, r.fingerprint) == (snap.id, snap.fingerprint)
    (d,) = r.datasets
    assert (d.name, d.row_count, d.comment, d.change_marker, d.source) == (
        "crsp.msf",
        entry.row_count,
        entry.comment,
        entry.change_marker,
        "sample",
    )
    assert d.comment and "Updated" in d.comment
    assert r.versions == {
        "wrdsvault": wrdsvault.__version__,
        "duckdb": duckdb.__version__,
        "pyarrow": pa.__version__,
    }
    path = r.save(tmp_path / "results" / "data.json")
    assert wrdsvault.Receipt.load(path) == r
    assert json.loads(path.read_text())["datasets"][0]["content_digest"] == d.content_digest


def test_receipt_of_an_unknown_dataset_is_refused(tmp_path: Path) -> None:
    """Asking for a dataset the snapshot lacks raises UnknownDatasetError naming it."""
    wh = build(tmp_path / "v")
    with pytest.raises(wrdsvault.UnknownDatasetError, match=r"comp\.funda"):
        wh.snapshot().receipt(["comp.funda"])


def test_loading_something_else_as_a_receipt_is_an_invalid_value(tmp_path: Path) -> None:
    """Not JSON, or JSON that is not a receipt: InvalidValueError naming the file."""
    bad = tmp_path / "r.json"
    bad.write_text("{not json")
    with pytest.raises(wrdsvault.InvalidValueError, match=r"r\.json"):
        wrdsvault.Receipt.load(bad)
    bad.write_text('{"datasets": []}')
    with pytest.raises(wrdsvault.InvalidValueError, match="not a wrdsvault receipt"):
        wrdsvault.Receipt.load(bad)


# -- check_receipt ------------------------------------------------------------------------------


def test_check_receipt_against_the_same_vault_matches(tmp_path: Path) -> None:
    """The vault that made the receipt has the snapshot: found, fingerprint and datasets match."""
    wh = build(tmp_path / "v")
    r = wh.snapshot().receipt()
    check = wrdsvault.check_receipt(r, wh)
    assert check.ok and check.snapshot_found and check.fingerprint_match
    assert [d.status for d in check.datasets] == ["match", "match"]


def test_check_receipt_on_another_machine_matches_by_content_digest(
    two_encodings: tuple[wrdsvault.Warehouse, wrdsvault.Warehouse],
) -> None:
    """Another vault without the snapshot: each dataset matched by digest, naming its snapshot."""
    a, b = two_encodings
    r = a.snapshot().receipt()
    check = wrdsvault.check_receipt(r, b)
    assert not check.snapshot_found and check.fingerprint_match is None
    assert check.ok
    assert {d.snapshot_id for d in check.datasets} == {b.snapshot().id}
    assert "not in this vault" in check.summary()


def test_check_receipt_after_a_revision_names_the_dataset_that_differs(tmp_path: Path) -> None:
    """A vault whose crsp.msf has one changed value: crsp.msf differs, ff matches, not ok."""
    a = build(tmp_path / "a")
    b = build(tmp_path / "b", EditedSource(change_first_ret))
    r = a.snapshot().receipt()
    check = wrdsvault.check_receipt(r, b)
    assert not check.ok and check.mismatched == ["crsp.msf"]
    msf = next(d for d in check.datasets if d.name == "crsp.msf")
    assert msf.status == "differs" and msf.expected_rows == msf.actual_rows
    assert "crsp.msf: DIFFERS" in check.summary()


def test_check_receipt_finds_an_older_snapshot_with_equal_content(tmp_path: Path) -> None:
    """The receipt's snapshot was dropped from view: the older snapshot with equal rows matches.

    The vault moves on (crsp.msf dropped); the receipt, taken from a copy of the first
    snapshot's data made elsewhere, still finds the first snapshot by digest.
    """
    wh = build(tmp_path / "v")
    first = wh.snapshot().id
    wh.drop("crsp.msf")
    other = build(tmp_path / "elsewhere", row_group_rows=50)
    r = other.snapshot().receipt(["crsp.msf"])
    (d,) = wrdsvault.check_receipt(r, wh).datasets
    assert (d.status, d.snapshot_id) == ("match", first)


def test_check_receipt_reports_a_dataset_no_snapshot_holds(tmp_path: Path) -> None:
    """A receipt dataset that the vault never held is ``missing``."""
    a = build(tmp_path / "a")
    b = wrdsvault.Warehouse(tmp_path / "b", source=SampleSource(**SMALL))
    b.sync("ff.factors_monthly")
    check = wrdsvault.check_receipt(a.snapshot().receipt(), b)
    assert {d.name: d.status for d in check.datasets} == {
        "crsp.msf": "missing",
        "ff.factors_monthly": "match",
    }


# -- vaults synced before format 3 -------------------------------------------------------------


def _strip_digests(root: Path) -> None:
    """Rewrite every manifest as format 2 wrote it: no content digests, format 2 fingerprint."""
    for path in sorted((root / "snapshots").glob("*.json")):
        obj = json.loads(path.read_bytes())
        obj["format_version"] = 2
        for entry in obj["datasets"].values():
            for part in entry["partitions"]:
                del part["content_digest"]
        content = {
            name: {
                "columns": [[c["name"], c["type"]] for c in e["columns"]],
                "partitions": sorted(
                    [
                        -1 if p["year"] is None else p["year"],
                        *(p["sha256"], p["size_bytes"], p["row_count"], p["path"]),
                    ]
                    for p in e["partitions"]
                ),
            }
            for name, e in obj["datasets"].items()
        }
        obj["fingerprint"] = hashlib.sha256(canonical_json(content)).hexdigest()
        path.write_bytes(canonical_json(obj) + b"\n")


def test_a_format_2_snapshot_gets_its_digest_computed_from_the_files(tmp_path: Path) -> None:
    """Without stored digests the receipt reads the files, says so, and gets the same digest."""
    new = build(tmp_path / "new")
    old = build(tmp_path / "old", row_group_rows=200)
    old.close()
    _strip_digests(tmp_path / "old")
    old = wrdsvault.Warehouse(tmp_path / "old")
    snap = old.snapshot()
    assert snap.manifest.format_version == 2
    assert snap.dataset("crsp.msf").content_digest is None
    r_old, r_new = snap.receipt(), new.snapshot().receipt()
    assert all(d.computed for d in r_old.datasets)
    assert [d.content_digest for d in r_old.datasets] == [d.content_digest for d in r_new.datasets]
    assert wrdsvault.check_receipt(r_new, old).ok


def test_a_resync_fills_in_the_digest_of_an_unchanged_format_2_file(tmp_path: Path) -> None:
    """A full sync of the next vintage over format-2 files records every file's digest.

    Unchanged years keep their format-2 files (same sha256) and gain a digest; the new manifest
    is format 3.
    """
    _ = build(tmp_path / "v")
    _strip_digests(tmp_path / "v")
    wh = wrdsvault.Warehouse(tmp_path / "v", source=SampleSource(**SMALL, vintage=2))
    before = {p.sha256 for p in wh.snapshot().manifest.files()}
    wh.sync(DATASETS, full=True)
    snap = wh.snapshot()
    assert snap.manifest.format_version == wrdsvault.FORMAT_VERSION == 3
    assert all(p.content_digest for p in snap.manifest.files())
    assert before & {p.sha256 for p in snap.manifest.files()}  # some files were kept


# -- the digest itself --------------------------------------------------------------------------

KEY = ("permno", "date")


def _panel() -> pa.Table:
    rows = 30
    return pa.table(
        {
            "permno": pa.array([10000 + i // 3 for i in range(rows)], pa.int32()),
            "date": pa.array([dt.date(2020, 1 + i % 3, 28) for i in range(rows)], pa.date32()),
            "ret": pa.array([None if i % 7 == 0 else i / 100 for i in range(rows)], pa.float64()),
            "ticker": pa.array([None if i % 5 == 0 else f"T{i // 3}" for i in range(rows)]),
        }
    )


def _edit(table: pa.Table, kind: str, i: int, value: float) -> pa.Table:
    i %= table.num_rows
    if kind == "change":
        rets = table.column("ret").to_pylist()
        rets[i] = value if rets[i] != value else value + 1.0
        return table.set_column(2, "ret", pa.array(rets, pa.float64()))
    if kind == "add":
        row = table.slice(i, 1).set_column(0, "permno", pa.array([99999], pa.int32()))
        return pa.concat_tables([table, row])
    if kind == "remove":
        return pa.concat_tables([table.slice(0, i), table.slice(i + 1)])
    raise AssertionError(kind)


@given(
    kind=st.sampled_from(["change", "add", "remove"]),
    i=st.integers(min_value=0, max_value=10_000),
    value=st.floats(allow_nan=False, allow_infinity=False, width=64),
    seed=st.integers(min_value=0, max_value=2**32 - 1),
)
def test_any_edit_changes_the_digest_and_any_reorder_does_not(
    kind: str, i: int, value: float, seed: int
) -> None:
    """Change a value, add or remove a row: the digest changes. Shuffle the rows: it does not."""
    import numpy as np

    table = _panel()
    base = table_digest(table, KEY)
    shuffled = table.take(np.random.default_rng(seed).permutation(table.num_rows))
    assert table_digest(shuffled, KEY) == base
    assert table_digest(shuffled) == table_digest(table)  # without a key: every column sorts
    edited = _edit(table, kind, i, value)
    if kind == "change" and value == 0.0 and table.column("ret")[i % 30].as_py() == 0.0:
        return  # -0.0 over 0.0 is no change (documented)
    assert table_digest(edited, KEY) != base
    assert table_digest(
        edited.take(np.random.default_rng(seed).permutation(edited.num_rows)), KEY
    ) == table_digest(edited, KEY)


def test_digest_equal_values_and_documented_equalities(tmp_path: Path) -> None:
    """int32 = int64, -0.0 = 0.0, NaN = NaN, an instant in any unit or zone; naive != aware."""
    a = pa.table(
        {
            "k": pa.array([1, 2, 3], pa.int32()),
            "x": pa.array([-0.0, float("nan"), 1.5]),
            "t": pa.array([0, 1, 2], pa.timestamp("s", "UTC")),
        }
    )
    b = pa.table(
        {
            "k": pa.array([3, 2, 1], pa.int64()),
            "x": pa.array([1.5, float("-nan"), 0.0]),
            "t": pc.cast(pa.array([2, 1, 0], pa.timestamp("s", "UTC")), pa.timestamp("us", "UTC")),
        }
    )
    assert table_digest(a, ["k"]) == table_digest(b, ["k"])
    naive = a.set_column(2, "t", pa.array([0, 1, 2], pa.timestamp("s")))
    assert table_digest(naive, ["k"]) != table_digest(a, ["k"])
    new_york = a.set_column(2, "t", pa.array([0, 1, 2], pa.timestamp("s", "America/New_York")))
    assert table_digest(new_york, ["k"]) == table_digest(a, ["k"])  # the same instants
    null = a.set_column(1, "x", pa.array([None, float("nan"), 1.5]))
    assert table_digest(null, ["k"]) != table_digest(a, ["k"])
    renamed = a.rename_columns(["k", "y", "t"])
    assert table_digest(renamed, ["k"]) != table_digest(a, ["k"])
    pq.write_table(b, tmp_path / "b.parquet", row_group_size=1, compression="snappy")
    assert file_digest(tmp_path / "b.parquet", ["k"]) == table_digest(a, ["k"])


def test_rows_tied_on_a_duplicate_key_sort_by_their_other_columns() -> None:
    """Two rows with one key but different values: any order gives one digest, a swap differs."""
    t = pa.table({"k": [1, 1, 2], "v": ["b", "a", "c"]})
    assert table_digest(t, ["k"]) == table_digest(t.take([1, 0, 2]), ["k"])
    swapped = pa.table({"k": [1, 2, 1], "v": ["b", "a", "c"]})
    assert table_digest(swapped, ["k"]) != table_digest(t, ["k"])


# -- command line -------------------------------------------------------------------------------


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    from wrdsvault.cli import main

    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_receipt_then_check_receipt_here_and_on_another_vault(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`receipt --snapshot paper-v1` prints JSON; `check-receipt` exits 0 on both vaults."""
    a = build(tmp_path / "a")
    a.tag("paper-v1")
    build(tmp_path / "b", row_group_rows=50, compression="snappy", compression_level=None)
    code, out, err = _cli(
        capsys, "receipt", "--snapshot", "paper-v1", "crsp.msf", "--vault", str(a.root)
    )
    assert (code, err) == (0, "")
    printed = wrdsvault.Receipt.from_json(json.loads(out))
    made = a.snapshot("paper-v1").receipt(["crsp.msf"])
    assert attrs.evolve(printed, created_at="") == attrs.evolve(made, created_at="")
    path = tmp_path / "data-receipt.json"
    path.write_text(out)
    code, out, _ = _cli(capsys, "check-receipt", str(path), "--vault", str(a.root))
    assert code == 0 and out.startswith("receipt matches: snapshot")
    code, out, _ = _cli(capsys, "check-receipt", str(path), "--vault", str(tmp_path / "b"))
    assert code == 0 and "not in this vault" in out and "crsp.msf: match" in out


def test_cli_check_receipt_exits_1_naming_the_dataset_that_differs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Against a vault with one changed value: exit 1, text and --json name crsp.msf."""
    a = build(tmp_path / "a")
    build(tmp_path / "b", EditedSource(change_first_ret))
    path = tmp_path / "r.json"
    assert _cli(capsys, "receipt", "--vault", str(a.root), "-o", str(path))[0] == 0
    code, out, _ = _cli(capsys, "check-receipt", str(path), "--vault", str(tmp_path / "b"))
    assert code == 1
    assert "receipt DOES NOT match" in out and "crsp.msf: DIFFERS" in out
    code, out, _ = _cli(
        capsys, "check-receipt", str(path), "--vault", str(tmp_path / "b"), "--json"
    )
    body = json.loads(out)
    assert code == 1 and body["ok"] is False
    assert {d["name"]: d["status"] for d in body["datasets"]} == {
        "crsp.msf": "differs",
        "ff.factors_monthly": "match",
    }


def test_cli_check_receipt_of_a_bad_file_is_an_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A file that is not a receipt: exit 1 with the reason on stderr."""
    a = build(tmp_path / "a")
    bad = tmp_path / "bad.json"
    bad.write_text("[]")
    code, _, err = _cli(capsys, "check-receipt", str(bad), "--vault", str(a.root))
    assert code == 1 and "not a wrdsvault receipt" in err


@pytest.mark.parametrize("batch_rows", [1, 7, 30])
def test_streamed_digest_does_not_depend_on_where_batches_begin(batch_rows: int) -> None:
    """Rows in key order hashed in batches of any size equal the sorted digest of the file."""
    from wrdsvault._digest import Digester

    table = _panel()  # in key order, with null strings and floats
    digester = Digester(table.schema, KEY)
    for batch in table.to_batches(batch_rows):
        digester.update(batch)
    assert digester.in_order
    shuffled = table.take(list(reversed(range(table.num_rows))))
    assert digester.hexdigest() == table_digest(shuffled, KEY)  # the sorting path


def test_a_stream_out_of_key_order_is_left_to_the_file() -> None:
    """A batch whose key goes back stops the streamed digest (the file is sorted instead)."""
    from wrdsvault._digest import Digester

    table = _panel()
    digester = Digester(table.schema, KEY)
    digester.update(table.slice(10))
    digester.update(table.slice(0, 10))
    assert not digester.in_order
