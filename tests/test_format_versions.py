"""Vaults of an older format: what opens, what a new commit writes, what status reports.

docs/format.md states the rules: nothing is migrated. ``vault.json`` keeps the format the vault
was created in, every manifest is read by the rules of its own ``format_version``, and new
commits write manifests in the newest format beside the old ones.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import pytest

import wrdsvault
from wrdsvault.manifest import canonical_json
from wrdsvault.sources import SampleSource

DATASETS = ["crsp.msf", "ff.factors_monthly"]


def _format_1_fingerprint(manifest: dict[str, Any]) -> str:
    """Format 1's fingerprint: like format 2's, but without each partition's path."""
    content = {
        name: {
            "columns": [[c["name"], c["type"]] for c in entry["columns"]],
            "partitions": sorted(
                [
                    -1 if p["year"] is None else p["year"],
                    p["sha256"],
                    p["size_bytes"],
                    p["row_count"],
                ]
                for p in entry["partitions"]
            ),
        }
        for name, entry in manifest["datasets"].items()
    }
    return hashlib.sha256(canonical_json(content)).hexdigest()


def _rewrite_as_format_1(root: Path, *, hive_folders: bool = False) -> None:
    """Make a fresh vault look as format 1 wrote it (early builds: ``year=<YYYY>`` folders)."""
    vault_json = json.loads((root / "vault.json").read_bytes())
    (root / "vault.json").write_text(json.dumps({**vault_json, "format_version": 1}))
    for path in sorted((root / "snapshots").glob("*.json")):
        obj = json.loads(path.read_bytes())
        obj["format_version"] = 1
        for entry in obj["datasets"].values():
            for part in entry["partitions"]:
                if not hive_folders or part["year"] is None:
                    continue
                year = f"{part['year']:04d}"
                new = part["path"].replace(f"/{year}/", f"/year={year}/")
                (root / new).parent.mkdir(parents=True, exist_ok=True)
                if (root / part["path"]).exists():
                    os.replace(root / part["path"], root / new)  # noqa: TID251 - rebuilds format 1
                part["path"] = new
        obj["fingerprint"] = _format_1_fingerprint(obj)
        path.write_bytes(canonical_json(obj) + b"\n")


def _format_1_vault(tmp_path: Path, *, hive_folders: bool = False) -> Path:
    root = tmp_path / "vault"
    with wrdsvault.Warehouse(root, source=SampleSource(years=range(2020, 2022))) as wh:
        wh.sync(DATASETS)
    _rewrite_as_format_1(root, hive_folders=hive_folders)
    return root


def test_status_reports_the_vaults_own_format_version(tmp_path: Path) -> None:
    """status() gives vault.json's format_version (1 here), not the library's FORMAT_VERSION."""
    root = _format_1_vault(tmp_path)
    with wrdsvault.Warehouse(root, create=False) as wh:
        assert wh.status().format_version == 1
        assert wh.status().to_json()["format_version"] == 1
    with wrdsvault.Warehouse(tmp_path / "new") as fresh:
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
