"""The wrdsvault command line: each command, --json, exit codes, errors on stderr."""

from __future__ import annotations

import csv
import io
import json
import logging
import re
import subprocess
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from _helpers.cli import Tty, run
from _helpers.locks import leave_dead_lock
from wrdsvault import Progress
from wrdsvault._cli_render import SyncDisplay, sync_summary
from wrdsvault.cli import main
from wrdsvault.manifest import ColumnSchema
from wrdsvault.reports import DatasetResult, SyncReport
from wrdsvault.schema import diff

SAMPLE = ["--source", "sample", "--sample-years", "2020-2022", "--securities", "40"]


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
    assert code == 3  # nothing changed: no new snapshot (docs/cli.md#exit-codes)
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
    assert json.loads(out)["tags"] == {"paper": snaps[0]["snapshot_id"]}


def test_errors_exit_1_with_advice(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A refused query, a missing vault and an unknown ref exit 1 with a message on stderr."""
    vault = str(tmp_path / "v")
    run(capsys, "sync", "ff.factors_monthly", "--vault", vault, *SAMPLE)
    code, _, err = run(capsys, "query", "copy (select 1) to 'x.csv'", "--vault", vault)
    assert code == 1
    assert "COPY" in err
    code, _, err = run(capsys, "status", "--vault", str(tmp_path / "nothing"))
    assert code == 1
    assert "is not a wrdsvault vault (no such folder)" in err
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
    changed = {d["dataset"]: d for d in result["diff"]["datasets"]}
    assert changed["crsp.msf"]["added"] > 0 and changed["crsp.msf"]["changed"] > 0
    assert changed["crsp.msf"]["files_read"] == 2 * len(written["crsp.msf"])


def test_demo_refuses_a_used_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The demo will not write into a non-empty folder."""
    (tmp_path / "mine.txt").write_text("x")
    code, _, err = run(capsys, "demo", str(tmp_path))
    assert code == 1
    assert "has content but no vault.json" in err


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

    leave_dead_lock(vault / ".lock")
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


# -- sync progress and summary ---------------------------------------------------------------


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def event(dataset: str = "crsp.dsf", **fields: Any) -> Progress:
    base: dict[str, Any] = {"year": 2020, "index": 0, "total": 3, "rows": None, "done": False}
    return Progress(dataset=dataset, **{**base, **fields})


#: One dataset, three years of 1,000,000 rows (the source's estimate): 2020 is reused, 2021 and
#: 2022 are read at 500k rows/s. (time, event) pairs.
DSF: list[tuple[float, Progress]] = [
    (0.0, event(year=2020, index=0, dataset_rows_total=3_000_000)),
    (
        0.0,
        event(
            year=2020,
            index=0,
            done=True,
            action="reused",
            rows=1_000_000,
            dataset_rows_done=1_000_000,
            dataset_rows_total=3_000_000,
        ),
    ),
    (0.0, event(year=2021, index=1, dataset_rows_done=1_000_000, dataset_rows_total=3_000_000)),
    *(
        (
            t,
            event(
                year=2021,
                index=1,
                rows_read=r,
                dataset_rows_done=1_000_000,
                dataset_rows_total=3_000_000,
            ),
        )
        for t, r in ((1.0, 500_000), (1.05, 600_000))
    ),
    (
        2.0,
        event(
            year=2021,
            index=1,
            done=True,
            action="read",
            dataset_rows_done=2_000_000,
            dataset_rows_total=3_000_000,
        ),
    ),
    (2.0, event(year=2022, index=2, dataset_rows_done=2_000_000, dataset_rows_total=3_000_000)),
    (
        4.0,
        event(
            year=2022,
            index=2,
            done=True,
            action="read",
            dataset_rows_done=3_000_000,
            dataset_rows_total=3_000_000,
        ),
    ),
]


def feed(stream: io.StringIO, events: list[tuple[float, Progress]], **kwargs: Any) -> str:
    clock = Clock()
    display = SyncDisplay(stream, clock=clock, **kwargs)
    for t, ev in events:
        clock.now = t
        display.render(ev)
    display.close()
    return stream.getvalue()


def frames(text: str) -> list[str]:
    """The successive states of a redrawn line."""
    assert text.startswith("\r")
    states = text.removeprefix("\r").split("\r")
    assert all(s.endswith(("\x1b[K", "\x1b[K\n")) for s in states)  # each clears what was left
    return [s.replace("\x1b[K", "") for s in states]


def bar(full: int, width: int = 20) -> str:
    return "█" * full + "░" * (width - full)


def test_tty_redraws_one_line_with_rows_rate_and_eta() -> None:
    """On a terminal one line is redrawn in place; rate and ETA count only the rows read."""
    out = feed(Tty(), DSF, name_width=8, columns=120)
    total = "3,000,000 rows"
    assert frames(out) == [
        f"crsp.dsf  2020 [1/3]  {bar(0)}  0 / {total}",
        f"crsp.dsf  2020 [1/3]  {bar(7)}  1,000,000 / {total}",  # reused: no rate yet
        f"crsp.dsf  2021 [2/3]  {bar(7)}  1,000,000 / {total}",
        f"crsp.dsf  2021 [2/3]  {bar(10)}  1,500,000 / {total}  500k rows/s  ETA 3s",
        # 1.05 s: a batch 50 ms after the last drawing is not drawn
        f"crsp.dsf  2021 [2/3]  {bar(13)}  2,000,000 / {total}  500k rows/s  ETA 2s",
        f"crsp.dsf  2022 [3/3]  {bar(13)}  2,000,000 / {total}  500k rows/s  ETA 2s",
        f"crsp.dsf  2020-2022  {bar(20)}  3,000,000 rows  "
        "done: 2 years read, 1 reused, 4.0s (500k rows/s)\n",
    ]
    assert out.count("\n") == 1  # one line for the dataset, ended when it finished


def test_plain_stream_gets_one_line_per_partition() -> None:
    """Off a terminal: one plain line per finished partition, no \\r, bar or escape."""
    out = feed(io.StringIO(), DSF, name_width=8)
    assert out.splitlines() == [
        "  crsp.dsf 2020 [1/3] reused, 1,000,000 rows",
        "  crsp.dsf 2021 [2/3] read, 1,000,000 rows, 500k rows/s, ETA 2s",
        "  crsp.dsf 2022 [3/3] read, 1,000,000 rows, 500k rows/s; "
        "done: 2 years read, 1 reused, 4.0s (500k rows/s)",
    ]
    assert not {"\r", "\x1b", "█", "░"} & set(out)


def test_throttle_drops_batches_never_starts_or_dones() -> None:
    """Batches closer than 0.1 s to the last drawing are not drawn; starts and dones always are."""
    events: list[tuple[float, Progress]] = []
    for index, year in enumerate((2020, 2021)):
        start = 0.15 * index
        rows: dict[str, Any] = {"dataset_rows_done": 1000 * index, "dataset_rows_total": 2000}
        events.append((start, event(year=year, index=index, total=2, **rows)))
        events += [  # 100 batches of 10 rows, 1.5 ms apart
            (start + k * 0.0015, event(year=year, index=index, total=2, rows_read=10 * k, **rows))
            for k in range(1, 101)
        ]
        rows["dataset_rows_done"] += 1000
        done = event(year=year, index=index, total=2, done=True, action="read", **rows)
        events.append((start + 0.15, done))
    drawn = frames(feed(Tty(), events, columns=120))
    shown = [re.search(r"  ([\d,]+)(?: / 2,000)? rows", f)[1] for f in drawn]  # type: ignore[index]
    # start, the batch 100.5 ms later, done; the same for 2021, whose done ends the line
    assert shown == ["0", "670", "1,000", "1,000", "1,670", "2,000"]
    assert drawn[2].startswith("crsp.dsf  2020 [1/2]")
    assert drawn[3].startswith("crsp.dsf  2021 [2/2]")
    assert drawn[-1].endswith("  2,000 rows  done: 2 years read, 0.3s (7k rows/s)\n")


def test_without_row_estimate_eta_comes_from_partition_counts() -> None:
    """No dataset_rows_total: the bar and the ETA count partitions; rows still show."""
    events = [
        (0.0, event(dataset="crsp.msf", total=4)),
        (1.0, event(dataset="crsp.msf", total=4, rows_read=100_000)),
        (2.0, event(dataset="crsp.msf", total=4, done=True, action="read")),
    ]
    drawn = frames(feed(Tty(), events, columns=120))
    assert drawn[-1] == f"crsp.msf  2020 [1/4]  {bar(5)}  100,000 rows  50k rows/s  ETA 6s\n"
    out = feed(io.StringIO(), events)
    assert out == "  crsp.msf 2020 [1/4] read, 100,000 rows, 50k rows/s, ETA 6s\n"


def test_unpartitioned_dataset_and_events_without_action() -> None:
    """year=None shows as 'all'; events of an older emitter (no action, no totals) still work."""
    events = [
        (0.0, event(dataset="ff.factors_monthly", year=None, total=1)),
        (0.5, event(dataset="ff.factors_monthly", year=None, total=1, rows=1200, done=True)),
    ]
    drawn = frames(feed(Tty(), events, name_width=18, columns=120))
    assert drawn[0].startswith("ff.factors_monthly  all [1/1]  ")
    assert drawn[-1] == (
        f"ff.factors_monthly  all  {bar(20)}  1,200 rows  done: 1 partition finished, 0.5s\n"
    )
    assert feed(io.StringIO(), events) == (
        "  ff.factors_monthly all [1/1] 1,200 rows; done: 1 partition finished, 0.5s\n"
    )


def test_narrow_terminal_keeps_the_eta() -> None:
    """A narrow terminal loses the bar, the rate, the exact rows, never the ETA; no wrapping."""
    drawn = frames(feed(Tty(), DSF, name_width=8, columns=50))
    assert all(len(f.rstrip("\n")) <= 49 for f in drawn)
    assert drawn[3] == "crsp.dsf  2021 [2/3]  1.5M / 3.0M rows  ETA 3s"
    drawn = frames(feed(Tty(), DSF, name_width=8, columns=60))
    assert drawn[3] == "crsp.dsf  2021 [2/3]  1,500,000 / 3,000,000 rows  ETA 3s"
    assert drawn[-1] == "crsp.dsf  2020-2022  done: 2 years read, 1 reused, 4.0s\n"


def test_next_dataset_and_close_end_an_open_line() -> None:
    """A line left open (a failed dataset, an interrupt) is ended before anything else."""
    stream = Tty()
    display = SyncDisplay(stream, columns=120, clock=Clock())
    display.render(event(dataset="crsp.msf"))
    display.render(event(dataset="comp.funda"))
    assert stream.getvalue().count("\n") == 1
    display.close()
    display.close()
    assert stream.getvalue().endswith("\x1b[K\n")
    assert stream.getvalue().count("\n") == 2


def test_bar_falls_back_to_ascii() -> None:
    """A terminal that cannot encode the block characters gets # and -."""

    class AsciiTty(io.TextIOWrapper):
        def isatty(self) -> bool:
            return True

    stream = AsciiTty(io.BytesIO(), encoding="ascii")
    display = SyncDisplay(stream, columns=120, clock=Clock())
    display.render(event(total=2, done=True, action="read", rows=5, dataset_rows_total=10))
    stream.seek(0)
    assert "##########----------" in stream.read()


def test_a_failing_display_never_fails_the_sync(caplog: pytest.LogCaptureFixture) -> None:
    """Calling the display swallows its errors (once, with a warning); render() raises."""

    class Broken(Tty):
        def write(self, text: str) -> int:
            raise BrokenPipeError(32, "Broken pipe")

    display = SyncDisplay(Broken(), columns=120)
    with pytest.raises(BrokenPipeError):
        display.render(event())
    with caplog.at_level(logging.WARNING, logger="wrdsvault.cli"):
        display(event())
        display(event(done=True, action="read"))
    assert [r.getMessage() for r in caplog.records] == [
        "progress display stopped (BrokenPipeError: [Errno 32] Broken pipe); the sync goes on"
    ]
    display.close()  # no error either


def table(out: str) -> dict[str, dict[str, str]]:
    """The summary's table as {dataset: {column: cell}}."""
    lines = out.splitlines()
    header = re.split(r"\s{2,}", lines[0])
    rows = {}
    for line in lines[1:]:
        if line.startswith(" ") or " " not in line or line.startswith(("committed", "unchanged")):
            continue
        cells = re.split(r"\s{2,}", line)
        rows[cells[0]] = dict(zip(header, cells, strict=True))
    return rows


def test_sync_summary_says_what_changed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The summary has a row per dataset: status, years written/reused, rows, vintage, commit."""
    vault = str(tmp_path / "v")
    code, out, err = run(
        capsys, "sync", "crsp.msf", "ff.factors_monthly", "--vault", vault, *SAMPLE
    )
    assert code == 0, err
    rows = table(out)
    assert rows["crsp.msf"]["status"] == "added"
    assert rows["crsp.msf"]["years written"] == "2020-2022"
    assert rows["crsp.msf"]["reused"] == "-"
    assert rows["crsp.msf"]["rows written"] == rows["crsp.msf"]["total rows"] == "965"
    assert rows["ff.factors_monthly"]["rows written"] == "35"
    assert rows["ff.factors_monthly"]["size written"].endswith("kB")
    assert "  crsp.msf: source vintage 'sample:" in out
    assert out.splitlines()[-1].startswith("committed snapshot ")
    assert "2 of 2 datasets changed, 1,000 rows and" in out
    assert "  crsp.msf 2022 [3/3] read, 308 rows, " in err
    assert "; done: 3 years read, " in err

    code, out, err = run(capsys, "sync", "crsp.msf", "--vault", vault, *SAMPLE, "--vintage", "2")
    assert code == 0, err
    row = table(out)["crsp.msf"]
    assert row["status"] == "updated"
    assert (row["years written"], row["reused"], row["removed"]) == ("2020, 2022", "2021", "-")
    assert (row["rows written"], row["total rows"]) == ("657", "993")
    assert "  crsp.msf 2021 [2/3] reused, 336 rows" in err
    assert "  crsp.msf: new source vintage 'sample:" in out and "(was 'sample:" in out

    code, out, err = run(capsys, "sync", "crsp.msf", "--vault", vault, *SAMPLE, "--vintage", "2")
    assert code == 3
    assert table(out)["crsp.msf"] == {
        "dataset": "crsp.msf",
        "status": "unchanged",
        "years written": "-",
        "reused": "2020-2022",
        "removed": "-",
        "rows written": "-",
        "size written": "-",
        "total rows": "993",
    }
    assert "vintage" not in out
    assert out.splitlines()[-1].startswith("unchanged: no new snapshot; ")
    assert err == ""  # an unchanged dataset is skipped without a partition event


def test_sync_quiet_and_json_show_no_progress(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--quiet and --json silence the progress display; --quiet keeps the summary."""
    code, out, err = run(capsys, "sync", "crsp.msf", "--vault", str(tmp_path / "a"), *SAMPLE, "-q")
    assert (code, err) == (0, "")
    assert "committed snapshot" in out
    code, out, err = run(
        capsys, "sync", "crsp.msf", "--vault", str(tmp_path / "b"), *SAMPLE, "--json"
    )
    assert (code, err) == (0, "")
    assert json.loads(out)["committed"] is True


def test_summary_notes_recorded_vintage_drift_and_long_year_lists() -> None:
    """A recorded vintage, accepted drift and scattered years read well in the summary."""
    drift = diff(
        "comp.funda",
        [ColumnSchema(name="gvkey", type="string")],
        [ColumnSchema(name="gvkey", type="string"), ColumnSchema(name="at", type="double")],
    )
    report = SyncReport(
        snapshot_id="s2",
        parent_snapshot_id="s1",
        committed=True,
        duration_s=1.5,
        datasets=(
            DatasetResult(
                dataset="crsp.dsf",
                status="recorded",
                years_reused=(2020, 2021),
                row_count=10,
                change_marker="Daily Stock - Securities (Updated 2025-02-08)",
                previous_change_marker="Daily Stock - Securities (Updated 2024-12-31)",
            ),
            DatasetResult(
                dataset="comp.funda",
                status="updated",
                years_written=(1990, 1992, 1994, 1996, 1998),
                years_removed=(None,),
                rows_written=1234,
                bytes_written=2_500_000,
                row_count=5000,
                change_marker="Company (Updated 2026-02-24) " + "x" * 80,
                drift=drift,
            ),
        ),
    )
    lines = sync_summary(report).splitlines()
    assert lines[:3] == [
        "dataset     status    years written       reused     removed  rows written  "
        "size written  total rows",
        "crsp.dsf    recorded  -                   2020-2021  -                   -  "
        "           -          10",
        "comp.funda  updated   5 years, 1990-1998  -          all             1,234  "
        "      2.5 MB       5,000",
    ]
    assert lines[3] == (
        "  crsp.dsf: new source vintage 'Daily Stock - Securities (Updated 2025-02-08)' "
        "(was 'Daily Stock - Securities (Updated 2024-12-31)') recorded; data identical"
    )
    assert lines[4].startswith("  comp.funda: source vintage 'Company (Updated 2026-02-24) xxx")
    assert lines[4].endswith("...'")
    assert lines[5] == "  comp.funda: schema drift accepted: added at"
    assert lines[6] == (
        "committed snapshot s2 in 1.50 s: 2 of 2 datasets changed, 1,234 rows and 2.5 MB written"
    )


#: (SQL expression, DuckDB's text form, the value --json gives to json.loads(parse_float=Decimal))
TYPED = [
    ("1::tinyint", "1", 1),
    ("(-32768)::smallint", "-32768", -32768),
    ("2147483647::integer", "2147483647", 2147483647),
    ("(-9223372036854775808)::bigint", "-9223372036854775808", -9223372036854775808),
    (
        "170141183460469231731687303715884105727::hugeint",
        "170141183460469231731687303715884105727",
        170141183460469231731687303715884105727,
    ),
    ("255::utinyint", "255", 255),
    ("18446744073709551615::ubigint", "18446744073709551615", 18446744073709551615),
    (
        "340282366920938463463374607431768211455::uhugeint",
        "340282366920938463463374607431768211455",
        340282366920938463463374607431768211455,
    ),
    (
        "123456789012345678.123456789012345678::decimal(38,18)",
        "123456789012345678.123456789012345678",
        Decimal("123456789012345678.123456789012345678"),
    ),
    ("(-1.50)::decimal(4,2)", "-1.50", Decimal("-1.50")),
    ("0.1::double", "0.1", Decimal("0.1")),
    ("1e300::double", "1e+300", Decimal("1e300")),
    ("'nan'::double", "nan", "NaN"),
    ("'inf'::double", "inf", "Infinity"),
    ("'-inf'::double", "-inf", "-Infinity"),
    ("date '2020-02-29'", "2020-02-29", "2020-02-29"),
    ("date 'infinity'", "infinity", "infinity"),
    ("time '23:59:59.999999'", "23:59:59.999999", "23:59:59.999999"),
    ("timestamp_s '2020-01-02 03:04:05'", "2020-01-02 03:04:05", "2020-01-02 03:04:05"),
    (
        "timestamp_ms '2020-01-02 03:04:05.123'",
        "2020-01-02 03:04:05.123",
        "2020-01-02 03:04:05.123",
    ),
    (
        "timestamp '2020-01-02 03:04:05.123456'",
        "2020-01-02 03:04:05.123456",
        "2020-01-02 03:04:05.123456",
    ),
    (
        "timestamp_ns '2020-01-02 03:04:05.123456789'",
        "2020-01-02 03:04:05.123456789",
        "2020-01-02 03:04:05.123456789",
    ),
    (
        "timestamptz '2019-12-31 23:30:00.000001+00'",
        "2019-12-31 23:30:00.000001+00",
        "2019-12-31 23:30:00.000001+00",
    ),
    ("interval 3 day", "3 days", "3 days"),
    (
        "interval '1 year 2 months 3 days 04:05:06.789012'",
        "1 year 2 months 3 days 04:05:06.789012",
        "1 year 2 months 3 days 04:05:06.789012",
    ),
    ("interval '-1 month 1 microsecond'", "-1 month 00:00:00.000001", "-1 month 00:00:00.000001"),
    ("'\\x00\\xff'::blob", "\\x00\\xFF", "\\x00\\xFF"),
    (
        "uuid '12345678-1234-5678-1234-567812345678'",
        "12345678-1234-5678-1234-567812345678",
        "12345678-1234-5678-1234-567812345678",
    ),
    ("true", "true", True),
    ("'a, \"b\"'", 'a, "b"', 'a, "b"'),
    ("''", "", ""),
    ("[1, null, 3]", "[1, NULL, 3]", [1, None, 3]),
    ("{'k': 1, 'i': [interval 1 month]}", "{'k': 1, 'i': [1 month]}", {"k": 1, "i": ["1 month"]}),
    ("map {'a': 1.5::decimal(3,1)}", "{a=1.5}", {"a": Decimal("1.5")}),
    ("[ 'nan'::double ]", "[nan]", ["NaN"]),
    ("null", None, None),
]


@pytest.fixture(scope="module")
def tiny_vault(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A vault with one committed snapshot (the typed values come from SQL literals)."""
    from wrdsvault import Warehouse
    from wrdsvault.sources import SampleSource

    root = tmp_path_factory.mktemp("typed") / "v"
    with Warehouse(
        root, source=SampleSource(seed=0, years=range(2020, 2021), n_securities=10)
    ) as wh:
        assert wh.sync("ff.factors_monthly").committed
    return str(root)


def typed_sql() -> str:
    return "select " + ", ".join(f"{expr} as c{i}" for i, (expr, _, _) in enumerate(TYPED))


def test_query_json_is_exact_for_every_type(
    tiny_vault: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """--json keeps every digit, nanosecond and interval month; NaN/inf become strings."""
    code, out, err = run(capsys, "query", typed_sql(), "--vault", tiny_vault, "--json")
    assert code == 0, err
    rows = json.loads(out, parse_float=Decimal, parse_constant=lambda c: pytest.fail(c))
    assert len(rows) == 1
    assert list(rows[0]) == [f"c{i}" for i in range(len(TYPED))]
    for i, (expr, _, want) in enumerate(TYPED):
        got = rows[0][f"c{i}"]
        assert got == want and type(got) is type(want), (expr, got, want)


def test_query_csv_is_exact_for_every_type(
    tiny_vault: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """--csv prints DuckDB's own text of each value; NULL is empty, '' is quoted."""
    code, out, err = run(capsys, "query", typed_sql(), "--vault", tiny_vault, "--csv")
    assert code == 0, err
    header, row = list(csv.reader(io.StringIO(out)))
    assert header == [f"c{i}" for i in range(len(TYPED))]
    assert row == ["" if text is None else text for _, text, _ in TYPED]
    assert ',"",' in out.splitlines()[1]  # the empty string, told apart from NULL


def test_query_table_is_exact_for_every_type(
    tiny_vault: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """The table shows DuckDB's own text of each value, NULL as NULL, control characters escaped."""
    for expr, text, _ in TYPED:
        code, out, err = run(capsys, "query", f"select {expr} as v", "--vault", tiny_vault)
        assert code == 0, err
        assert out.splitlines()[1].strip() == ("NULL" if text is None else text).strip(), expr
    code, out, _ = run(capsys, "query", "select 'a' || chr(10) || 'b' as v", "--vault", tiny_vault)
    assert out.splitlines() == ["v", "a\\nb"]


@pytest.mark.parametrize("value", ["-1", "0", "nan", "inf", "soon"])
def test_query_bad_timeout_is_a_usage_error(
    tiny_vault: str, capsys: pytest.CaptureFixture[str], value: str
) -> None:
    """--timeout must be a finite number > 0: exit 2 with a usage message, no traceback."""
    with pytest.raises(SystemExit) as info:
        main(["query", "select 1", "--vault", tiny_vault, f"--timeout={value}"])
    assert info.value.code == 2
    assert "expected a number of seconds > 0" in capsys.readouterr().err
