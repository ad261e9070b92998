"""The command line of retention: gc, expired, tag --delete, and status's reclaimable bytes."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from wrdsvault import Warehouse
from wrdsvault.cli import main
from wrdsvault.sources import SampleSource


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


class Terminal(io.StringIO):
    """A stdin that is a terminal and answers the confirmation."""

    def isatty(self) -> bool:
        return True


@pytest.fixture
def vault(tmp_path: Path) -> tuple[str, list[str]]:
    """A vault with three snapshots of other data each: (path, ids oldest first)."""
    root = tmp_path / "v"
    ids = []
    with Warehouse(root) as wh:
        for seed in (0, 1, 2):
            wh.source = SampleSource(seed=seed, years=range(2020, 2022), n_securities=20)
            report = wh.sync("crsp.msf")
            assert report.snapshot_id is not None
            ids.append(report.snapshot_id)
    return str(root), ids


def test_gc_dry_run_then_gc_then_expired(
    vault: tuple[str, list[str]], capsys: pytest.CaptureFixture[str]
) -> None:
    """--dry-run shows the plan and changes nothing; gc expires; `expired` lists the log."""
    root, (a, b, c) = vault
    code, out, _ = run(capsys, "gc", "--vault", root, "--dry-run", "--keep-last", "2")
    assert code == 0
    assert f"expire  {a}" in out and f"keep    {c}  latest, keep_last" in out
    assert "dry run: nothing was changed" in out
    code, out, _ = run(capsys, "snapshots", "--vault", root, "--json")
    assert [s["snapshot_id"] for s in json.loads(out)] == [a, b, c]

    code, out, _ = run(capsys, "gc", "--vault", root, "--keep-last", "2", "--json")
    assert code == 0
    report = json.loads(out)
    assert report["expired"] == [a] and report["deleted_manifests"] == [a]
    assert report["freed_bytes"] > 0 and report["deleted_files"]
    code, out, _ = run(capsys, "expired", "--vault", root)
    assert code == 0 and out.startswith(a) and "--keep-last 2" in out
    code, out, _ = run(capsys, "expired", "--vault", root, "--json")
    assert [e["snapshot_id"] for e in json.loads(out)] == [a]
    code, _, err = run(capsys, "query", "select 1", "--vault", root, "--snapshot", a)
    assert code == 1 and "was expired by gc" in err


def test_gc_refuses_a_bad_rule(
    vault: tuple[str, list[str]], capsys: pytest.CaptureFixture[str]
) -> None:
    """A malformed duration is a wrdsvault error (exit 1) that names the rule."""
    root, _ = vault
    code, _, err = run(capsys, "gc", "--vault", root, "--keep-within", "90 days")
    assert code == 1 and "keep_within" in err


def test_tag_delete_needs_a_confirmation(
    vault: tuple[str, list[str]],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Without a terminal --yes is required; on a terminal it asks; then gc may expire."""
    root, (a, _b, _c) = vault
    assert run(capsys, "tag", "paper", a, "--vault", root)[0] == 0
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    code, _, err = run(capsys, "tag", "paper", "--delete", "--vault", root)
    assert code == 1 and "pass --yes" in err
    monkeypatch.setattr("sys.stdin", Terminal("n\n"))
    code, out, _ = run(capsys, "tag", "paper", "--delete", "--vault", root)
    assert code == 1 and "left alone" in out and f"-> {a}" in out
    with Warehouse(root, create=False) as wh:
        assert wh.tags() == {"paper": a}
    monkeypatch.setattr("sys.stdin", Terminal("y\n"))
    code, out, _ = run(capsys, "tag", "paper", "--delete", "--vault", root)
    assert code == 0 and f"deleted tag paper (it named {a})" in out
    code, out, _ = run(capsys, "tag", "paper", "--delete", "--yes", "--vault", root, "--json")
    assert code == 1 and json.loads(out)["error"] == "SnapshotNotFoundError"


def test_status_shows_what_the_stored_policy_would_free(
    vault: tuple[str, list[str]], capsys: pytest.CaptureFixture[str]
) -> None:
    """status names the reclaimable bytes of the policy stored in vault.json."""
    root, _ = vault
    meta = Path(root) / "vault.json"
    obj = json.loads(meta.read_text())
    obj["settings"]["retention"] = {"keep_last": 1}
    meta.write_text(json.dumps(obj))
    code, out, _ = run(capsys, "status", "--vault", root, "--json")
    reclaimable = json.loads(out)["reclaimable_bytes"]
    assert code == 0 and reclaimable > 0
    code, out, _ = run(capsys, "status", "--vault", root)
    assert "reclaimable by the stored retention policy" in out
    code, out, _ = run(capsys, "gc", "--vault", root, "--json")
    assert len(json.loads(out)["expired"]) == 2
