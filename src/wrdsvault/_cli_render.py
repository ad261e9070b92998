"""What the command line prints: tables, progress lines and summaries, and query results.

`wrdsvault.cli` parses the arguments and calls the API; everything it writes in text form is
built here, so that each command reads as "call, then print". The exact bytes are part of the
interface (scripts parse them; tests/test_cli.py pins them), so a change here is a change to the
command line. ``import wrdsvault`` does not import this module.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final, TextIO

import attrs

from wrdsvault.retention import RetentionPolicy

if TYPE_CHECKING:  # the CLI imports a command's machinery when the command runs
    from wrdsvault._query import Rendered
    from wrdsvault._storage.quarantine import QuarantineEntry
    from wrdsvault._sync import Progress
    from wrdsvault.manifest import DatasetEntry
    from wrdsvault.reports import DatasetResult, LockInfo, SnapshotInfo, SyncReport, VaultStatus
    from wrdsvault.retention import ExpiredSnapshot

#: The displays belong to the command line: they log under its name, so a logging setup for
#: ``wrdsvault.cli`` covers them too.
log = logging.getLogger("wrdsvault.cli")


def print_json(obj: Any, out: TextIO) -> None:
    """``obj`` as indented JSON and a newline; what JSON cannot hold is written as its str()."""
    json.dump(obj, out, indent=2, default=str)
    out.write("\n")


# -- sync progress -----------------------------------------------------------------------


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


class SyncDisplay:
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

    def __enter__(self) -> SyncDisplay:
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


# -- sync summary ------------------------------------------------------------------------


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


def sync_summary(report: SyncReport) -> str:
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
    lines += [f"  note: {note}" for note in report.notes]
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


# -- verify progress ---------------------------------------------------------------------

#: Redraw the verify line at most this often; the last file is always drawn.
_VERIFY_REDRAW_S: Final = 0.5


class VerifyDisplay:
    """``\\r  verifying 3/10 files,  42.0% of 1,234 MB`` on ``err``, ending with a newline.

    The `Warehouse.verify` progress callback of the ``verify`` command, and (``verb="backing
    up"``) the `Warehouse.backup` one of the ``backup`` command.
    """

    def __init__(
        self,
        err: TextIO,
        *,
        clock: Callable[[], float] = time.monotonic,
        verb: str = "verifying",
    ) -> None:
        self._err = err
        self._verb = verb
        self._clock = clock
        self._drawn_at = 0.0

    def __call__(self, files: int, total: int, done: int, total_bytes: int) -> None:
        now = self._clock()
        if now - self._drawn_at > _VERIFY_REDRAW_S or files == total:
            self._drawn_at = now
            pct = 100 * done / total_bytes if total_bytes else 100.0
            self._err.write(
                f"\r  {self._verb} {files}/{total} files, {pct:5.1f}% of "
                f"{total_bytes / 1e6:,.0f} MB"
            )
            if files == total:
                self._err.write("\n")
            self._err.flush()


# -- snapshots, status, the lock, quarantine, drop ---------------------------------------


def snapshots_text(snaps: Sequence[SnapshotInfo]) -> str:
    """One line per snapshot: id, commit time, rows, datasets, fingerprint, tags."""
    if not snaps:
        return "no snapshots yet; run `wrdsvault sync`"
    lines = []
    for s in snaps:
        tags = f"  tags: {', '.join(s.tags)}" if s.tags else ""
        lines.append(
            f"{s.snapshot_id}  {s.committed_at:%Y-%m-%d %H:%M:%S}Z  {s.row_count:>12,} rows  "
            f"{len(s.datasets)} datasets  {s.fingerprint[:12]}{tags}"
        )
    return "\n".join(lines)


def status_text(st: VaultStatus) -> str:
    """The vault, its latest snapshot and datasets, disk, drift, quarantine, tags, the lock."""
    latest = ""
    if st.latest_snapshot_id:
        when = f"{st.latest_committed_at:%Y-%m-%d %H:%M:%S}Z"
        latest = f"; latest {st.latest_snapshot_id} committed {when}"
    lines = [
        f"vault     {st.root} (format {st.format_version})",
        f"snapshots {st.snapshot_count}{latest}",
    ]
    if st.latest_snapshot_id:
        lines.append(f"          fingerprint {st.fingerprint}")
    for d in st.datasets:
        years = "" if d.first_year is None else f"{d.first_year}-{d.last_year}"
        lines.append(
            f"  {d.name:<24} {d.row_count:>12,} rows {d.partitions:>3} files {years:>9}  "
            f"{d.size_bytes / 1e6:>8.1f} MB  {d.comment or ''}"
        )
    disk = st.disk
    if disk is not None:
        lines.append(
            f"disk      {disk.used_fraction:.0%} used, {disk.free_bytes / 1e9:,.1f} GB free "
            f"({disk.level})"
        )
    lines += [f"drift     {name}: {drift}" for name, drift in sorted(st.drift.items())]
    if st.max_age_s is not None:
        limit = _hours(st.max_age_s)
        stale = [d for d in st.datasets if d.stale]
        lines += [
            f"stale     {d.name}: last synced "
            f"{'at an unknown time' if d.age_s is None else _hours(d.age_s) + ' ago'} "
            f"(limit {limit})"
            for d in stale
        ]
        if not st.datasets:
            lines.append("stale     the vault holds no dataset")
        elif not stale:
            lines.append(f"fresh     every dataset synced within {limit}")
    if st.quarantined:
        lines.append(f"quarantine {st.quarantined} failed write(s): `wrdsvault quarantine list`")
    if st.reclaimable_bytes or st.expired_count:
        lines.append(
            f"gc        {_size(st.reclaimable_bytes)} reclaimable by the stored retention policy"
            f" (`wrdsvault gc --dry-run`); {st.expired_count} snapshot(s) expired"
        )
    if st.tags:
        lines.append("tags      " + ", ".join(f"{k} -> {v}" for k, v in sorted(st.tags.items())))
    lines.append(f"lock      {describe_lock(st.lock_holder)}")
    return "\n".join(lines)


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h"


def expired_text(entries: Sequence[ExpiredSnapshot]) -> str:
    """The expiry log, one line per expired snapshot."""
    if not entries:
        return "no snapshot was expired"
    return "\n".join(
        f"{e.snapshot_id}  committed {e.committed_at:%Y-%m-%d %H:%M:%S}Z  expired "
        f"{e.expired_at:%Y-%m-%d %H:%M:%S}Z  {e.fingerprint[:12]}  "
        f"{RetentionPolicy.from_json(e.policy)}"
        for e in entries
    )


def describe_lock(lock: LockInfo | None) -> str:
    if lock is None or lock.free:
        return "free"
    if lock.unreadable:
        return f"{lock.state} (unreadable owner record)"
    clock = " by this machine's clock" if lock.clock == "local" else ""
    return (
        f"{lock.state}: pid {lock.pid} on {lock.host} since {lock.acquired_at} "
        f"({lock.operation}), last heartbeat {lock.heartbeat_age_s or 0:.0f} s ago{clock}"
    )


def quarantine_text(entries: Sequence[QuarantineEntry]) -> str:
    """One line per failed write kept in quarantine/: name, error, size, the message's start."""
    if not entries:
        return "quarantine is empty"
    return "\n".join(
        f"{e.name}  {e.error}  {e.size_bytes / 1e6:,.1f} MB  {e.message[:90]}" for e in entries
    )


def drop_listing(snapshot_id: str, held: Mapping[str, DatasetEntry]) -> str:
    """What ``drop`` asks about: the datasets it would leave out of the next snapshot."""
    lines = [f"The latest snapshot {snapshot_id} holds:"]
    lines += [
        f"  {name:<24} {entry.row_count:>12,} rows {len(entry.partitions):>3} files"
        for name, entry in held.items()
    ]
    return "\n".join(lines)


# -- query results -----------------------------------------------------------------------


def json_records(result: Rendered) -> list[dict[str, Any]]:
    """The rows as dicts, keys in column order; values as DuckDB's ``to_json`` gives them."""
    return [
        {c: None if v is None else json.loads(v) for c, v in zip(result.columns, row, strict=True)}
        for row in result.rows
    ]


def write_json_rows(result: Rendered, out: TextIO) -> None:
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


def write_csv(result: Rendered, out: TextIO) -> None:
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


def write_table(result: Rendered, out: TextIO, max_rows: int) -> None:
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
