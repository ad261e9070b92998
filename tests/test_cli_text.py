"""The exact text of the CLI's listings: snapshots, status, quarantine, drop's question, verify."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Collection, Sequence
from pathlib import Path

import attrs
import pytest

import wrdsvault
from _helpers.cli import Tty, run
from wrdsvault.datasets import DatasetSpec
from wrdsvault.sources import SampleSource
from wrdsvault.sources.base import PartitionInfo


def test_import_wrdsvault_loads_no_cli_module() -> None:
    """``import wrdsvault`` imports neither the command line nor its rendering."""
    code = (
        "import sys, wrdsvault, wrdsvault.sources; "
        "print(sorted(m for m in sys.modules if m.startswith(('wrdsvault.cli', 'wrdsvault._cli'))))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_snapshots_lists_one_line_per_snapshot(
    vault: wrdsvault.Warehouse, capsys: pytest.CaptureFixture[str]
) -> None:
    """`snapshots` says how to start on an empty vault, then one aligned line per snapshot."""
    args = ("--vault", str(vault.root))
    vault.snapshots()  # creates the vault
    assert run(capsys, "snapshots", *args) == (0, "no snapshots yet; run `wrdsvault sync`\n", "")

    vault.sync(["crsp.msf", "ff.factors_monthly"])
    vault.tag("paper")
    vault.tag("draft")
    (s,) = vault.snapshots()
    expected = (
        f"{s.snapshot_id}  {s.committed_at:%Y-%m-%d %H:%M:%S}Z  {s.row_count:>12,} rows  "
        f"2 datasets  {s.fingerprint[:12]}  tags: draft, paper\n"
    )
    assert run(capsys, "snapshots", *args) == (0, expected, "")


def test_status_prints_each_part_on_its_own_line(
    vault: wrdsvault.Warehouse, capsys: pytest.CaptureFixture[str]
) -> None:
    """`status`: vault, latest snapshot and fingerprint, one line per dataset, disk, tags, lock."""
    vault.sync(["crsp.msf", "ff.factors_monthly"])
    vault.tag("paper")
    st = vault.status()
    code, out, err = run(capsys, "status", "--vault", str(vault.root))
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert out.endswith("\n")
    assert lines[:3] == [
        f"vault     {vault.root} (format {wrdsvault.FORMAT_VERSION})",
        f"snapshots 1; latest {st.latest_snapshot_id} committed "
        f"{st.latest_committed_at:%Y-%m-%d %H:%M:%S}Z",
        f"          fingerprint {st.fingerprint}",
    ]
    for line, name in zip(lines[3:5], ["crsp.msf", "ff.factors_monthly"], strict=True):
        d = next(d for d in st.datasets if d.name == name)
        assert line == (
            f"  {name:<24} {d.row_count:>12,} rows {d.partitions:>3} files 2019-2023  "
            f"{d.size_bytes / 1e6:>8.1f} MB  {d.comment}"
        )
    # every level `DiskGuard` reports (a nearly full CI disk says "warning")
    disk = r"disk      \d+% used, [\d,]+\.\d GB free \((ok|warning|critical|refuse)\)"
    assert re.fullmatch(disk, lines[5])
    assert lines[6:] == [f"tags      paper -> {st.latest_snapshot_id}", "lock      free"]


class Miscounting(SampleSource):
    """Announces one row too many for 2020, so validation fails and the write is quarantined."""

    def partitions(
        self, spec: DatasetSpec, *, years: Collection[int] | None = None
    ) -> Sequence[PartitionInfo]:
        return [
            attrs.evolve(p, row_count=(p.row_count or 0) + 1) if p.year == 2020 else p
            for p in super().partitions(spec, years=years)
        ]


def test_quarantine_list_names_each_failed_write(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`quarantine list`: "quarantine is empty", then name, error, size and message per entry."""
    wh = wrdsvault.Warehouse(
        tmp_path / "v",
        source=Miscounting(seed=0, years=range(2019, 2022), n_securities=20),
        create=True,
    )
    args = ("--vault", str(wh.root))
    assert run(capsys, "quarantine", "list", *args) == (0, "quarantine is empty\n", "")
    with pytest.raises(wrdsvault.ValidationFailedError):
        wh.sync("crsp.msf")
    (e,) = wh.quarantine()
    code, out, err = run(capsys, "quarantine", "list", *args)
    assert (code, err) == (0, "")
    assert re.fullmatch(
        rf"{re.escape(e.name)}  ValidationFailedError  \d+\.\d MB  {re.escape(e.message[:90])}\n",
        out,
    )
    wh.close()


def test_drop_shows_what_it_would_leave_out_before_asking(
    vault: wrdsvault.Warehouse,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`drop` on a terminal lists rows and files of each dataset, asks, and leaves it alone."""
    vault.sync(["crsp.msf", "ff.factors_monthly"])
    with vault.snapshot() as snap:
        msf, ff = snap.dataset("crsp.msf"), snap.dataset("ff.factors_monthly")
        latest = snap.id
    monkeypatch.setattr("sys.stdin", Tty("n\n"))
    code, out, err = run(
        capsys, "drop", "crsp.msf", "ff.factors_monthly", "--vault", str(vault.root)
    )
    assert (code, err) == (1, "")
    assert out == (
        f"The latest snapshot {latest} holds:\n"
        f"  crsp.msf                 {msf.row_count:>12,} rows   5 files\n"
        f"  ff.factors_monthly       {ff.row_count:>12,} rows   5 files\n"
        "Commit a new snapshot without them? Older snapshots keep them and their files. [y/N] "
        "left alone\n"
    )


def test_verify_draws_its_progress_on_stderr_and_ends_the_line(
    vault: wrdsvault.Warehouse, capsys: pytest.CaptureFixture[str]
) -> None:
    """`verify` redraws ``verifying n/N files`` on stderr, ending at 100% with a newline."""
    vault.sync(["crsp.msf", "ff.factors_monthly"])
    args = ("--vault", str(vault.root))
    code, out, err = run(capsys, "verify", *args)
    assert code == 0
    assert out.endswith("all files intact\n")
    assert re.fullmatch(
        r"(\r  verifying \d+/10 files, [ \d]{3}\.\d% of [\d,]+ MB)*"
        r"\r  verifying 10/10 files, 100\.0% of 0 MB\n",
        err,
    )
    code, out, err = run(capsys, "verify", *args, "--json")
    assert (code, err) == (0, "")
