"""The Iceberg export: pyiceberg itself reads every exported snapshot, tag and time back.

Real vaults (SampleSource), a real SQLite catalog, real pyiceberg scans of the vault's own files;
gc runs for real against the export record. DuckDB's ``iceberg_scan`` is not tested: its
extension is downloaded at run time, which this machine cannot do.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("pyiceberg.catalog.sql")

from pyiceberg.catalog import Catalog as IcebergCatalog
from pyiceberg.catalog import load_catalog
from pyiceberg.table import Table

from _helpers.cli import run
from _helpers.sources import Wrapping
from wrdsvault import (
    IcebergExportError,
    MissingExtraError,
    VaultFormatError,
    Warehouse,
)
from wrdsvault._optional import require
from wrdsvault.sources import SampleSource

DATASETS = ["crsp.msf", "comp.funda", "ff.factors_monthly", "crsp.ccmxpf_lnkhist"]
YEARS = range(2020, 2023)


def _source(vintage: int) -> SampleSource:
    return SampleSource(years=YEARS, n_securities=20, vintage=vintage)


@pytest.fixture
def wh(tmp_path: Path) -> Iterator[Warehouse]:
    """A vault with two snapshots (vintage 1 tagged v1, vintage 2 tagged paper)."""
    vault = Warehouse(tmp_path / "vault", source=_source(1))
    vault.sync(DATASETS)
    vault.tag("v1")
    vault.source = _source(2)
    vault.sync(DATASETS)
    vault.tag("paper")
    yield vault
    vault.close()


def _catalog(wh: Warehouse) -> IcebergCatalog:
    """The default catalog, opened by pyiceberg alone (as any other reader would)."""
    root = wh.root
    return load_catalog(
        "wrdsvault",
        uri=f"sqlite:///{root.parent / (root.name + '-iceberg.db')}",
        warehouse=(root.parent / (root.name + "-iceberg")).as_uri(),
    )


def _canonical(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(rows, key=lambda r: json.dumps(r, default=repr, sort_keys=True))


def _vault_rows(wh: Warehouse, ref: str, dataset: str) -> list[dict[str, Any]]:
    with wh.snapshot(ref) as snap:
        return _canonical(snap.arrow(f"SELECT * FROM {dataset}").to_pylist())


def _iceberg_rows(table: Table, snapshot_id: int) -> list[dict[str, Any]]:
    return _canonical(table.scan(snapshot_id=snapshot_id).to_arrow().to_pylist())


def _vault_ids(table: Table) -> dict[int, str]:
    return {s.snapshot_id: str(s.summary["wrdsvault.snapshot-id"]) for s in table.snapshots()}


def test_every_snapshot_tag_and_time_reads_back_value_for_value(wh: Warehouse) -> None:
    """pyiceberg reads each vault snapshot (by time and by tag) with the vault's exact values."""
    report = wh.export_iceberg()
    ice = _catalog(wh)
    snaps = wh.snapshots()
    assert report.tables == {d: f"wrds.{d.replace('.', '_')}" for d in DATASETS}
    for dataset in DATASETS:
        table = ice.load_table(report.tables[dataset])
        for info in snaps:
            at_ms = int(info.committed_at.timestamp() * 1000)
            ice_snap = table.snapshot_as_of_timestamp(at_ms)
            assert ice_snap is not None
            assert _vault_ids(table)[ice_snap.snapshot_id] <= info.snapshot_id
            expected = _vault_rows(wh, info.snapshot_id, dataset)
            got = _iceberg_rows(table, ice_snap.snapshot_id)
            assert got == expected, f"{dataset} as of {info.snapshot_id}"
        for tag in ("v1", "paper"):
            ref = table.snapshot_by_name(tag)
            assert ref is not None, f"{dataset} lacks tag {tag}"
            assert _iceberg_rows(table, ref.snapshot_id) == _vault_rows(wh, tag, dataset)
    # The values keep their kinds: decimals, dates, integer ids and text.
    msf = ice.load_table("wrds.crsp_msf")
    row = msf.scan(snapshot_id=msf.snapshot_by_name("v1").snapshot_id).to_arrow().slice(0, 1)
    first = row.to_pylist()[0]
    assert type(first["prc"]).__name__ == "Decimal"
    assert type(first["date"]).__name__ == "date"
    assert isinstance(first["permno"], int) and isinstance(first["cusip"], str)


def test_the_tables_name_the_vaults_own_files_and_valid_metadata(wh: Warehouse) -> None:
    """No data file is copied; partitions are years; timestamps and metadata are in order."""
    wh.export_iceberg()
    ice = _catalog(wh)
    metadata_dir = wh.root.parent / (wh.root.name + "-iceberg")
    assert not list(metadata_dir.rglob("*.parquet")), "the export must not write data files"
    latest = wh.snapshot()
    for dataset in DATASETS:
        table = ice.load_table(f"wrds.{dataset.replace('.', '_')}")
        vault_files = {(wh.root / p.path).as_uri() for p in latest.dataset(dataset).partitions}
        files = {t.file.file_path for t in table.scan().plan_files()}
        assert files == vault_files
        partitioned = latest.dataset(dataset).partition_column is not None
        assert len(table.spec().fields) == (1 if partitioned else 0)
        if partitioned:
            assert str(table.spec().fields[0].transform) == "year"
        assert table.properties["schema.name-mapping.default"]
        # Iceberg readers (the Java library) refuse metadata whose update time goes back.
        meta = table.metadata
        stamps = [e.timestamp_ms for e in meta.metadata_log] + [meta.last_updated_ms]
        assert stamps == sorted(stamps)
        log = [e.timestamp_ms for e in meta.snapshot_log]
        assert log == sorted(log) and log[-1] <= meta.last_updated_ms
    latest.close()


def test_a_later_export_adds_only_new_snapshots_and_tags(tmp_path: Path) -> None:
    """The second export keeps the first one's snapshots and adds only what is new."""
    wh = Warehouse(tmp_path / "vault", source=_source(1))
    wh.sync(DATASETS)
    wh.tag("v1")
    first = wh.export_iceberg()
    assert all(len(ids) == 1 for ids in first.added.values())
    ice = _catalog(wh)
    before = {d: _vault_ids(ice.load_table(t)) for d, t in first.tables.items()}
    wh.source = _source(2)
    wh.sync(DATASETS)
    wh.tag("paper")
    second = wh.export_iceberg()
    new_id = wh.snapshots()[-1].snapshot_id
    changed = {d for d, ids in second.added.items() if ids == (new_id,)}
    assert changed == set(second.added), "only the new snapshot is added"
    assert "crsp.msf" in changed  # vintage 2 changes it
    for dataset, table_name in second.tables.items():
        ids = _vault_ids(ice.load_table(table_name))
        assert before[dataset].items() <= ids.items(), "earlier snapshots stay as they were"
        assert second.tags[dataset] == ("paper",)
    third = wh.export_iceberg()
    assert third.added == {} and third.tags == {} and third.removed_tags == {}
    wh.untag("paper")
    fourth = wh.export_iceberg()
    assert set(fourth.removed_tags) == set(DATASETS)
    assert ice.load_table("wrds.crsp_msf").snapshot_by_name("paper") is None
    wh.close()


def test_a_dropped_dataset_empties_its_table_and_a_new_sync_fills_it(tmp_path: Path) -> None:
    """Dropping a dataset is an Iceberg snapshot without files; syncing it again adds them."""
    wh = Warehouse(tmp_path / "vault", source=_source(1))
    wh.sync(["crsp.msf", "ff.factors_monthly"])
    wh.drop("ff.factors_monthly")
    wh.sync("ff.factors_monthly")
    report = wh.export_iceberg()
    table = _catalog(wh).load_table(report.tables["ff.factors_monthly"])
    first, dropped, back = (s.snapshot_id for s in wh.snapshots())
    assert report.added["ff.factors_monthly"] == (first, dropped, back)
    assert report.added["crsp.msf"] == (first,)
    ids = {v: k for k, v in _vault_ids(table).items()}
    assert _iceberg_rows(table, ids[dropped]) == []
    assert _iceberg_rows(table, ids[back]) == _vault_rows(wh, back, "ff.factors_monthly")
    assert _iceberg_rows(table, ids[first]) == _vault_rows(wh, first, "ff.factors_monthly")
    wh.close()


def test_gc_keeps_what_the_export_names_until_the_export_lets_go(wh: Warehouse) -> None:
    """gc keeps exported snapshots; after Iceberg expired one and the export ran, gc frees it."""
    wh.untag("v1")
    wh.untag("paper")
    report = wh.export_iceberg()
    old = wh.snapshots()[0].snapshot_id
    assert old in report.held
    plan = wh.gc(keep_last=1, dry_run=True)
    kept = {k.snapshot_id: k.reasons for k in plan.kept}
    assert old in kept and any(r.startswith("iceberg-export ") for r in kept[old])
    done = wh.gc(keep_last=1)
    assert done.expired == () and done.deleted_files == ()
    ice = _catalog(wh)
    msf = ice.load_table("wrds.crsp_msf")
    first = {v: k for k, v in _vault_ids(msf).items()}[old]
    assert _iceberg_rows(msf, first) == _vault_rows(wh, old, "crsp.msf")  # files still there
    # Expire the old snapshots on the Iceberg side, export again: the record lets go of them.
    for table_name in report.tables.values():
        table = ice.load_table(table_name)
        current = table.current_snapshot()
        assert current is not None
        for snap in table.snapshots():
            if snap.snapshot_id != current.snapshot_id:
                table.maintenance.expire_snapshots().by_id(snap.snapshot_id).commit()
    again = wh.export_iceberg()
    assert old not in again.held
    freed = wh.gc(keep_last=1)
    assert freed.expired == (old,) and freed.deleted_files


def test_forgetting_the_export_lets_gc_expire_its_snapshots(wh: Warehouse) -> None:
    """Removing the export record (`forget_iceberg_export`) ends gc's protection."""
    wh.untag("v1")
    wh.untag("paper")
    wh.export_iceberg()
    assert [r.namespace for r in wh.iceberg_exports()] == ["wrds"]
    assert wh.forget_iceberg_export() is True
    assert wh.iceberg_exports() == []
    assert wh.gc(keep_last=1).expired == (wh.expired()[0].snapshot_id,)


def test_an_export_after_gc_took_its_last_recorded_snapshot_goes_on(wh: Warehouse) -> None:
    """With the record forgotten and gc done, the next export reads the table's own state."""
    wh.untag("v1")
    wh.untag("paper")
    wh.export_iceberg()
    wh.source = _source(2)
    wh.sync("crsp.msenames")  # a third snapshot that leaves the exported datasets as they are
    wh.forget_iceberg_export()
    assert len(wh.gc(keep_last=1).expired) == 2
    again = wh.export_iceberg()
    assert set(again.added) == {"crsp.msenames"}
    latest = wh.snapshots()[-1].snapshot_id
    msf = _catalog(wh).load_table("wrds.crsp_msf")
    current = msf.current_snapshot()
    assert current is not None
    assert _iceberg_rows(msf, current.snapshot_id) == _vault_rows(wh, latest, "crsp.msf")


def test_a_damaged_export_record_stops_gc(wh: Warehouse) -> None:
    """gc refuses to guess what a damaged export record protects."""
    report = wh.export_iceberg()
    (wh.root / report.record).write_text("{not json")
    with pytest.raises(VaultFormatError, match="export record"):
        wh.gc(keep_last=1)


def test_a_column_added_later_evolves_the_schema(tmp_path: Path) -> None:
    """A column added by a later vault snapshot evolves the table; both schemas read back."""

    class Extra(Wrapping):
        def describe(self, spec: Any) -> Any:
            import attrs
            import pyarrow as pa

            info = self.inner.describe(spec)
            schema = info.schema.append(pa.field("note", pa.string()))
            return attrs.evolve(info, schema=schema, change_marker=f"{info.change_marker}+note")

        def read_partition(self, spec: Any, year: int | None, *, batch_rows: int = 131_072) -> Any:
            import pyarrow as pa

            for batch in self.inner.read_partition(spec, year, batch_rows=batch_rows):
                note = pa.array([f"y{year}"] * batch.num_rows, pa.string())
                names = [*batch.schema.names, "note"]
                yield pa.RecordBatch.from_arrays([*batch.columns, note], names)

    wh = Warehouse(tmp_path / "vault", source=_source(1))
    wh.sync("ff.factors_monthly")
    wh.source = Extra(_source(1))
    wh.sync("ff.factors_monthly", drift="additive", full=True)
    report = wh.export_iceberg()
    assert len(report.added["ff.factors_monthly"]) == 2
    table = _catalog(wh).load_table("wrds.ff_factors_monthly")
    assert "note" in table.schema().column_names
    old, new = (s.snapshot_id for s in wh.snapshots())
    ids = {v: k for k, v in _vault_ids(table).items()}
    got_new = _iceberg_rows(table, ids[new])
    assert got_new == _vault_rows(wh, new, "ff.factors_monthly")
    # pyiceberg reads a snapshot with the schema it was written with: no "note" column then.
    assert _iceberg_rows(table, ids[old]) == _vault_rows(wh, old, "ff.factors_monthly")
    wh.close()


class Reshaped(Wrapping):
    """The inner source with columns dropped and retyped (a vintage whose layout changed)."""

    def __init__(self, inner: SampleSource, *, drop: str, cast: dict[str, Any]) -> None:
        super().__init__(inner)
        self.drop, self.cast = drop, cast

    def _schema(self, schema: Any) -> Any:
        import pyarrow as pa

        fields = [
            pa.field(f.name, self.cast.get(f.name, f.type)) for f in schema if f.name != self.drop
        ]
        return pa.schema(fields)

    def describe(self, spec: Any) -> Any:
        import attrs

        info = self.inner.describe(spec)
        marker = f"{info.change_marker}-{self.drop}-{sorted(self.cast)}"
        return attrs.evolve(info, schema=self._schema(info.schema), change_marker=marker)

    def read_partition(self, spec: Any, year: int | None, *, batch_rows: int = 131_072) -> Any:
        for batch in self.inner.read_partition(spec, year, batch_rows=batch_rows):
            table = batch.drop_columns([self.drop])
            yield table.cast(self._schema(batch.schema))


def test_a_dropped_column_evolves_and_an_impossible_type_change_is_refused(
    tmp_path: Path,
) -> None:
    """A dropped column is deleted from the schema (older snapshots keep it); a column that
    turns from a number into text cannot evolve in Iceberg and the export says so."""
    import pyarrow as pa

    wh = Warehouse(tmp_path / "vault", source=_source(1))
    wh.sync("ff.factors_monthly")
    wh.source = Reshaped(_source(1), drop="umd", cast={})
    wh.sync("ff.factors_monthly", drift="accept", full=True)
    report = wh.export_iceberg()
    table = _catalog(wh).load_table(report.tables["ff.factors_monthly"])
    assert "umd" not in table.schema().column_names
    ids = {v: k for k, v in _vault_ids(table).items()}
    for info in wh.snapshots():
        rows = _iceberg_rows(table, ids[info.snapshot_id])
        assert rows == _vault_rows(wh, info.snapshot_id, "ff.factors_monthly")
    wh.source = Reshaped(_source(1), drop="umd", cast={"rf": pa.string()})
    wh.sync("ff.factors_monthly", drift="accept", full=True)
    with pytest.raises(IcebergExportError, match="cannot evolve") as err:
        wh.export_iceberg()
    assert err.value.dataset == "ff.factors_monthly"
    table = _catalog(wh).load_table(report.tables["ff.factors_monthly"])
    assert len(table.snapshots()) == 2, "the refused snapshot is not half-exported"
    wh.close()


def test_a_table_of_another_vault_is_refused(wh: Warehouse, tmp_path: Path) -> None:
    """Exporting a second vault into the first one's tables is refused, and changes nothing."""
    wh.export_iceberg()
    root = wh.root
    uri = f"sqlite:///{root.parent / (root.name + '-iceberg.db')}"
    other = Warehouse(tmp_path / "other", source=_source(1))
    other.sync("crsp.msf")
    with pytest.raises(IcebergExportError, match="does not have") as err:
        other.export_iceberg(
            {"uri": uri, "warehouse": (root.parent / (root.name + "-iceberg")).as_uri()}
        )
    assert err.value.dataset == "crsp.msf"
    assert other.iceberg_exports() == []
    other.close()


def test_the_cli_exports_and_forgets(
    wh: Warehouse, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`wrdsvault export-iceberg --catalog URI --json` exports; `--forget` removes the record."""
    uri = f"sqlite:///{tmp_path / 'cli-iceberg.db'}"
    vault = ["--vault", str(wh.root), "--catalog", uri]
    code, out, _ = run(capsys, "export-iceberg", *vault, "--json")
    assert code == 0
    report = json.loads(out)
    assert set(report["tables"]) == set(DATASETS) and len(report["held"]) == 2
    code, out, _ = run(capsys, "export-iceberg", *vault, "--forget")
    assert code == 0 and "removed" in out


def test_a_missing_extra_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without pyiceberg, the error is an ImportError that says which extra to install."""
    monkeypatch.setitem(__import__("sys").modules, "pyiceberg.catalog", None)
    with pytest.raises(MissingExtraError) as err:
        require("pyiceberg.catalog", "iceberg")
    assert isinstance(err.value, ImportError)
    assert "pip install 'wrdsvault[iceberg]'" in str(err.value)
    assert err.value.extra == "iceberg"
