"""wrdsvault doctor: reports leftovers read-only; --repair removes only provable garbage."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import wrdsvault
from _helpers.disk import file_paths
from _helpers.records import crashed_child
from wrdsvault.cli import main


def litter(wh: wrdsvault.Warehouse) -> dict[str, Path]:
    """Leave what a crashed writer leaves: staging, temp files, a newer manifest, an orphan."""
    root = wh.root
    staging = root / "tmp" / "tx-deadbeef"
    staging.mkdir(parents=True)
    (staging / "crsp.msf-2020.parquet").write_bytes(b"partial")
    temp = root / ".HEAD.123456.tmp"
    temp.write_bytes(b"x")
    head = (root / "HEAD").read_text().strip()
    newer = root / "snapshots" / "29991231T000000000000Z-00000000.json"
    newer.write_bytes(crashed_child(root, head, newer.name.removesuffix(".json")).to_json())
    orphan = root / "data" / "crsp" / "msf" / "2020" / "0123456789abcdef.parquet"
    orphan.write_bytes(b"PAR1 orphan")
    return {"staging": staging, "temp": temp, "manifest": newer, "orphan": orphan}


def test_doctor_reports_without_touching_anything(vault: wrdsvault.Warehouse) -> None:
    """doctor is read-only: it lists each kind of leftover and changes no file."""
    vault.sync("crsp.msf")
    left = litter(vault)
    before = file_paths(vault.root, skip_lock=True)
    report = vault.doctor()
    kinds = {f.kind for f in report.findings}
    assert {"staging", "temp-file", "uncommitted-manifest", "orphan-file"} <= kinds
    assert not report.ok
    assert file_paths(vault.root, skip_lock=True) == before
    assert all(p.exists() for p in left.values())


def test_doctor_repair_removes_only_garbage(vault: wrdsvault.Warehouse) -> None:
    """--repair removes the leftovers; committed data, quarantine and snapshots stay."""
    vault.sync("crsp.msf")
    committed = file_paths(vault.root, skip_lock=True)
    left = litter(vault)
    report = vault.doctor(repair=True)
    assert not any(p.exists() for p in left.values())
    assert set(report.repaired) >= {str(p.relative_to(vault.root)) for p in left.values()}
    assert file_paths(vault.root, skip_lock=True) == committed
    assert vault.verify().ok
    assert vault.doctor().ok
    assert vault.doctor().findings == ()


def test_doctor_finds_stale_lock_and_repair_breaks_it(vault: wrdsvault.Warehouse) -> None:
    """A lock left by a dead process is reported as stale and removed by --repair."""
    vault.sync("ff.factors_monthly")
    code = (
        "import sys; from pathlib import Path; from wrdsvault._storage.lock import WriterLock; "
        "WriterLock(Path(sys.argv[1]), operation='dies').acquire()"
    )
    subprocess.run([sys.executable, "-c", code, str(vault.root / ".lock")], check=True)
    assert [f.kind for f in vault.doctor().findings] == ["stale-lock"]
    report = vault.doctor(repair=True)
    assert ".lock" in report.repaired
    assert not (vault.root / ".lock").exists()


def test_doctor_reports_quarantine_and_damage_but_keeps_them(
    vault: wrdsvault.Warehouse, capsys: pytest.CaptureFixture[str]
) -> None:
    """Quarantine entries and damaged manifests are reported and never deleted by repair."""
    vault.sync("ff.factors_monthly")
    sid = vault.snapshot().id
    (vault.root / "quarantine" / "20260101T000000Z-crsp.msf-abcd").mkdir(parents=True)
    manifest = vault.root / "snapshots" / f"{sid}.json"
    manifest.write_bytes(manifest.read_bytes().replace(b'"row_count":', b'"row_count":7', 1))
    fresh = wrdsvault.Warehouse(vault.root)
    report = fresh.doctor(repair=True)
    kinds = {f.kind for f in report.findings}
    assert {"quarantine", "damaged-manifest"} <= kinds
    assert (vault.root / "quarantine" / "20260101T000000Z-crsp.msf-abcd").is_dir()
    assert manifest.exists()
    assert main(["doctor", "--vault", str(vault.root), "--json"]) == 1
    out = json.loads(capsys.readouterr().out)
    assert out["ok"] is False


def test_healthy_vault_exits_zero(
    vault: wrdsvault.Warehouse, capsys: pytest.CaptureFixture[str]
) -> None:
    """A clean vault: doctor prints that it is healthy and exits 0."""
    vault.sync("ff.factors_monthly")
    assert main(["doctor", "--vault", str(vault.root)]) == 0
    assert "healthy" in capsys.readouterr().out


def test_os_error_while_tagging_names_the_tag(
    vault: wrdsvault.Warehouse, capsys: pytest.CaptureFixture[str]
) -> None:
    """An OS error while writing a tag raises WriteError naming the tag, not a failed sync."""
    vault.sync("ff.factors_monthly")
    (vault.root / "tags").write_bytes(b"a file where the tags folder belongs")
    with pytest.raises(wrdsvault.WriteError) as info:
        vault.tag("paper")
    assert info.value.operation == "tag paper"
    assert str(info.value).startswith("tag paper failed: NotADirectoryError")
    assert "sync" not in str(info.value)
    assert main(["tag", "paper", "--vault", str(vault.root)]) == 1
    assert capsys.readouterr().err.startswith("wrdsvault: tag paper failed")


REPAIR_UNDER_STRACE = """
import sys
from wrdsvault import Warehouse
try:
    Warehouse(sys.argv[1], create=False).doctor(repair=True)
    print("repaired")
except Exception as exc:
    print(f"{type(exc).__name__}|{exc}")
"""


@pytest.mark.skipif(shutil.which("strace") is None, reason="needs strace to inject I/O errors")
def test_os_error_during_repair_names_the_repair(vault: wrdsvault.Warehouse) -> None:
    """EIO while doctor --repair removes an orphan: WriteError about the repair, data intact."""
    vault.sync("crsp.msf")
    committed = file_paths(vault.root, skip_lock=True)
    orphan = litter(vault)["orphan"]
    proc = subprocess.run(
        [
            *("strace", "-f", "-qq", "-o", os.devnull, "-P", str(orphan)),
            *("-e", "trace=unlink,unlinkat", "-e", "inject=unlink,unlinkat:error=EIO"),
            *(sys.executable, "-c", REPAIR_UNDER_STRACE, str(vault.root)),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    kind, message = proc.stdout.strip().splitlines()[-1].split("|", 1)
    assert kind == "WriteError", message
    assert message.startswith("doctor --repair failed: OSError: [Errno 5]"), message
    assert "Committed snapshots are untouched" in message
    assert orphan.exists()
    assert committed <= file_paths(vault.root, skip_lock=True)
    assert vault.verify().ok


# -- export records ---------------------------------------------------------------------------


def record_for(vault: wrdsvault.Warehouse, snapshots: list[str]) -> Path:
    """Write an Iceberg export record the way an export does (the library's own writer)."""
    from wrdsvault._storage.layout import Layout
    from wrdsvault.exports import ExportRecord, write_record

    record = ExportRecord(
        catalog="sqlite:///lab-iceberg.db",
        namespace="wrds",
        tables={"crsp.msf": "wrds.crsp_msf"},
        snapshots=tuple(sorted(snapshots)),
        exported_through=snapshots[-1],
        exported_at="2026-12-01T00:00:00Z",
    )
    return write_record(Layout(vault.root), record, file_mode=0o600, dir_mode=0o700)


def test_doctor_lists_an_export_record_as_information(vault: wrdsvault.Warehouse) -> None:
    vault.sync("crsp.msf")
    path = record_for(vault, [vault.snapshot().id])
    report = vault.doctor()
    (found,) = report.findings
    assert (found.kind, found.path) == ("export", str(path.relative_to(vault.root)))
    assert "namespace wrds" in found.detail and "1 table" in found.detail
    assert "keeps the 1 snapshot" in found.advice
    assert report.ok


def test_doctor_reports_an_export_naming_a_snapshot_the_vault_lost(
    vault: wrdsvault.Warehouse,
) -> None:
    vault.sync("crsp.msf")
    gone = "20200101T000000000000Z-00000000"
    record_for(vault, [gone, vault.snapshot().id])
    report = vault.doctor()
    missing = [f for f in report.findings if f.kind == "export-missing-snapshot"]
    assert len(missing) == 1 and gone in missing[0].detail
    assert not report.ok
    assert missing[0].path not in vault.doctor(repair=True).repaired  # never removed


@pytest.mark.parametrize(
    "content",
    [
        b"{not json",
        b'{"format": 1, "kind": "iceberg"}',
        b'{"format": 99}',
        b'{"format": 1e999}',  # an int() of infinity: OverflowError
        b"[" * 100_000 + b"]" * 100_000,  # nested past the parser's recursion limit
        b"\xff\xfe{}",
    ],
)
def test_doctor_reports_a_damaged_export_record_and_keeps_it(
    vault: wrdsvault.Warehouse, content: bytes
) -> None:
    vault.sync("crsp.msf")
    good = record_for(vault, [vault.snapshot().id])
    bad = good.with_name("iceberg-0123456789abcdef.json")
    bad.write_bytes(content)
    report = vault.doctor(repair=True)
    kinds = sorted(f.kind for f in report.findings)
    assert kinds == ["damaged-export-record", "export"]
    damaged = next(f for f in report.findings if f.kind == "damaged-export-record")
    assert damaged.path == str(bad.relative_to(vault.root))
    assert "gc refuses to run" in damaged.advice
    assert not report.ok
    assert bad.read_bytes() == content  # reported, never repaired away
    with pytest.raises(wrdsvault.VaultFormatError):
        vault.gc(keep_last=1)
