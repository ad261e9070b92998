"""Crash safety of the Iceberg export against gc: real processes, SIGKILL at every step.

A child process exports a vault of two snapshots (the first one untagged) into a fresh SQLite
catalog and is killed with SIGKILL at every `ExportPoint` (and at the second table commit). In the
parent, ``gc(keep_last=1)`` runs: whatever the export left in the catalog must still read, every
snapshot of every table, because the export record written before the first table changed keeps
every vault snapshot the tables may name. The next export finishes the job and its tables read
back exactly as the vault.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("pyiceberg.catalog.sql")

from pyiceberg.catalog import load_catalog

from _helpers.proc import child_env
from wrdsvault import Warehouse
from wrdsvault._storage.crashpoints import ENV_VAR, ExportPoint
from wrdsvault.sources import SampleSource

pytestmark = pytest.mark.crash

DATASETS = ["crsp.msf", "ff.factors_monthly"]
CASES = [pytest.param(p.value, id=p.value) for p in ExportPoint] + [
    pytest.param(f"{ExportPoint.TABLE_COMMITTED.value}:2", id="export-table-committed:2")
]
EXPORT = "import sys; from wrdsvault import Warehouse; Warehouse(sys.argv[1]).export_iceberg()"


def _rows(table: object, snapshot_id: int) -> list[dict[str, object]]:
    rows = table.scan(snapshot_id=snapshot_id).to_arrow().to_pylist()  # type: ignore[attr-defined]
    return sorted(rows, key=lambda r: json.dumps(r, default=repr, sort_keys=True))


@pytest.mark.parametrize("point", CASES)
def test_an_export_killed_anywhere_leaves_every_table_readable_after_gc(
    tmp_path: Path, point: str
) -> None:
    """After a SIGKILL at ``point`` and a gc, every Iceberg snapshot still reads its files."""
    root = tmp_path / "vault"
    wh = Warehouse(root, source=SampleSource(years=range(2020, 2022), n_securities=20, vintage=1))
    wh.sync(DATASETS)
    wh.source = SampleSource(years=range(2020, 2022), n_securities=20, vintage=2)
    wh.sync(DATASETS)
    wh.tag("paper")  # the latest: gc(keep_last=1) may still expire the first snapshot
    wh.close()
    killed = subprocess.run(
        [sys.executable, "-c", EXPORT, str(root)],
        env=child_env(**{ENV_VAR: point}),
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert killed.returncode == -9, killed.stderr.decode()[-2000:]

    wh = Warehouse(root)
    wh.gc(keep_last=1)
    ice = load_catalog(
        "wrdsvault",
        uri=f"sqlite:///{tmp_path / 'vault-iceberg.db'}",
        warehouse=(tmp_path / "vault-iceberg").as_uri(),
    )
    for dataset in DATASETS:
        name = f"wrds.{dataset.replace('.', '_')}"
        if not ice.table_exists(name):
            continue
        table = ice.load_table(name)
        for snap in table.snapshots():
            _rows(table, snap.snapshot_id)  # raises if gc deleted a file it names

    report = wh.export_iceberg()
    for dataset in DATASETS:
        table = ice.load_table(report.tables[dataset])
        by_vault = {
            str(s.summary["wrdsvault.snapshot-id"]): s.snapshot_id for s in table.snapshots()
        }
        for info in wh.snapshots():
            if info.snapshot_id in by_vault:
                with wh.snapshot(info.snapshot_id) as snap:
                    expected = snap.arrow(f"SELECT * FROM {dataset}").to_pylist()
                expected.sort(key=lambda r: json.dumps(r, default=repr, sort_keys=True))
                assert _rows(table, by_vault[info.snapshot_id]) == expected
    wh.close()
