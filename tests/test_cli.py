"""The wrdsvault command line: each command, --json, exit codes, errors on stderr."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from wrdsvault.cli import main

SAMPLE = ["--source", "sample", "--sample-years", "2020-2022", "--securities", "40"]


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_sync_snapshots_query_status_tag(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A shell session: sync, list, query, tag, status, each also with --json."""
    vault = str(tmp_path / "v")
    code, out, err = run(
        capsys, "sync", "crsp.msf", "ff.factors_monthly", "--vault", vault, *SAMPLE
    )
    assert code == 0, err
    assert "committed snapshot" in out
    assert "crsp.msf 2020 [1/3" in err  # progress on stderr

    code, out, _ = run(capsys, "sync", "crsp.msf", "--vault", vault, *SAMPLE, "--json")
    assert code == 0
    assert json.loads(out)["committed"] is False

    code, out, _ = run(capsys, "snapshots", "--vault", vault, "--json")
    snaps = json.loads(out)
    assert len(snaps) == 1
    assert snaps[0]["datasets"] == ["crsp.msf", "ff.factors_monthly"]

    code, out, _ = run(
        capsys, "query", "select count(*) as n from ff.factors_monthly", "--vault", vault, "--json"
    )
    assert code == 0
    assert json.loads(out) == [{"n": 35}]  # vintage 1 ends in November 2022

    code, out, _ = run(capsys, "tag", "paper", "--vault", vault)
    assert code == 0
    assert out.startswith("paper -> ")
    code, out, _ = run(
        capsys, "query", "select 1 as x", "--vault", vault, "--snapshot", "paper", "--csv"
    )
    assert out.splitlines() == ["x", "1"]

    code, out, _ = run(capsys, "status", "--vault", vault)
    assert "crsp.msf" in out
    assert "lock      free" in out
    code, out, _ = run(capsys, "status", "--vault", vault, "--json")
    assert json.loads(out)["tags"] == {"paper": snaps[0]["id"]}


def test_errors_exit_1_with_advice(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A refused query, a missing vault and an unknown ref exit 1 with a message on stderr."""
    vault = str(tmp_path / "v")
    run(capsys, "sync", "ff.factors_monthly", "--vault", vault, *SAMPLE)
    code, _, err = run(capsys, "query", "copy (select 1) to 'x.csv'", "--vault", vault)
    assert code == 1
    assert "COPY" in err
    code, _, err = run(capsys, "status", "--vault", str(tmp_path / "nothing"))
    assert code == 1
    assert "no vault here" in err
    assert not (tmp_path / "nothing").exists()  # read commands never create a vault
    code, out, err = run(
        capsys, "query", "select 1", "--vault", vault, "--snapshot", "1999-01-01", "--json"
    )
    assert code == 1
    assert json.loads(out)["error"] == "SnapshotNotFoundError"


def test_wrds_source_failure_is_clear(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """sync --source wrds, server unreachable: a SourceError, nothing committed."""
    code, _, err = run(
        capsys,
        "sync",
        "crsp.msf",
        "--vault",
        str(tmp_path / "v"),
        "--wrds-hostname",
        str(tmp_path / "no-server"),
        "--wrds-username",
        "nobody",
    )
    assert code == 1
    assert "source wrds failed" in err
    assert wrdsvault_snapshots(tmp_path / "v") == []


def wrdsvault_snapshots(root: Path) -> list[object]:
    import wrdsvault

    return wrdsvault.Warehouse(root).snapshots() if root.exists() else []


def test_bad_usage_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    """argparse errors exit 2."""
    with pytest.raises(SystemExit) as exc:
        main(["sync", "crsp.msf", "--years", "2024-2000"])
    assert exc.value.code == 2


def test_demo_runs_end_to_end(tmp_path: Path) -> None:
    """`wrdsvault demo DIR` (as a console script) builds, updates and queries a vault."""
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "wrdsvault",
            "demo",
            str(tmp_path / "demo"),
            "--securities",
            "150",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert len(result["snapshots"]) == 2
    assert result["resync_committed"] is False
    assert result["pinned_unchanged"] is True
    assert result["market_cap_rows"] > 0
    assert result["book_to_market_rows"] > 0
    written = {d["dataset"]: d["years_written"] for d in result["second_sync"]["datasets"]}
    assert 0 < len(written["crsp.msf"]) < 10  # only the changed years


def test_demo_refuses_a_used_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The demo will not write into a non-empty folder."""
    (tmp_path / "mine.txt").write_text("x")
    code, _, err = run(capsys, "demo", str(tmp_path))
    assert code == 1
    assert "not empty" in err


def _dead_lock(root: Path) -> None:
    code = (
        "import sys; from pathlib import Path; from wrdsvault._storage.lock import WriterLock; "
        "WriterLock(Path(sys.argv[1]), operation='dies', heartbeat_s=0).acquire()"
    )
    subprocess.run([sys.executable, "-c", code, str(root / ".lock")], check=True)


def test_unlock_shows_refuses_live_and_breaks_dead(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """unlock shows the lock; --force --yes breaks a dead owner's lock, never a live one's."""
    from wrdsvault._storage.lock import WriterLock

    vault = tmp_path / "v"
    run(capsys, "sync", "ff.factors_monthly", "--vault", str(vault), *SAMPLE)
    code, out, _ = run(capsys, "unlock", "--vault", str(vault))
    assert (code, out) == (0, "the writer lock is free\n")

    live = WriterLock(vault / ".lock", operation="live holder", heartbeat_s=0)
    live.acquire()
    try:
        code, out, err = run(capsys, "unlock", "--vault", str(vault), "--force", "--yes")
        assert code == 1
        assert "alive on this host" in err
        assert live.still_ours()
    finally:
        live.release()

    _dead_lock(vault)
    code, out, _ = run(capsys, "status", "--vault", str(vault))
    assert "lock      stale" in out
    code, out, _ = run(capsys, "unlock", "--vault", str(vault))
    assert code == 1
    assert "--force" in out
    code, out, err = run(capsys, "unlock", "--vault", str(vault), "--force")
    assert code == 1  # no terminal to ask on and no --yes
    assert "--yes" in err
    code, out, _ = run(capsys, "unlock", "--vault", str(vault), "--force", "--yes")
    assert code == 0
    assert "lock broken" in out
    assert not (vault / ".lock").exists()
