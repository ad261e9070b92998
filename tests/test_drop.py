"""Library names DuckDB reserves, and `Warehouse.drop` / ``wrdsvault drop`` as the way out.

A dataset named ``main.x`` (or ``pg_catalog.x``, ``temp.x`` ...) used to commit and then leave
every later snapshot unqueryable, since the query connection could not create its schema and
datasets carry forward. Syncs now refuse such names. A vault that already holds one is built here
the way an older wrdsvault built it: the dataset's rows staged and committed by the library's own
writer (the commit protocol a sync uses), only without the name check.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pytest

import wrdsvault
from wrdsvault._query import PinnedConnection, fetch_rows
from wrdsvault._storage.layout import Layout
from wrdsvault._storage.writer import Operation, open_writer, read_head
from wrdsvault.cli import main
from wrdsvault.datasets import BUILTIN_SPECS, RESERVED_LIBRARIES, DatasetSpec
from wrdsvault.manifest import DatasetEntry, Manifest, PartitionFile
from wrdsvault.settings import VaultSettings
from wrdsvault.sources import SampleSource

SOURCE = {"seed": 1, "years": range(2021, 2023), "n_securities": 12}


def plant(root: Path, name: str) -> str:
    """Commit ``name`` (crsp.msf's rows of 2021) into the vault at ``root``; return the snapshot.

    Goes through the real writer: lock, staging, publish, manifest, HEAD.
    """
    layout = Layout(root)
    src = SampleSource(**SOURCE)
    spec = BUILTIN_SPECS["crsp.msf"]
    info = src.describe(spec)
    with open_writer(layout, VaultSettings(), operation=Operation("sync", name), timeout_s=0) as w:
        head_id = read_head(layout)
        assert head_id is not None
        head = Manifest.from_json(layout.manifest(head_id).read_bytes(), where="test")
        staged = w.stage_partition(name, 2021, info.schema, src.read_partition(spec, 2021))
        msf = head.datasets["crsp.msf"]
        entry = DatasetEntry(
            name=name,
            partition_column="date",
            primary_key=("permno", "date"),
            columns=msf.columns,
            partitions=(
                PartitionFile(
                    year=2021,
                    path=layout.partition_relpath(name, 2021, staged.sha256),
                    sha256=staged.sha256,
                    size_bytes=staged.size_bytes,
                    row_count=staged.row_count,
                ),
            ),
            source="planted",
        )
        return w.commit(head, {**head.datasets, name: entry}).snapshot_id


@pytest.fixture
def stuck(tmp_path: Path) -> Iterator[tuple[wrdsvault.Warehouse, str]]:
    """A vault with crsp.msf and ``main.x`` in its latest snapshot; yields it and that id."""
    root = tmp_path / "vault"
    with wrdsvault.Warehouse(root, source=SampleSource(**SOURCE)) as wh:
        wh.sync("crsp.msf")
    planted = plant(root, "main.x")
    with wrdsvault.Warehouse(root, source=SampleSource(**SOURCE)) as wh:
        yield wh, planted


@pytest.mark.parametrize("library", sorted(RESERVED_LIBRARIES))
def test_sync_refuses_a_library_name_duckdb_reserves(tmp_path: Path, library: str) -> None:
    """A sync of ``<reserved>.x`` raises InvalidNameError naming DuckDB, before writing anything."""
    root = tmp_path / "vault"
    with wrdsvault.Warehouse(root, source=SampleSource(**SOURCE)) as wh:
        for date_column in ("date", "auto", None):
            with pytest.raises(wrdsvault.InvalidNameError, match="DuckDB") as info:
                wh.sync(f"{library}.msf", date_column=date_column)
            assert info.value.value == f"{library}.msf"
        with pytest.raises(wrdsvault.InvalidNameError, match="DuckDB"):
            wh.sync(f"{library}.msf")  # no built-in spec: the name is still what is wrong
        assert read_head(Layout(root)) is None
        assert not (root / "data").exists()
    with pytest.raises(wrdsvault.InvalidNameError):
        DatasetSpec(name=f"{library}.msf", partition_column="date")


def test_reserved_names_cover_every_catalog_and_schema_of_a_query_connection() -> None:
    """Every catalog and schema name a query connection starts with is in RESERVED_LIBRARIES."""
    con = PinnedConnection({})
    try:
        databases = con.run("select database_name from duckdb_databases()", None, None, fetch_rows)
        schemas = con.run("select schema_name from duckdb_schemas()", None, None, fetch_rows)
    finally:
        con.close()
    held = {row[0] for row in databases} | {row[0] for row in schemas}
    assert {"main", "memory", "system", "temp"} <= held  # the query really listed them
    assert held <= RESERVED_LIBRARIES


def test_a_snapshot_holding_a_reserved_library_still_answers_for_the_rest(
    stuck: tuple[wrdsvault.Warehouse, str],
) -> None:
    """The other datasets stay queryable; a query of main.x says to drop it; verify is clean."""
    wh, planted = stuck
    with wh.snapshot() as snap:
        assert snap.id == planted
        assert snap.datasets == ("crsp.msf", "main.x")
        n = snap.query("select count(*) as n from crsp.msf")["n"][0]
        assert n == snap.dataset("crsp.msf").row_count > 0
        with pytest.raises(wrdsvault.QueryError, match=r"wrdsvault drop main\.x"):
            snap.query("select count(*) from main.x")
        assert len(snap.files("main.x")) == 1
    assert wh.query("select count(*) as n from crsp.msf")["n"][0] == n
    assert wh.verify().ok


def test_drop_commits_a_snapshot_without_the_dataset(
    stuck: tuple[wrdsvault.Warehouse, str],
) -> None:
    """drop() commits a child snapshot without main.x; the older one and its files stay."""
    wh, planted = stuck
    files = wh.snapshot(planted).files("main.x")
    new_id = wh.drop("main.x")
    assert read_head(Layout(wh.root)) == new_id
    with wh.snapshot() as snap:
        assert snap.id == new_id
        assert snap.manifest.parent == planted
        assert snap.datasets == ("crsp.msf",)
        assert snap.fingerprint != wh.snapshot(planted).fingerprint
    with wh.snapshot(planted) as old:
        assert old.datasets == ("crsp.msf", "main.x")
        assert old.files("main.x") == files
        assert all(f.is_file() for f in files)
    assert wh.verify(all_snapshots=True).ok
    assert wh.doctor().ok
    wh.sync("crsp.msf", years=[2022], full=True)  # the vault takes syncs again
    assert wh.query("select count(*) as n from crsp.msf")["n"][0] > 0


def test_drop_refuses_what_the_latest_snapshot_does_not_hold(
    stuck: tuple[wrdsvault.Warehouse, str],
) -> None:
    """Unknown names, an empty list and repeats commit nothing."""
    wh, planted = stuck
    with pytest.raises(wrdsvault.UnknownDatasetError, match="nothing was dropped"):
        wh.drop(["main.x", "crsp.dsf"])
    with pytest.raises(wrdsvault.InvalidNameError):
        wh.drop([])
    with pytest.raises(wrdsvault.InvalidNameError):
        wh.drop(["main.x", "main.x"])
    with pytest.raises(wrdsvault.InvalidNameError):
        wh.drop("Main.X")
    assert read_head(Layout(wh.root)) == planted
    assert [s.snapshot_id for s in wh.snapshots()][-1] == planted


def test_drop_waits_for_the_writer_lock(stuck: tuple[wrdsvault.Warehouse, str]) -> None:
    """drop() takes the writer lock: while another writer holds it, LockHeldError, no commit."""
    wh, planted = stuck
    with (
        open_writer(
            Layout(wh.root), VaultSettings(), operation=Operation("sync", "other"), timeout_s=0
        ),
        pytest.raises(wrdsvault.LockHeldError),
    ):
        wh.drop("main.x")
    assert read_head(Layout(wh.root)) == planted


def test_cli_drop_asks_and_drops(
    stuck: tuple[wrdsvault.Warehouse, str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``wrdsvault drop`` refuses without a terminal or --yes, asks on a terminal, drops."""
    wh, planted = stuck
    vault = ["--vault", str(wh.root)]
    monkeypatch.setattr("sys.stdin", io.StringIO("y\n"))  # not a terminal
    assert main(["drop", "main.x", *vault]) == 1
    assert "--yes" in capsys.readouterr().err
    assert read_head(Layout(wh.root)) == planted

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr("sys.stdin", Terminal("n\n"))
    assert main(["drop", "main.x", *vault]) == 1
    out = capsys.readouterr().out
    assert "main.x" in out and "older snapshots keep" in out.lower()
    assert read_head(Layout(wh.root)) == planted

    monkeypatch.setattr("sys.stdin", Terminal("y\n"))
    assert main(["drop", "main.x", *vault]) == 0
    dropped = read_head(Layout(wh.root))
    assert dropped != planted
    assert dropped in capsys.readouterr().out

    assert main(["drop", "crsp.msf", "--yes", "--json", *vault]) == 0
    out = capsys.readouterr().out
    head = read_head(Layout(wh.root))
    assert head is not None and head in out and '"crsp.msf"' in out
    assert wh.snapshot().datasets == ()

    assert main(["drop", "crsp.msf", "--yes", *vault]) == 1  # no longer held
    assert "unknown dataset" in capsys.readouterr().err


def test_sync_carries_a_planted_dataset_forward_and_stays_queryable(
    stuck: tuple[wrdsvault.Warehouse, str],
) -> None:
    """A sync on a vault stuck that way commits, and its snapshot answers for crsp.msf."""
    wh, _ = stuck
    wh.sync("crsp.msf", years=[2022], full=True)
    table = wh.arrow("select * from crsp.msf limit 0")
    assert isinstance(table, pa.Table)
    assert "permno" in table.column_names
