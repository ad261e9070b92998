"""Vaults of an older format: what opens, what a new commit writes, what status reports.

docs/format.md states the rules: nothing is migrated. ``vault.json`` keeps the format the vault
was created in, every manifest is read by the rules of its own ``format_version``, and new
commits write manifests in the newest format beside the old ones.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import wrdsvault
from _helpers import disk
from wrdsvault.sources import SampleSource

DATASETS = ["crsp.msf", "ff.factors_monthly"]


def _format_1_vault(tmp_path: Path, *, hive_folders: bool = False) -> Path:
    root = tmp_path / "vault"
    with wrdsvault.Warehouse(root, source=SampleSource(years=range(2020, 2022))) as wh:
        wh.sync(DATASETS)
    disk.rewrite_as_format_1(root, hive_folders=hive_folders)
    return root


def test_status_reports_the_vaults_own_format_version(tmp_path: Path) -> None:
    """status() gives vault.json's format_version (1 here), not the library's FORMAT_VERSION."""
    root = _format_1_vault(tmp_path)
    with wrdsvault.Warehouse(root, create=False) as wh:
        assert wh.status().format_version == 1
        assert wh.status().to_json()["format_version"] == 1
    with wrdsvault.Warehouse(tmp_path / "new", create=True) as fresh:
        assert fresh.status().format_version == wrdsvault.FORMAT_VERSION


def test_a_commit_on_a_format_1_vault_migrates_nothing(tmp_path: Path) -> None:
    """A new commit writes a newest-format manifest; vault.json and old manifests stay as is."""
    root = _format_1_vault(tmp_path)
    before = {p.name: p.read_bytes() for p in (root / "snapshots").glob("*.json")}
    vault_json = (root / "vault.json").read_bytes()
    with wrdsvault.Warehouse(root, source=SampleSource(years=range(2020, 2023))) as wh:
        wh.sync(DATASETS)
        ids = [s.snapshot_id for s in wh.snapshots()]
        assert wh.verify(all_snapshots=True).ok
        assert wh.status().format_version == 1
    assert (root / "vault.json").read_bytes() == vault_json
    assert {n: (root / "snapshots" / n).read_bytes() for n in before} == before
    newest = json.loads((root / "snapshots" / f"{ids[-1]}.json").read_bytes())
    assert newest["format_version"] == wrdsvault.FORMAT_VERSION
    assert len(ids) == len(before) + 1


@pytest.mark.xfail(
    strict=True,
    raises=wrdsvault.VaultFormatError,
    reason="known bug: a new manifest reuses format-1 `year=<YYYY>` paths, which the newest "
    "format refuses as altered; the commit must name reused files by their current address",
)
def test_a_commit_on_an_early_format_1_vault_with_hive_folders_stays_readable(
    tmp_path: Path,
) -> None:
    """After a commit on a vault with ``year=<YYYY>`` folders, every snapshot still opens."""
    root = _format_1_vault(tmp_path, hive_folders=True)
    with wrdsvault.Warehouse(root, source=SampleSource(years=range(2020, 2023))) as wh:
        wh.sync(["crsp.msf"])
    with wrdsvault.Warehouse(root, create=False) as wh:
        assert len(wh.snapshots()) == 2
        assert wh.verify(all_snapshots=True).ok
