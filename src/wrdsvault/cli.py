"""The ``wrdsvault`` command line: sync, snapshots, query, status, tag, drop, demo.

Every command takes ``--json`` for machine-readable output. Exit codes: 0 success, 1 a wrdsvault
error (the message says what to do), 2 bad usage.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import re
import shutil
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Final, TextIO

import attrs

from wrdsvault._query import Rendered, render
from wrdsvault._sync import Progress
from wrdsvault._version import __version__
from wrdsvault.errors import InvalidNameError, WrdsVaultError
from wrdsvault.reports import DatasetResult, LockInfo, SyncReport
from wrdsvault.retention import RetentionPolicy
from wrdsvault.warehouse import Warehouse

log = logging.getLogger(__name__)

DEFAULT_VAULT = "data/wrds"


def _years(text: str) -> range:
    """``2000-2024`` or ``2019`` -> a range of years."""
    try:
        first, _, last = text.partition("-")
        lo = int(first)
        hi = int(last) if last else lo
    except ValueError:
        msg = f"expected YEAR or FIRST-LAST, e.g. 2000-2024, not {text!r}"
        raise argparse.ArgumentTypeError(msg) from None
    if hi < lo:
        msg = f"{text!r}: the last year is before the first"
        raise argparse.ArgumentTypeError(msg)
    return range(lo, hi + 1)


def _seconds(text: str) -> float:
    """A time limit: a finite number of seconds > 0."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        msg = f"expected a number of seconds > 0, not {text!r}"
        raise argparse.ArgumentTypeError(msg)
    return value


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="wrdsvault",
        description="A local, versioned warehouse of WRDS data (CRSP, Compustat, Fama-French).",
    )
    p.add_argument("--version", action="version", version=f"wrdsvault {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, help_text: str) -> argparse.ArgumentParser:
        cmd = sub.add_parser(name, help=help_text, description=help_text)
        cmd.add_argument("--json", action="store_true", help="print machine-readable JSON")
        if name != "demo":
            cmd.add_argument(
                "--vault",
                default=os.environ.get("WRDSVAULT_VAULT", DEFAULT_VAULT),
                help=f"the vault folder (default: $WRDSVAULT_VAULT or {DEFAULT_VAULT})",
            )
        return cmd

    demo = add("demo", "build a demo vault from synthetic WRDS-shaped data and query it")
    demo.add_argument("dir", nargs="?", help="a new or empty folder (default: a temp folder)")
    demo.add_argument("--securities", type=int, default=2000, help="synthetic permnos (2000)")

    sync = add("sync", "pull datasets from a source and commit one new snapshot")
    sync.add_argument("datasets", nargs="+", metavar="DATASET", help="e.g. crsp.msf comp.funda")
    sync.add_argument("--source", choices=["sample", "wrds"], default="wrds")
    sync.add_argument("--years", type=_years, help="only these years, e.g. 2000-2024")
    sync.add_argument("--full", action="store_true", help="compare every year's content")
    sync.add_argument(
        "--allow-removal",
        action="store_true",
        help="let years the source no longer lists leave the snapshot (refused by default)",
    )
    sync.add_argument(
        "--date-column",
        help="partition column of a table without a built-in spec ('auto' to detect it, 'none' "
        "for one partition)",
    )
    sync.add_argument("--wait", type=float, help="seconds to wait for another writer")
    sync.add_argument("-q", "--quiet", action="store_true", help="show no progress")
    sync.add_argument("--vintage", type=int, default=1, choices=[1, 2], help="sample source only")
    sync.add_argument("--seed", type=int, default=0, help="sample source only")
    sync.add_argument(
        "--sample-years",
        type=_years,
        default=range(2015, 2025),
        help="years the sample source serves (2015-2024)",
    )
    sync.add_argument("--securities", type=int, default=1000, help="sample source only")
    sync.add_argument("--wrds-username", help="WRDS user (default: $PGUSER / ~/.pgpass)")
    sync.add_argument("--wrds-hostname", help="WRDS host (default: wrds-pgdata.wharton.upenn.edu)")
    sync.add_argument("--wrds-port", type=int, help="WRDS port (default: 9737)")
    sync.add_argument("--wrds-dbname", help="WRDS database (default: wrds)")

    add("snapshots", "list committed snapshots, oldest first")

    query = add("query", "run one SELECT on a snapshot and print the result")
    query.add_argument("sql", help="one SELECT statement, e.g. 'select count(*) from crsp.msf'")
    query.add_argument("--snapshot", default="latest", help="tag, id, 'latest' or ISO date")
    query.add_argument("--max-rows", type=int, default=50, help="rows to print (50; 0 = all)")
    query.add_argument("--csv", action="store_true", help="print CSV")
    query.add_argument(
        "--timeout", type=_seconds, help="interrupt after this many seconds (a number > 0)"
    )

    add("status", "show the latest snapshot, datasets, tags, disk and the writer lock")

    verify = add("verify", "re-hash every file of a snapshot; exit 1 if any is damaged")
    verify.add_argument("--snapshot", default="latest", help="tag, id, 'latest' or ISO date")
    verify.add_argument("--all", action="store_true", help="every committed snapshot")

    unlock = add("unlock", "show the writer lock; with --force break it by hand")
    unlock.add_argument("--force", action="store_true", help="break the lock after asking")
    unlock.add_argument("--yes", action="store_true", help="do not ask")

    doctor = add("doctor", "report leftovers and damage; --repair removes provable garbage")
    doctor.add_argument("--repair", action="store_true", help="remove garbage (takes the lock)")

    quarantine = add("quarantine", "list, show or purge failed writes kept in quarantine/")
    quarantine.add_argument("action", choices=["list", "show", "purge"])
    quarantine.add_argument("names", nargs="*", metavar="NAME", help="entries (show, purge)")
    quarantine.add_argument("--all", action="store_true", help="purge every entry")

    drop = add("drop", "commit a snapshot without some datasets (older snapshots keep them)")
    drop.add_argument("datasets", nargs="+", metavar="DATASET", help="e.g. main.x")
    drop.add_argument("--yes", action="store_true", help="do not ask")
    drop.add_argument("--wait", type=float, help="seconds to wait for another writer")

    tag = add("tag", "name a snapshot so backtests can pin it (and gc keeps it)")
    tag.add_argument("name")
    tag.add_argument("ref", nargs="?", default="latest")
    tag.add_argument("--force", action="store_true", help="move an existing tag")
    tag.add_argument(
        "--delete", action="store_true", help="delete the tag (gc may then expire its snapshot)"
    )
    tag.add_argument("--yes", action="store_true", help="do not ask (with --delete)")

    gc = add("gc", "expire snapshots by a retention policy and delete files nothing needs")
    gc.add_argument("--dry-run", action="store_true", help="only show what would happen")
    gc.add_argument("--keep-last", type=int, metavar="N", help="keep the N newest snapshots")
    gc.add_argument(
        "--keep-within",
        metavar="SPAN",
        help="keep snapshots committed within SPAN of the newest (90d, 12h, 2w, 6m, 1y)",
    )
    for unit in ("daily", "weekly", "monthly", "yearly"):
        gc.add_argument(
            f"--keep-{unit}",
            type=int,
            metavar="N",
            help=f"keep the newest snapshot of each of the N most recent {unit} buckets (UTC)",
        )
    gc.add_argument("--wait", type=float, help="seconds to wait for another writer")

    add("expired", "list the snapshots gc expired (the expiry log)")
    return p


def _print_json(obj: Any, out: TextIO) -> None:
    json.dump(obj, out, indent=2, default=str)
    out.write("\n")


#: Redraw a progress line at most this often (10 per second); start and done events are always
#: drawn, so only the per-batch events are dropped.
_REDRAW_INTERVAL_S: Final = 0.1
_BAR_WIDTH: Final = 20
#: A bar narrower than this says nothing; leave it out on a narrow terminal.
_MIN_BAR_WIDTH: Final = 5
_CLEAR_TO_EOL: Final = "\x1b[K"
#: Outcomes of a finished partition, in the order the tail of a progress line names them.
_ACTIONS: Final = ("read", "reused", "resumed")


def _count(n: float) -> str:
    """``310_512`` -> ``310k``: a short count for a rate or a narrow terminal."""
    if n < 1e3:
        return f"{n:.0f}"
    if n < 999_500:  # not "1000k"
        return f"{n / 1e3:.0f}k"
    return f"{n / 1e6:.1f}M"


def _duration(seconds: float, *, tenths: bool = False) -> str:
    """``75`` -> ``1m15s``; with ``tenths``, under a minute keeps one decimal (``12.3s``)."""
    if seconds < 60:
        return f"{seconds:.1f}s" if tenths else f"{seconds:.0f}s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def _size(size_bytes: int) -> str:
    """``1_234_567`` -> ``1.2 MB`` (decimal units, as `status` prints them)."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if size_bytes >= scale:
            return f"{size_bytes / scale:,.1f} {unit}"
    return f"{size_bytes} B"


@attrs.define
class _DatasetProgress:
    """What the progress display knows about the dataset being synced."""

    name: str
    started_at: float
    last_event_at: float
    total: int = 0  # partitions this sync looks at
    finished: int = 0  # partitions finished
    index: int = 0
    year: int | None = None
    years: set[int] = attrs.field(factory=set)
    rows_total: int | None = None  # the source's count or estimate for all partitions
    rows_done: int = 0  # rows of finished partitions, whatever happened to them
    in_flight_since: float | None = None  # when the current partition started
    in_flight_rows: int = 0
    read_rows: int = 0  # rows of finished partitions streamed from the source ...
    read_s: float = 0.0  # ... and the time they took: the rate counts nothing else
    timed: int = 0  # partitions read (or of unknown action), for the partition-count ETA
    timed_s: float = 0.0
    actions: Counter[str | None] = attrs.field(factory=Counter)
    last_rows: int = 0  # the last finished partition's rows and seconds
    last_s: float = 0.0

    @property
    def done(self) -> bool:
        return self.finished >= self.total

    @property
    def rows_now(self) -> int:
        return self.rows_done + self.in_flight_rows

    def observe(self, ev: Progress, now: float) -> None:
        """Take in one event."""
        self.total, self.index, self.year = ev.total, ev.index, ev.year
        if ev.year is not None:
            self.years.add(ev.year)
        if ev.dataset_rows_total is not None:
            self.rows_total = ev.dataset_rows_total
        if not ev.done:
            if ev.rows_read == 0 or self.in_flight_since is None:  # a partition started
                self.in_flight_since = now
            self.in_flight_rows = ev.rows_read
            self.rows_done = max(self.rows_done, ev.dataset_rows_done)
        else:
            since = self.last_event_at if self.in_flight_since is None else self.in_flight_since
            seconds = max(now - since, 0.0)
            # dataset_rows_done counts the partition just finished; events without it (other
            # emitters) fall back to what the partition said about itself.
            if ev.dataset_rows_done > self.rows_done:
                rows = ev.dataset_rows_done - self.rows_done
            else:
                rows = max(self.in_flight_rows, ev.rows_read, ev.rows or 0)
            self.rows_done += rows
            self.finished = max(self.finished + 1, ev.index + 1)
            self.actions[ev.action] += 1
            # Reused and resumed partitions take no download time: counting their rows would
            # promise a rate the next read cannot keep.
            if ev.action == "read":
                self.read_rows += rows
                self.read_s += seconds
            if ev.action in ("read", None):
                self.timed += 1
                self.timed_s += seconds
            self.last_rows, self.last_s = rows, seconds
            self.in_flight_since, self.in_flight_rows = None, 0
        self.last_event_at = now

    def rate(self, now: float) -> float | None:
        """Rows per second streamed from the source so far, in-flight partition included."""
        rows = self.read_rows + self.in_flight_rows
        seconds = self.read_s
        if self.in_flight_since is not None:
            seconds += now - self.in_flight_since
        return rows / seconds if rows and seconds > 0 else None

    def eta_s(self, now: float) -> float | None:
        """Seconds left, from the rows left and the rate; from partition counts without rows."""
        if self.done:
            return 0.0
        if self.rows_total is not None:
            rate, left = self.rate(now), self.rows_total - self.rows_now
            return left / rate if rate and left > 0 else None
        if not self.timed:
            return None
        in_flight = 0.0 if self.in_flight_since is None else now - self.in_flight_since
        per_partition = self.timed_s / self.timed
        return max(per_partition * (self.total - self.finished) - in_flight, 0.0)

    def fraction(self) -> float:
        if self.rows_total:
            return min(self.rows_now / self.rows_total, 1.0)
        return min(self.finished / self.total, 1.0) if self.total else 1.0

    def where(self, *, final: bool) -> str:
        """``2021 [3/5]``; a finished line names the years it covered: ``2020-2024``."""
        if not final:
            year = "all" if self.year is None else str(self.year)
            return f"{year} [{self.index + 1}/{self.total}]"
        if not self.years:
            return "all"
        first, last = min(self.years), max(self.years)
        return str(first) if first == last else f"{first}-{last}"

    def tail(self, now: float, *, rate: bool = True) -> str:
        """``done: 2 years read, 3 reused, 12.3s (310k rows/s)``."""
        noun = "year" if self.years else "partition"
        parts: list[str] = []
        for action in (*_ACTIONS, None):
            n = self.actions[action]
            if n:
                label = str(n) if parts else f"{n} {noun}{'' if n == 1 else 's'}"
                parts.append(f"{label} {action or 'finished'}")
        parts.append(_duration(now - self.started_at, tenths=True))
        speed = self.rate(now) if rate else None
        return "done: " + ", ".join(parts) + (f" ({_count(speed)} rows/s)" if speed else "")


class _SyncProgress:
    """Show the `Progress` events of one sync on ``err``.

    On a terminal, one line per dataset is redrawn in place (``\\r``) with a bar, rows, rate and
    ETA, at most ten times a second; a finished dataset's line ends with a tail saying what
    happened. Elsewhere (CI logs, pipes) one plain line per finished partition.

    Calling the object never raises: a display that fails (a closed or broken stream, a bug
    here) is switched off with a warning and the sync goes on. `render` raises, for tests.
    """

    def __init__(
        self,
        err: TextIO,
        *,
        name_width: int = 0,
        columns: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._err = err
        try:
            self._tty = err.isatty()
        except (AttributeError, OSError, ValueError):  # no stderr (pythonw, 2>&-), or closed
            self._tty = False
        self._name_width = name_width
        self._columns = columns
        self._clock = clock
        self._line: _DatasetProgress | None = None
        self._open = False  # a TTY line is drawn and not yet ended with a newline
        self._drawn_at = -float("inf")
        self._failed = False
        self._bar = "█░"
        try:
            "█░".encode(getattr(err, "encoding", None) or "utf-8")
        except (UnicodeEncodeError, LookupError):
            self._bar = "#-"

    def __call__(self, event: Progress) -> None:
        if self._failed:
            return
        try:
            self.render(event)
        except Exception as exc:  # a display must never fail the sync it reports on
            self._failed = True
            log.warning(
                "progress display stopped (%s: %s); the sync goes on", type(exc).__name__, exc
            )

    def __enter__(self) -> _SyncProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """End a line left open (a failed or interrupted sync), so messages start on their own."""
        with contextlib.suppress(OSError, ValueError):
            self._end_line()

    def render(self, ev: Progress) -> None:
        """Take in one event and write what it changes."""
        now = self._clock()
        line = self._line
        if line is None or line.name != ev.dataset:
            self._end_line()
            line = self._line = _DatasetProgress(name=ev.dataset, started_at=now, last_event_at=now)
        line.observe(ev, now)
        if not self._tty:
            if ev.done:
                self._write(self._plain(line, ev, now) + "\n")
            return
        final = ev.done and line.done
        batch = not ev.done and ev.rows_read > 0
        if batch and now - self._drawn_at < _REDRAW_INTERVAL_S:
            return
        self._drawn_at = now
        self._write(
            "\r" + self._fancy(line, now, final=final) + _CLEAR_TO_EOL + ("\n" if final else "")
        )
        self._open = not final

    def _write(self, text: str) -> None:
        self._err.write(text)
        self._err.flush()

    def _end_line(self) -> None:
        if self._open:
            self._open = False
            self._write("\n")

    def _width(self) -> int:
        if self._columns is not None:
            return self._columns
        try:
            columns = os.get_terminal_size(self._err.fileno()).columns
        except (OSError, ValueError, AttributeError):
            columns = shutil.get_terminal_size().columns
        return columns if columns > 0 else 80

    def _plain(self, line: _DatasetProgress, ev: Progress, now: float) -> str:
        """``  crsp.msf 2021 [2/3] read, 12,000 rows, 45k rows/s, ETA 3s``."""
        fields: list[str] = [ev.action] if ev.action else []
        if ev.rows is not None or line.last_rows:
            fields.append(f"{line.last_rows:,} rows")
        if ev.action == "read" and line.last_rows and line.last_s > 0:
            fields.append(f"{_count(line.last_rows / line.last_s)} rows/s")
        eta = line.eta_s(now)
        if not line.done and eta is not None:
            fields.append(f"ETA {_duration(eta)}")
        text = f"  {line.name} {line.where(final=False)} {', '.join(fields)}".rstrip()
        return text + (f"; {line.tail(now)}" if line.done else "")

    def _fancy(self, line: _DatasetProgress, now: float, *, final: bool) -> str:
        """``crsp.msf  2021 [3/5]  ████░░░░  1,234,567 / 5,000,000 rows  310k rows/s  ETA 12s``.

        On a narrow terminal the bar goes first, then the rate, then the exact row counts
        (``1.5M / 3.0M rows``; a finished line drops its rows); the ETA and the tail stay.
        """
        limit = self._width() - 1  # writing the last column wraps on some terminals
        head = f"{line.name:<{self._name_width}}  {line.where(final=final)}"
        rows = f"{line.rows_now:,} rows"
        if final:
            short = line.tail(now, rate=False)
            choices = [[rows, line.tail(now)], [rows, short], [short]]
        else:
            short = f"{_count(line.rows_now)} rows"
            if line.rows_total is not None:
                rows = f"{line.rows_now:,} / {line.rows_total:,} rows"
                short = f"{_count(line.rows_now)} / {_count(line.rows_total)} rows"
            rate, eta = line.rate(now), line.eta_s(now)
            eta_text = [] if eta is None else [f"ETA {_duration(eta)}"]
            choices = [[rows, *([f"{_count(rate)} rows/s"] if rate else []), *eta_text]]
            choices += [[rows, *eta_text], [short, *eta_text]]
        bar = self._bar_of(line, limit)
        texts = [
            "  ".join([head, *([bar] if bar and with_bar else []), *fields])
            for fields in choices
            for with_bar in (True, False)
        ]
        return next((t for t in texts if len(t) <= limit), texts[-1][:limit].rstrip())

    def _bar_of(self, line: _DatasetProgress, limit: int) -> str:
        """The bar, as wide as the dataset's widest line allows, so that it does not jump."""
        total = line.rows_total
        widest = len(f"{line.name:<{self._name_width}}  9999 [{line.total}/{line.total}]")
        widest += len(f"{total:,} / {total:,} rows" if total is not None else "999,999,999 rows")
        widest += len("999k rows/s  ETA 59m59s") + 3 * 2  # and the separators
        width = min(_BAR_WIDTH, limit - widest - 2)
        if width < _MIN_BAR_WIDTH:
            return ""
        full = round(line.fraction() * width)
        return self._bar[0] * full + self._bar[1] * (width - full)


def _years_text(years: Iterable[int | None]) -> str:
    """``[2015, 2016, 2017, 2021]`` -> ``2015-2017, 2021``; many runs -> ``12 years, 1990-2024``."""
    given = list(years)
    known = sorted(y for y in given if y is not None)
    runs: list[list[int]] = []
    for year in known:
        if runs and year == runs[-1][-1] + 1:
            runs[-1].append(year)
        else:
            runs.append([year])
    if len(runs) > 3:
        return f"{len(known)} years, {known[0]}-{known[-1]}"
    texts = [str(r[0]) if len(r) == 1 else f"{r[0]}-{r[-1]}" for r in runs]
    if None in given:
        texts.insert(0, "all")  # an unpartitioned dataset's one file
    return ", ".join(texts) or "-"


#: How much of a source vintage (WRDS: the table comment) the summary shows.
_MARKER_CHARS: Final = 72


def _notes(d: DatasetResult) -> list[str]:
    """The lines under the table about one dataset: its source vintage and accepted drift."""
    notes = []
    marker = d.change_marker
    if marker is not None and d.status != "unchanged":
        if len(marker) > _MARKER_CHARS:
            marker = marker[: _MARKER_CHARS - 3] + "..."
        was = d.previous_change_marker
        changed = was is not None and was != d.change_marker
        if was is not None and len(was) > _MARKER_CHARS:
            was = was[: _MARKER_CHARS - 3] + "..."
        since = f" (was {was!r})" if changed else ""
        if d.status == "recorded":
            notes.append(
                f"{d.dataset}: new source vintage {marker!r}{since} recorded; data identical"
            )
        elif changed:
            notes.append(f"{d.dataset}: new source vintage {marker!r}{since}")
        else:
            notes.append(f"{d.dataset}: source vintage {marker!r}")
    if d.drift is not None:
        notes.append(f"{d.dataset}: schema drift accepted: {d.drift.summary()}")
    return notes


def _summary(report: SyncReport) -> str:
    """What a sync changed: a table with one row per dataset, notes, then the commit.

    ::

        dataset   status   years written  reused     removed  rows written  size written  total rows
        crsp.msf  updated  2024           2015-2023  -             12,000      301.2 kB     120,000
          crsp.msf: source vintage 'Monthly Stock - Securities (Updated 2025-02-08)'
        committed snapshot 20250210T...-0002 in 3.21 s: 1 of 1 dataset changed, ...

    ``resumed`` (years taken from the checkpoint of an interrupted sync, also counted as
    written) appears only when a dataset has some.
    """
    resumed = any(getattr(d, "years_resumed", ()) for d in report.datasets)
    header = ["dataset", "status", "years written", "reused"]
    header += ["resumed"] if resumed else []
    header += ["removed", "rows written", "size written", "total rows"]
    table = [header]
    for d in report.datasets:
        row = [
            d.dataset,
            d.status,
            _years_text(d.years_written),
            _years_text(d.years_reused),
        ]
        row += [_years_text(getattr(d, "years_resumed", ()))] if resumed else []
        row += [
            _years_text(d.years_removed),
            f"{d.rows_written:,}" if d.years_written else "-",
            _size(d.bytes_written) if d.years_written else "-",
            f"{d.row_count:,}",
        ]
        table.append(row)
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    numeric = len(header) - 3  # rows written, size written, rows: right-aligned
    lines = [
        "  ".join(
            cell.rjust(w) if i >= numeric else cell.ljust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        ).rstrip()
        for row in table
    ]
    lines += [f"  {note}" for d in report.datasets for note in _notes(d)]
    changed = sum(d.status != "unchanged" for d in report.datasets)
    if report.committed:
        n = len(report.datasets)
        lines.append(
            f"committed snapshot {report.snapshot_id} in {report.duration_s:.2f} s: "
            f"{changed} of {n} dataset{'' if n == 1 else 's'} changed, "
            f"{report.rows_written:,} rows and {_size(report.bytes_written)} written"
        )
    else:
        current = f"; {report.snapshot_id} stays current" if report.snapshot_id else ""
        lines.append(f"unchanged: no new snapshot{current} ({report.duration_s:.2f} s)")
    return "\n".join(lines)


def _open(args: argparse.Namespace, *, source: Any = None, create: bool = False) -> Warehouse:
    return Warehouse(args.vault, source=source, create=create)


def _cmd_sync(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    source: Any
    if args.source == "wrds":
        from wrdsvault.sources import WrdsSource

        connect = {
            f"wrds_{k}": getattr(args, f"wrds_{k}")
            for k in ("username", "hostname", "port", "dbname")
            if getattr(args, f"wrds_{k}") is not None
        }
        source = WrdsSource(**connect)  # connects on first use: one login for the whole sync
    else:
        from wrdsvault.sources import SampleSource

        source = SampleSource(
            seed=args.seed,
            years=args.sample_years,
            vintage=args.vintage,
            n_securities=args.securities,
        )
    kwargs: dict[str, Any] = {}
    if args.date_column is not None:
        kwargs["date_column"] = None if args.date_column.lower() == "none" else args.date_column
    display: contextlib.AbstractContextManager[_SyncProgress | None] = contextlib.nullcontext()
    if not (args.json or args.quiet):
        display = _SyncProgress(err, name_width=max(len(name) for name in args.datasets))
    with _open(args, source=source, create=True) as wh, display as progress:
        report = wh.sync(
            args.datasets,
            years=args.years,
            full=args.full,
            allow_removal=args.allow_removal,
            wait=args.wait,
            progress=progress,
            **kwargs,
        )
    if args.json:
        _print_json(report.to_json(), out)
    else:
        out.write(_summary(report) + "\n")
    return 0


def _cmd_snapshots(args: argparse.Namespace, out: TextIO, _err: TextIO) -> int:
    with _open(args) as wh:
        snaps = wh.snapshots()
    if args.json:
        _print_json([s.to_json() for s in snaps], out)
        return 0
    if not snaps:
        out.write("no snapshots yet; run `wrdsvault sync`\n")
    for s in snaps:
        tags = f"  tags: {', '.join(s.tags)}" if s.tags else ""
        out.write(
            f"{s.id}  {s.committed_at:%Y-%m-%d %H:%M:%S}Z  {s.row_count:>12,} rows  "
            f"{len(s.datasets)} datasets  {s.fingerprint[:12]}{tags}\n"
        )
    return 0


def _cmd_query(args: argparse.Namespace, out: TextIO, _err: TextIO) -> int:
    with _open(args) as wh, wh.snapshot(args.snapshot) as snap:
        result = snap._run(args.sql, None, args.timeout, render("json" if args.json else "text"))
    if args.json:
        _write_json_rows(result, out)
    elif args.csv:
        _write_csv(result, out)
    else:
        _write_table(result, out, args.max_rows)
    return 0


def _write_json_rows(result: Rendered, out: TextIO) -> None:
    """One JSON object per row, keys in column order; values as DuckDB's ``to_json`` gives them."""
    keys = [json.dumps(c) for c in result.columns]
    out.write("[")
    for i, row in enumerate(result.rows):
        fields = ", ".join(
            f"{k}: {'null' if v is None else v}" for k, v in zip(keys, row, strict=True)
        )
        out.write(("," if i else "") + "\n  {" + fields + "}")
    out.write("\n]\n" if result.rows else "]\n")


_CSV_SPECIAL: Final = re.compile(r'[",\r\n]|^\s|\s$')


def _csv_field(value: str | None) -> str:
    """RFC 4180 quoting; NULL is an empty field and an empty string is ``""``."""
    if value is None:
        return ""
    if value == "" or _CSV_SPECIAL.search(value):
        return '"' + value.replace('"', '""') + '"'
    return value


def _write_csv(result: Rendered, out: TextIO) -> None:
    out.write(",".join(_csv_field(c) for c in result.columns) + "\n")
    for row in result.rows:
        out.write(",".join(_csv_field(v) for v in row) + "\n")


_NUMERIC: Final = re.compile(r"^(U?(TINY|SMALL|BIG|HUGE)?INT(EGER)?|DECIMAL.*|FLOAT|DOUBLE)$")
_CONTROL: Final = re.compile(r"[\x00-\x1f\x7f]")


def _cell(value: str | None) -> str:
    """A value on one line: NULL spelled out, control characters escaped (\\n, \\t, \\x01)."""
    if value is None:
        return "NULL"
    escapes = {"\n": "\\n", "\t": "\\t", "\r": "\\r"}
    return _CONTROL.sub(lambda m: escapes.get(m.group(), f"\\x{ord(m.group()):02x}"), value)


def _write_table(result: Rendered, out: TextIO, max_rows: int) -> None:
    shown = result.rows if max_rows <= 0 else result.rows[:max_rows]
    cells = [[_cell(v) for v in row] for row in shown]
    right = [bool(_NUMERIC.match(t)) for t in result.types]
    widths = [max([len(c), *(len(r[i]) for r in cells)]) for i, c in enumerate(result.columns)]

    def line(values: Sequence[str]) -> str:
        parts = [
            v.rjust(w) if r else v.ljust(w) for v, w, r in zip(values, widths, right, strict=True)
        ]
        return "  ".join(parts).rstrip()

    out.write(line(result.columns) + "\n")
    for row in cells:
        out.write(line(row) + "\n")
    if len(shown) < len(result.rows):
        out.write(f"... {len(result.rows) - len(shown):,} more rows (--max-rows 0 shows all)\n")


def _cmd_status(args: argparse.Namespace, out: TextIO, _err: TextIO) -> int:
    with _open(args) as wh:
        st = wh.status()
    if args.json:
        _print_json(st.to_json(), out)
        return 0
    out.write(f"vault     {st.root} (format {st.format_version})\n")
    out.write(f"snapshots {st.snapshot_count}")
    if st.latest_id:
        out.write(f"; latest {st.latest_id} committed {st.latest_committed_at:%Y-%m-%d %H:%M:%S}Z")
        out.write(f"\n          fingerprint {st.fingerprint}")
    out.write("\n")
    for d in st.datasets:
        years = "" if d.first_year is None else f"{d.first_year}-{d.last_year}"
        out.write(
            f"  {d.name:<24} {d.row_count:>12,} rows {d.partitions:>3} files {years:>9}  "
            f"{d.size_bytes / 1e6:>8.1f} MB  {d.comment or ''}\n"
        )
    disk = st.disk
    if disk is not None:
        out.write(
            f"disk      {disk.used_fraction:.0%} used, {disk.free_bytes / 1e9:,.1f} GB free "
            f"({disk.level})\n"
        )
    for name, drift in sorted(st.drift.items()):
        out.write(f"drift     {name}: {drift}\n")
    if st.quarantined:
        out.write(f"quarantine {st.quarantined} failed write(s): `wrdsvault quarantine list`\n")
    if st.reclaimable_bytes or st.expired_count:
        out.write(
            f"gc        {_size(st.reclaimable_bytes)} reclaimable by the stored retention policy"
            f" (`wrdsvault gc --dry-run`); {st.expired_count} snapshot(s) expired\n"
        )
    if st.tags:
        out.write(
            "tags      " + ", ".join(f"{k} -> {v}" for k, v in sorted(st.tags.items())) + "\n"
        )
    out.write(f"lock      {_describe_lock(st.lock_holder)}\n")
    return 0


def _cmd_verify(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    last = [0.0]

    def progress(files: int, total: int, done: int, total_bytes: int) -> None:
        now = time.monotonic()
        if not args.json and (now - last[0] > 0.5 or files == total):
            last[0] = now
            pct = 100 * done / total_bytes if total_bytes else 100.0
            err.write(
                f"\r  verifying {files}/{total} files, {pct:5.1f}% of {total_bytes / 1e6:,.0f} MB"
            )
            if files == total:
                err.write("\n")
            err.flush()

    with _open(args) as wh:
        report = wh.verify(args.snapshot, all_snapshots=args.all, progress=progress)
    if args.json:
        _print_json(report.to_json(), out)
    else:
        out.write(report.summary() + "\n")
    return 0 if report.ok else 1


def _describe_lock(lock: LockInfo | None) -> str:
    if lock is None or lock.free:
        return "free"
    if lock.unreadable:
        return f"{lock.state} (unreadable owner record)"
    clock = " by this machine's clock" if lock.clock == "local" else ""
    return (
        f"{lock.state}: pid {lock.pid} on {lock.host} since {lock.acquired_at} "
        f"({lock.operation}), last heartbeat {lock.heartbeat_age_s or 0:.0f} s ago{clock}"
    )


def _cmd_unlock(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    with _open(args) as wh:
        lock = wh.lock_info()
        if lock.free:
            if args.json:
                _print_json({"state": "free", "broken": False}, out)
            else:
                out.write("the writer lock is free\n")
            return 0
        if not args.json:
            out.write(f"writer lock {_describe_lock(lock)}\n")
        writable = lock.write_access is not False
        if not args.force:
            if args.json:
                _print_json({**lock.to_json(), "broken": False}, out)
            elif not writable:
                out.write(
                    f"breaking it needs write access to {wh.root}, which this user does not "
                    "have: run `wrdsvault unlock` as a user who may write it, on a writable mount\n"
                )
            else:
                out.write(
                    "pass --force to break it by hand (refused while its owner is alive "
                    "on this host)\n"
                )
            return 1
        if not args.yes and writable:  # without write access, break_lock says so: do not ask
            if not sys.stdin.isatty():
                err.write("wrdsvault: not breaking the lock without a confirmation; pass --yes\n")
                return 1
            out.write("Break it? Only do this if that writer is really gone. [y/N] ")
            out.flush()
            if sys.stdin.readline().strip().lower() not in ("y", "yes"):
                out.write("left alone\n")
                return 1
        broken = wh.break_lock(expect_token=lock.incarnation)
    if args.json:
        _print_json(broken.to_json(), out)
    else:
        out.write("lock broken\n" if broken.broken else "the lock was already free\n")
    return 0


def _cmd_doctor(args: argparse.Namespace, out: TextIO, _err: TextIO) -> int:
    with _open(args) as wh:
        report = wh.doctor(repair=args.repair)
    if args.json:
        _print_json(report.to_json(), out)
    else:
        out.write(report.summary() + "\n")
    return 0 if report.healthy else 1


def _cmd_quarantine(args: argparse.Namespace, out: TextIO, _err: TextIO) -> int:
    with _open(args) as wh:
        if args.action == "list":
            entries = wh.quarantine()
            if args.json:
                _print_json([e.to_json() for e in entries], out)
            elif not entries:
                out.write("quarantine is empty\n")
            for e in entries if not args.json else ():
                out.write(f"{e.name}  {e.error}  {e.size_bytes / 1e6:,.1f} MB  {e.message[:90]}\n")
            return 0
        if args.action == "show":
            by_name = {e.name: e for e in wh.quarantine()}
            missing = [n for n in args.names if n not in by_name]
            if not args.names or missing:
                raise InvalidNameError(
                    kind="quarantine entry",
                    value=missing or args.names,
                    rule="name entries listed by `wrdsvault quarantine list`",
                )
            _print_json([by_name[n].reason for n in args.names], out)
            return 0
        if not args.names and not args.all:
            raise InvalidNameError(
                kind="quarantine entry", value=[], rule="name entries to purge, or pass --all"
            )
        purged = wh.purge_quarantine(None if args.all else args.names)
    if args.json:
        _print_json({"purged": purged}, out)
    else:
        out.write(f"purged {len(purged)} entr{'y' if len(purged) == 1 else 'ies'}\n")
    return 0


def _cmd_drop(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    with _open(args) as wh:
        if not args.yes:
            if not sys.stdin.isatty():
                err.write("wrdsvault: not dropping without a confirmation; pass --yes\n")
                return 1
            with wh.snapshot() as latest:
                held = {name: latest.dataset(name) for name in args.datasets}
                out.write(f"The latest snapshot {latest.id} holds:\n")
            for name, entry in held.items():
                out.write(
                    f"  {name:<24} {entry.row_count:>12,} rows {len(entry.partitions):>3} files\n"
                )
            out.write(
                "Commit a new snapshot without them? Older snapshots keep them and their files. "
                "[y/N] "
            )
            out.flush()
            if sys.stdin.readline().strip().lower() not in ("y", "yes"):
                out.write("left alone\n")
                return 1
        snapshot_id = wh.drop(args.datasets, wait=args.wait)
    if args.json:
        _print_json({"snapshot_id": snapshot_id, "dropped": args.datasets}, out)
    else:
        out.write(f"committed snapshot {snapshot_id} without {', '.join(args.datasets)}\n")
    return 0


def _cmd_tag(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    if args.delete:
        return _untag(args, out, err)
    with _open(args) as wh:
        target = wh.tag(args.name, args.ref, force=args.force)
    if args.json:
        _print_json({"tag": args.name, "snapshot_id": target}, out)
    else:
        out.write(f"{args.name} -> {target}\n")
    return 0


def _untag(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    with _open(args) as wh:
        if not args.yes:
            if not sys.stdin.isatty():
                err.write("wrdsvault: not deleting a tag without a confirmation; pass --yes\n")
                return 1
            target = wh.tags().get(args.name)
            if target is None:
                wh.untag(args.name)  # raises SnapshotNotFoundError listing the tags
            out.write(
                f"Delete tag {args.name} (-> {target})? Code pinned to it stops working, and gc "
                "may expire the snapshot. [y/N] "
            )
            out.flush()
            if sys.stdin.readline().strip().lower() not in ("y", "yes"):
                out.write("left alone\n")
                return 1
        target = wh.untag(args.name)
    if args.json:
        _print_json({"tag": args.name, "deleted": True, "snapshot_id": target}, out)
    else:
        out.write(f"deleted tag {args.name} (it named {target})\n")
    return 0


def _cmd_gc(args: argparse.Namespace, out: TextIO, _err: TextIO) -> int:
    rules = {
        "keep_last": args.keep_last,
        "keep_within": args.keep_within,
        "keep_daily": args.keep_daily,
        "keep_weekly": args.keep_weekly,
        "keep_monthly": args.keep_monthly,
        "keep_yearly": args.keep_yearly,
    }
    with _open(args) as wh:
        policy = RetentionPolicy(**rules) if any(v is not None for v in rules.values()) else None
        if args.dry_run:
            plan = wh.gc(policy=policy, dry_run=True)
            if args.json:
                _print_json({"dry_run": True, **plan.to_json()}, out)
            else:
                out.write(plan.summary() + "\n(dry run: nothing was changed)\n")
            return 0
        report = wh.gc(policy=policy, wait=args.wait)
    if args.json:
        _print_json({"dry_run": False, **report.to_json()}, out)
    else:
        for sid in report.expired:
            out.write(f"expired {sid}\n")
        out.write(report.summary() + "\n")
    return 0


def _cmd_expired(args: argparse.Namespace, out: TextIO, _err: TextIO) -> int:
    with _open(args) as wh:
        entries = wh.expired()
    if args.json:
        _print_json([e.to_json() for e in entries], out)
        return 0
    if not entries:
        out.write("no snapshot was expired\n")
    for e in entries:
        out.write(
            f"{e.id}  committed {e.committed_at:%Y-%m-%d %H:%M:%S}Z  expired "
            f"{e.expired_at:%Y-%m-%d %H:%M:%S}Z  {e.fingerprint[:12]}  "
            f"{RetentionPolicy.from_json(e.policy)}\n"
        )
    return 0


def _cmd_demo(args: argparse.Namespace, out: TextIO, _err: TextIO) -> int:
    from wrdsvault.demo import run_demo

    root = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="wrdsvault-demo-"))
    result = run_demo(root, n_securities=args.securities, out=None if args.json else out)
    if args.json:
        _print_json(result, out)
    return 0


_COMMANDS = {
    "demo": _cmd_demo,
    "sync": _cmd_sync,
    "snapshots": _cmd_snapshots,
    "query": _cmd_query,
    "status": _cmd_status,
    "tag": _cmd_tag,
    "verify": _cmd_verify,
    "quarantine": _cmd_quarantine,
    "doctor": _cmd_doctor,
    "unlock": _cmd_unlock,
    "drop": _cmd_drop,
    "gc": _cmd_gc,
    "expired": _cmd_expired,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; return the exit code."""
    args = _parser().parse_args(argv)
    out, err = sys.stdout, sys.stderr
    try:
        return _COMMANDS[args.command](args, out, err)
    except WrdsVaultError as exc:
        if getattr(args, "json", False):
            _print_json({"error": type(exc).__name__, "message": str(exc)}, out)
        err.write(f"wrdsvault: {exc}\n")
        return 1
    except KeyboardInterrupt:
        err.write("wrdsvault: interrupted; nothing was committed by an unfinished sync\n")
        return 130
