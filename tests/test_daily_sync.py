"""The unattended daily sync: ``sync --all``, its exit codes, ``--log`` and ``status --max-age``.

Real vaults, real files and the real CLI in subprocesses (as cron runs it); the writer lock is
the real one, held by this process while the CLI contends for it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

import wrdsvault
import wrdsvault.warehouse as warehouse_module
from wrdsvault._storage.lock import WriterLock
from wrdsvault.sources import SampleSource

SAMPLE = ["--source", "sample", "--sample-years", "2019-2022", "--securities", "40", "-q"]


def cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``wrdsvault ARGS`` as a separate process with stdin closed, as a scheduler does."""
    return subprocess.run(
        [sys.executable, "-m", "wrdsvault", *args],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=240,
        check=False,
        cwd=cwd,
    )


def source(vintage: int = 1) -> SampleSource:
    return SampleSource(years=range(2019, 2023), n_securities=40, vintage=vintage)


def test_sync_all_resyncs_each_dataset_with_the_years_it_was_synced_for(tmp_path: Path) -> None:
    """sync_all keeps each dataset's years and partitioning, in one commit."""
    root = tmp_path / "vault"
    with wrdsvault.Warehouse(root, source=source()) as wh:
        wh.sync("crsp.msf", years=range(2021, 2023))
        wh.sync("comp.funda")  # every year
        wh.sync("crsp.msenames")  # unpartitioned
    with wrdsvault.Warehouse(root, source=source(vintage=2)) as wh:
        report = wh.sync_all()
        assert report.committed and report.notes == ()
        assert {d.dataset for d in report.datasets} == {
            "crsp.msf",
            "comp.funda",
            "crsp.msenames",
        }
        with wh.snapshot() as snap:
            msf = snap.dataset("crsp.msf")
            assert [p.year for p in msf.partitions] == [2021, 2022]  # 2019-2020 not fetched
            assert msf.recipe is not None and msf.recipe.years == (2021, 2022)
            assert [p.year for p in snap.dataset("comp.funda").partitions] == [
                2019,
                2020,
                2021,
                2022,
            ]
            names = snap.dataset("crsp.msenames")
            assert names.partition_column is None and [p.year for p in names.partitions] == [None]
        assert len(wh.snapshots()) == 4  # three syncs, then one commit for all of them


def test_a_later_sync_widens_the_recipe_and_never_narrows_it(tmp_path: Path) -> None:
    """Years asked for later are added to the recipe; a full sync makes it every year."""
    with wrdsvault.Warehouse(tmp_path / "v", source=source()) as wh:
        wh.sync("crsp.msf", years=[2022])
        wh.sync("crsp.msf", years=[2020])
        with wh.snapshot() as snap:
            recipe = snap.dataset("crsp.msf").recipe
        assert recipe is not None and recipe.years == (2020, 2022)
        wh.source = source(vintage=2)
        wh.sync("crsp.msf")
        with wh.snapshot() as snap:
            recipe = snap.dataset("crsp.msf").recipe
        assert recipe is not None and recipe.years is None


def test_a_manifest_without_a_recipe_falls_back_to_every_year_and_says_so(tmp_path: Path) -> None:
    """An entry written before recipes existed is synced over every year, with a note."""
    root = tmp_path / "vault"
    with wrdsvault.Warehouse(root, source=source()) as wh:
        wh.sync("crsp.msf", years=[2022])
    # What an older wrdsvault wrote: the same manifest without the field (the fingerprint
    # does not cover it, so the manifest stays valid).
    (manifest,) = (root / "snapshots").glob("*.json")
    obj = json.loads(manifest.read_bytes())
    del obj["datasets"]["crsp.msf"]["sync_recipe"]
    manifest.write_bytes(wrdsvault.manifest.canonical_json(obj) + b"\n")
    with wrdsvault.Warehouse(root, source=source(vintage=2)) as wh:
        with wh.snapshot() as snap:
            assert snap.dataset("crsp.msf").recipe is None
        report = wh.sync_all()
        assert report.committed
        assert len(report.notes) == 1 and "crsp.msf" in report.notes[0]
        assert "every year" in report.notes[0]
        with wh.snapshot() as snap:
            years = [p.year for p in snap.dataset("crsp.msf").partitions]
            assert years == [2019, 2020, 2021, 2022]
            assert snap.dataset("crsp.msf").recipe == wrdsvault.manifest.SyncRecipe(years=None)


def test_sync_all_refuses_an_empty_vault_and_a_foreign_source(tmp_path: Path) -> None:
    """No vault, nothing to re-sync, or datasets from another source: a clear error, nothing
    written."""
    with wrdsvault.Warehouse(tmp_path / "v", source=source()) as wh:
        with pytest.raises(wrdsvault.NotAVaultError):
            wh.sync_all()  # only a sync of named datasets creates a vault
        assert not wh.root.exists()
    with wrdsvault.Warehouse(tmp_path / "v", source=source(), create=True) as wh:
        with pytest.raises(wrdsvault.UnknownDatasetError, match="sync datasets by name first"):
            wh.sync_all()
        wh.sync("ff.factors_monthly")

        class Other(SampleSource):
            @property
            def name(self) -> str:
                return "other"

        wh.source = Other(years=range(2019, 2023), n_securities=40)
        with pytest.raises(wrdsvault.InvalidValueError, match=r"ff.factors_monthly \(sample\)"):
            wh.sync_all()
        assert len(wh.snapshots()) == 1


def test_exit_codes_synced_unchanged_failed_and_lock_busy(tmp_path: Path) -> None:
    """0 a new snapshot, 3 nothing changed, 1 failed, 4 lock busy, 2 bad usage."""
    vault = str(tmp_path / "vault")
    empty = cli("sync", "--all", "--vault", vault, *SAMPLE)
    assert empty.returncode == 1, empty.stderr
    assert "is not a wrdsvault vault" in empty.stderr  # a mistyped --vault: not a new vault
    first = cli("sync", "crsp.msf", "--years", "2021-2022", "--vault", vault, *SAMPLE)
    assert first.returncode == 0, first.stderr
    again = cli("sync", "--all", "--vault", vault, *SAMPLE)
    assert again.returncode == 3, again.stderr
    assert "unchanged" in again.stdout
    changed = cli("sync", "--all", "--vault", vault, *SAMPLE, "--vintage", "2")
    assert changed.returncode == 0, changed.stderr
    holder = WriterLock(Path(vault) / ".lock", operation="test holder")
    holder.acquire()
    try:
        busy = cli("sync", "--all", "--vault", vault, *SAMPLE, "--json")
        drop = cli("drop", "crsp.msf", "--yes", "--vault", vault)  # any writing command
    finally:
        holder.release()
    assert busy.returncode == 4, busy.stderr
    assert json.loads(busy.stdout)["error"] == "LockHeldError"
    assert drop.returncode == 4, drop.stderr
    both = cli("sync", "crsp.msf", "--all", "--vault", vault, *SAMPLE)
    assert both.returncode == 2 and "not both" in both.stderr


def read_log(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_log_appends_one_json_line_per_run(tmp_path: Path) -> None:
    """--log: one line per run with times, outcome, datasets, snapshot id and error."""
    vault, log = str(tmp_path / "vault"), tmp_path / "logs" / "sync.jsonl"
    cli("sync", "crsp.msf", "ff.factors_monthly", "--vault", vault, *SAMPLE, "--log", str(log))
    cli("sync", "--all", "--vault", vault, *SAMPLE, "--log", str(log))
    holder = WriterLock(Path(vault) / ".lock", operation="test holder")
    holder.acquire()
    try:
        cli("sync", "--all", "--vault", vault, *SAMPLE, "--log", str(log))
    finally:
        holder.release()
    synced, unchanged, busy = read_log(log)
    assert (synced["outcome"], synced["exit_code"], synced["committed"]) == ("synced", 0, True)
    assert synced["datasets"] == {"crsp.msf": "added", "ff.factors_monthly": "added"}
    assert synced["error"] is None and synced["snapshot_id"]
    assert synced["started_at"] <= synced["ended_at"]
    assert (unchanged["outcome"], unchanged["exit_code"]) == ("unchanged", 3)
    assert unchanged["snapshot_id"] == synced["snapshot_id"]
    assert unchanged["command"] == "sync --all"
    assert (busy["outcome"], busy["exit_code"]) == ("lock-busy", 4)
    assert busy["error"]["type"] == "LockHeldError" and busy["snapshot_id"] is None


def test_a_torn_last_line_never_corrupts_the_lines_around_it(tmp_path: Path) -> None:
    """A run killed mid-append leaves a torn line; the next run cuts it off, earlier lines stay."""
    vault, log = str(tmp_path / "vault"), tmp_path / "sync.jsonl"
    cli("sync", "ff.factors_monthly", "--vault", vault, *SAMPLE, "--log", str(log))
    good = log.read_bytes()
    with log.open("ab") as f:  # what a SIGKILL in the middle of a write(2) leaves
        f.write(b'{"command":"sync --all","ended_at":"2026-')
    cli("sync", "--all", "--vault", vault, *SAMPLE, "--log", str(log))
    raw = log.read_bytes()
    assert raw.startswith(good) and raw.endswith(b"\n")
    lines = [json.loads(line) for line in raw.decode().splitlines()]
    assert [r["outcome"] for r in lines] == ["synced", "unchanged"]


def test_status_reports_each_datasets_age_and_flags_stale_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """status --json --max-age: age_s per dataset, stale flags, exit 5 once a sync is too old."""
    from wrdsvault.cli import main

    vault = str(tmp_path / "vault")
    assert main(["sync", "crsp.msf", "ff.factors_monthly", "--vault", vault, *SAMPLE]) == 0
    capsys.readouterr()
    assert main(["status", "--vault", vault, "--json", "--max-age", "36h"]) == 0
    st = json.loads(capsys.readouterr().out)
    assert st["max_age_s"] == 36 * 3600 and st["stale"] is False
    assert all(d["stale"] is False and 0 <= d["age_s"] < 36 * 3600 for d in st["datasets"])

    class Later(datetime):
        @classmethod
        def now(cls, tz: Any = None) -> Later:  # type: ignore[override]
            return super().now(tz) + timedelta(hours=37)

    monkeypatch.setattr(warehouse_module, "datetime", Later)
    assert main(["status", "--vault", vault, "--json", "--max-age", "36h"]) == 5
    st = json.loads(capsys.readouterr().out)
    assert st["stale"] is True
    assert all(d["stale"] is True and d["age_s"] > 36 * 3600 for d in st["datasets"])
    assert main(["status", "--vault", vault, "--json"]) == 0  # no limit: ages only
    st = json.loads(capsys.readouterr().out)
    assert st["stale"] is None and all(d["stale"] is None for d in st["datasets"])


def test_status_max_age_refuses_a_bad_age(tmp_path: Path) -> None:
    """--max-age needs a positive age; status(max_age_s=) raises InvalidValueError."""
    bad = cli("status", "--vault", str(tmp_path / "v"), "--max-age=0h")
    assert bad.returncode == 2 and "36h" in bad.stderr
    with wrdsvault.Warehouse(tmp_path / "w", create=True) as wh:
        with pytest.raises(wrdsvault.InvalidValueError):
            wh.status(max_age_s=0)
        assert wh.status(max_age_s=60).stale is True  # an empty vault is stale


def test_status_text_names_stale_datasets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without --json, status --max-age says which datasets are stale, or that all are fresh."""
    from wrdsvault.cli import main

    vault = str(tmp_path / "vault")
    main(["sync", "ff.factors_monthly", "--vault", vault, *SAMPLE])
    capsys.readouterr()
    assert main(["status", "--vault", vault, "--max-age", "2d"]) == 0
    assert "fresh     every dataset synced within 48.0 h" in capsys.readouterr().out

    class Later(datetime):
        @classmethod
        def now(cls, tz: Any = None) -> Later:  # type: ignore[override]
            return super().now(tz) + timedelta(days=3)

    monkeypatch.setattr(warehouse_module, "datetime", Later)
    assert main(["status", "--vault", vault, "--max-age", "2d"]) == 5
    out = capsys.readouterr().out
    assert "stale     ff.factors_monthly: last synced 72.0 h ago (limit 48.0 h)" in out


def test_the_recipe_round_trips_and_is_not_part_of_the_fingerprint() -> None:
    """sync_recipe is read back as written, absent means None, and the fingerprint ignores it."""
    from wrdsvault.manifest import Manifest

    entry = wrdsvault.DatasetEntry(
        name="crsp.msf",
        partition_column="date",
        primary_key=("permno", "date"),
        columns=(),
        partitions=(),
        source="wrds",
        recipe=wrdsvault.SyncRecipe(years=[2001, 2000, 2001]),
    )
    assert entry.recipe is not None and entry.recipe.years == (2000, 2001)
    when = datetime(2026, 1, 2, 3, 4, 5)
    sid = "20260102T030405000000Z-0a0b0c0d"
    with_recipe = Manifest(sid, 1, None, when.astimezone(), {"crsp.msf": entry})
    raw = with_recipe.to_json()
    assert b'"sync_recipe":{"years":[2000,2001]}' in raw
    assert Manifest.from_json(raw, where="m").datasets["crsp.msf"].recipe == entry.recipe
    import attrs

    without = attrs.evolve(with_recipe, datasets={"crsp.msf": attrs.evolve(entry, recipe=None)})
    assert b"sync_recipe" not in without.to_json()
    assert without.fingerprint == with_recipe.fingerprint
    assert Manifest.from_json(without.to_json(), where="m").datasets["crsp.msf"].recipe is None
    bad = raw.replace(b'"years":[2000,2001]', b'"years":"2000"')
    with pytest.raises(wrdsvault.VaultFormatError, match="malformed manifest"):
        Manifest.from_json(bad, where="m")
