"""Vaults of an older format: what opens, what a new commit writes, what status reports.

docs/format.md states the rules: nothing is migrated. ``vault.json`` keeps the format the vault
was created in, every manifest is read by the rules of its own ``format_version``, and new
commits write manifests in the newest format beside the old ones.
"""

from __future__ import annotations

import errno
import json
import os
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


@pytest.mark.parametrize("links", [True, False], ids=["hard-links", "no-hard-links"])
def test_a_commit_on_an_early_format_1_vault_with_hive_folders_stays_readable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, links: bool
) -> None:
    """A commit on a vault with ``year=<YYYY>`` folders names every file it keeps by its current
    address (a second name of the same bytes: a hard link, or a copy on a file system without
    them); the old manifest keeps its own, both open."""
    root = _format_1_vault(tmp_path, hive_folders=True)
    if not links:

        def no_links(src: object, dst: object, **_: object) -> None:
            raise OSError(errno.EOPNOTSUPP, "Operation not supported")

        monkeypatch.setattr(os, "link", no_links)
    old_paths = {
        p["path"]
        for path in (root / "snapshots").glob("*.json")
        for e in json.loads(path.read_bytes())["datasets"].values()
        for p in e["partitions"]
    }
    assert any("/year=" in path for path in old_paths)
    with wrdsvault.Warehouse(root, source=SampleSource(years=range(2020, 2023))) as wh:
        report = wh.sync(["crsp.msf"])
        assert 2020 in report["crsp.msf"].years_reused  # a kept file in a year= folder
    with wrdsvault.Warehouse(root, create=False) as wh:
        first, newest = wh.snapshots()
        assert wh.verify(all_snapshots=True).ok
        snap = wh.snapshot(newest.snapshot_id)
        new_paths = [p.path for name in snap.datasets for p in snap.dataset(name).partitions]
        assert new_paths and all("/year=" not in path for path in new_paths)
        assert all((root / path).is_file() for path in old_paths)  # the old names stay
        kept = [path for path in old_paths if path.replace("/year=", "/") in new_paths]
        assert len(kept) >= 3  # ff.factors_monthly's two years (not synced) and crsp.msf 2020
        for path in kept:  # the same bytes under the current address
            current = root / path.replace("/year=", "/")
            assert current.read_bytes() == (root / path).read_bytes()
            assert current.samefile(root / path) == links
        rows = "SELECT count(*) AS n FROM crsp.msf"
        assert wh.snapshot(first.snapshot_id).arrow(rows).to_pylist()[0]["n"] > 0
        assert wh.snapshot(newest.snapshot_id).arrow(rows).to_pylist()[0]["n"] > 0
    with wrdsvault.Warehouse(root, source=SampleSource(years=range(2020, 2023))) as wh:
        assert not wh.sync(["crsp.msf"]).committed  # nothing to rename again
