"""Which columns the vault's Parquet files dictionary-encode.

A column whose dictionary would outgrow pyarrow's dictionary page limit within the first row
group is written plain from its first page instead of being dictionary-encoded until the writer
gives up (wasted work, tens of MB held, a larger mixed chunk). Checked on real files written by
the library's own writer: the chosen encodings in the file's metadata, the values read back, the
same bytes for the same rows.
"""

from __future__ import annotations

import random
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import wrdsvault
from wrdsvault._storage.encoding import DICTIONARY_LIMIT, dictionary_columns
from wrdsvault._storage.layout import Layout
from wrdsvault._storage.writer import Operation, open_writer
from wrdsvault.settings import VaultSettings

ROWS = 200_000


def many_distinct(rows: int = ROWS) -> pa.Table:
    """Two columns with a distinct value on every row (8-byte floats, 12-byte strings), two with
    few, and a 4-byte column that cannot reach the limit in a group of this size."""
    return pa.table(
        {
            "id": pa.array([f"id{i:010d}" for i in range(rows)]),
            "ret": pa.array([i / 7 for i in range(rows)], pa.float64()),
            "exchange": pa.array([("N", "A", "Q")[i % 3] for i in range(rows)]),
            "shrout": pa.array([float(i % 50) for i in range(rows)], pa.float64()),
            "day": pa.array(list(range(rows)), pa.int32()),
        }
    )


def encodings(path: Path) -> dict[str, set[str]]:
    meta = pq.ParquetFile(path).metadata
    out: dict[str, set[str]] = {}
    for g in range(meta.num_row_groups):
        for c in range(meta.num_columns):
            col = meta.row_group(g).column(c)
            out.setdefault(col.path_in_schema, set()).update(col.encodings)
    return out


def dictionary(found: set[str]) -> bool:
    return bool(found & {"PLAIN_DICTIONARY", "RLE_DICTIONARY"})


def test_columns_that_would_outgrow_the_dictionary_are_left_out() -> None:
    assert dictionary_columns(many_distinct()) == ["exchange", "shrout", "day"]


def test_values_that_repeat_across_the_group_keep_their_dictionary() -> None:
    """Prices drawn from 40,000 values come back all over the group (640 KB of dictionary as
    16-byte numeric(38,5), under the limit): a sample sees most of them more than once, so the
    estimate stays near 40,000; 200,000 distinct returns are written plain."""
    rows = 200_000
    draw = random.Random(7)  # noqa: S311  # test data, not a secret
    prices = [Decimal(f"{draw.randrange(40_000)}.25") for _ in range(rows)]
    table = pa.table(
        {
            "prc": pa.array(prices, pa.decimal128(38, 5)),
            "ret": pa.array([Decimal(i) / 1_000_000 for i in range(rows)], pa.decimal128(38, 6)),
        }
    )
    assert dictionary_columns(table) == ["prc"]


def test_other_types_keep_the_default_or_are_estimated() -> None:
    """Types the vault's sources do not send still get an answer: null, dictionary, large and
    boolean types keep pyarrow's default; fixed binaries and timestamps are estimated at their
    width in the file."""
    rows = 200_000
    table = pa.table(
        {
            "odd": pa.array([i.to_bytes(5, "little") for i in range(rows)], pa.binary(5)),
            "wide": pa.array([i.to_bytes(16, "little") for i in range(rows)], pa.binary(16)),
            "ts": pa.array(range(rows), pa.timestamp("us", tz="UTC")),
            "none": pa.nulls(rows),
            "coded": pa.array([str(i) for i in range(rows)]).dictionary_encode(),
            "large": pa.array([str(i) * 3 for i in range(rows)], pa.large_string()),
            "flag": pa.array([i % 2 == 0 for i in range(rows)]),
        }
    )
    # 200,000 distinct 5-byte values are 1,000,000 bytes: under the 1 MiB limit.
    assert dictionary_columns(table) == ["odd", "none", "coded", "large", "flag"]


def test_a_table_with_a_nested_column_keeps_the_default() -> None:
    """pyarrow takes leaf paths (``l.list.element``) in the list of dictionary columns, so naming
    the others would silently turn the nested column's dictionary off."""
    rows = 200_000
    table = pa.table(
        {
            "ret": pa.array([i / 7 for i in range(rows)], pa.float64()),
            "nested": pa.array([[i % 5] for i in range(rows)]),
        }
    )
    assert dictionary_columns(table) is True


def test_decimals_are_measured_at_their_width_in_the_file() -> None:
    """A numeric(10,6) is 5 bytes in a dictionary page (Arrow holds 16): 150,000 distinct
    returns fit (750 KB), while the same values as numeric(38,6) (16 bytes) do not."""
    rows = 150_000
    values = [Decimal(i) / 1_000_000 for i in range(rows)]
    table = pa.table(
        {
            "narrow": pa.array(values, pa.decimal128(10, 6)),
            "wide": pa.array(values, pa.decimal128(38, 6)),
        }
    )
    assert dictionary_columns(table) == ["narrow"]


def test_a_group_within_the_sample_is_counted_exactly(root: Path, tmp_path: Path) -> None:
    """32,000 rows are all sampled: 24,000 distinct 36-byte strings (960 KB with their length
    prefixes) stay under the limit, and the file keeps their dictionary."""
    rows = 32_000
    table = pa.table({"name": pa.array([f"{i % 24_000:036d}" for i in range(rows)])})
    assert dictionary_columns(table) is True
    _path, _sha, data = stage(root, table, VaultSettings())
    copy = tmp_path / "names.parquet"
    copy.write_bytes(data)
    assert dictionary(encodings(copy)["name"])


def test_periodic_nulls_do_not_hide_a_column(tmp_path: Path) -> None:
    """The sample is spread without a period: a column null on every third row is still seen
    (a stride of 9 would have sampled only its nulls)."""
    rows = 294_912  # 9 x 32,768
    table = pa.table({"id": pa.array([None if i % 3 == 0 else f"id{i:010d}" for i in range(rows)])})
    assert dictionary_columns(table) == []


def test_a_small_table_keeps_the_default() -> None:
    # 20,000 distinct floats are 160 KB of dictionary: under the limit, nothing to decide.
    assert DICTIONARY_LIMIT > 20_000 * 8
    assert dictionary_columns(many_distinct(20_000)) is True
    assert dictionary_columns(many_distinct(0)) is True


def test_nulls_add_nothing_to_a_dictionary() -> None:
    # 150,000 distinct non-null floats (1.2 MB of dictionary) over 200,000 rows, and a column
    # of nulls only.
    rows = 200_000
    table = pa.table(
        {
            "vol": pa.array([None if i % 4 == 0 else float(i) for i in range(rows)]),
            "flag": pa.array([None] * rows, pa.float64()),
        }
    )
    assert dictionary_columns(table) == ["flag"]


def stage(root: Path, table: pa.Table, settings: VaultSettings) -> tuple[Path, str, bytes]:
    """Write ``table`` as one partition with the library's writer; the file's path, sha256 and
    bytes (read before the writer, which commits nothing here, removes its staging folder)."""
    with open_writer(
        Layout(root), settings, operation=Operation("sync", "lab.t"), timeout_s=0
    ) as w:
        staged = w.stage_partition("lab.t", 2021, table.schema, table.to_batches(30_000))
        return staged.path, staged.sha256, staged.path.read_bytes()


@pytest.fixture
def root(tmp_path: Path) -> Path:
    wrdsvault.Warehouse(tmp_path / "v", create=True).close()
    return tmp_path / "v"


def test_the_writer_writes_those_columns_plain_and_the_rest_with_a_dictionary(
    root: Path, tmp_path: Path
) -> None:
    table = many_distinct()
    settings = VaultSettings(row_group_rows=150_000)  # two row groups, decided by the first
    _path, sha, data = stage(root, table, settings)
    copy = tmp_path / "copy.parquet"
    copy.write_bytes(data)
    found = encodings(copy)
    assert pq.ParquetFile(copy).metadata.num_row_groups == 2
    assert not dictionary(found["id"]) and not dictionary(found["ret"])
    assert dictionary(found["exchange"]) and dictionary(found["shrout"])
    assert dictionary(found["day"])
    assert pq.read_table(copy).equals(table)
    # The same rows give the same bytes (a re-read year is recognised by its hash).
    assert stage(root, table, settings)[1] == sha


def test_the_choice_follows_the_row_group_size(root: Path, tmp_path: Path) -> None:
    # 65,536 distinct floats are 512 KB of dictionary per group: under the limit, so ``ret``
    # keeps its dictionary; 65,536 12-character strings with their length prefixes reach it.
    _path, _sha, data = stage(root, many_distinct(), VaultSettings(row_group_rows=65_536))
    copy = tmp_path / "small-groups.parquet"
    copy.write_bytes(data)
    found = encodings(copy)
    assert dictionary(found["ret"]) and not dictionary(found["id"])


def test_pyarrows_default_falls_back_mid_chunk_on_the_same_rows(tmp_path: Path) -> None:
    """What the choice avoids: the default writer starts ``ret`` with a dictionary and gives up
    within the chunk, leaving dictionary and plain pages in one column chunk."""
    table = many_distinct()
    pq.write_table(table, tmp_path / "default.parquet", row_group_size=ROWS)
    found = encodings(tmp_path / "default.parquet")
    assert dictionary(found["ret"]) and "PLAIN" in found["ret"]


def test_an_empty_partition_is_a_file_without_row_groups(root: Path, tmp_path: Path) -> None:
    table = many_distinct(0)
    _path, _sha, data = stage(root, table, VaultSettings())
    copy = tmp_path / "empty.parquet"
    copy.write_bytes(data)
    assert pq.ParquetFile(copy).metadata.num_row_groups == 0
    assert pq.read_table(copy).schema.equals(table.schema)


def test_choosing_loads_no_pandas(tmp_path: Path) -> None:
    """A sync that writes never imports pandas (~0.15 s and ~25 MB in its process): the choice
    reads the sample without pyarrow's pandas-aware constructors. Checked in a fresh process
    on a group with a wide text column and wide numeric columns, where every estimate runs."""
    path = tmp_path / "group.arrow"
    table = many_distinct()
    with pa.ipc.new_file(path, table.schema) as out:
        out.write_table(table)
    code = f"""
import sys
import pyarrow as pa
from wrdsvault._storage.encoding import dictionary_columns
table = pa.ipc.open_file({str(path)!r}).read_all()
assert "pandas" not in sys.modules, "reading the file loaded pandas"
print(dictionary_columns(table))
print("pandas" in sys.modules)
"""
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split("\n")[:2] == ["['exchange', 'shrout', 'day']", "False"]
