"""The ``wrdsvault`` command line: sync, snapshots, query, diff, status, tag, drop, backup, repair,
restore, export-iceberg, demo.

Every command takes ``--json`` for machine-readable output. Exit codes (docs/cli.md): 0 success
(``sync``: a new snapshot was committed), 1 a wrdsvault error (the message says what to do), 2 bad
usage, 3 ``sync``: nothing changed, 4 the writer lock is held by another writer, 5 ``status
--max-age``: a dataset is stale, 130 interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, TextIO

from wrdsvault._cli_render import (
    SyncDisplay,
    VerifyDisplay,
    describe_lock,
    drop_listing,
    expired_text,
    json_records,
    print_json,
    quarantine_text,
    snapshots_text,
    status_text,
    sync_summary,
    write_csv,
    write_json_rows,
    write_table,
)
from wrdsvault._storage.atomic import append_durably
from wrdsvault._version import __version__
from wrdsvault.errors import InvalidNameError, LockHeldError, WrdsVaultError
from wrdsvault.manifest import canonical_json, format_timestamp
from wrdsvault.retention import RetentionPolicy

if TYPE_CHECKING:
    from wrdsvault.reports import SyncReport
    from wrdsvault.warehouse import Warehouse

# Each command imports what it needs when it runs (the Warehouse, DuckDB, the sync machinery):
# `wrdsvault --help` or `status` does not pay for the query engine, and no command loads pandas.

DEFAULT_VAULT = "data/wrds"

#: Exit codes, for schedulers and monitoring (docs/cli.md#exit-codes).
EXIT_OK: Final = 0  # success; for sync: a new snapshot was committed
EXIT_FAILED: Final = 1  # a wrdsvault error; nothing half-done was committed
EXIT_USAGE: Final = 2  # bad arguments (argparse)
EXIT_UNCHANGED: Final = 3  # sync: the source had nothing new; no snapshot committed
EXIT_LOCK_BUSY: Final = 4  # another writer held the lock for the whole --wait
EXIT_STALE: Final = 5  # status --max-age: some dataset's last sync is older than that
EXIT_INTERRUPTED: Final = 130  # SIGINT / Ctrl-C

_OUTCOMES: Final = {
    EXIT_OK: "synced",
    EXIT_FAILED: "failed",
    EXIT_UNCHANGED: "unchanged",
    EXIT_LOCK_BUSY: "lock-busy",
    EXIT_INTERRUPTED: "interrupted",
}


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


def _storage_options(text: str) -> dict[str, Any]:
    """``--storage-options``: a JSON object of fsspec file-system options."""
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError('a JSON object, e.g. \'{"profile": "backup"}\'')
    return value


def _storage_options_arg(cmd: argparse.ArgumentParser) -> None:
    cmd.add_argument(
        "--storage-options",
        type=_storage_options,
        metavar="JSON",
        help="options of the object store for an s3:// URL, as a JSON object (s3fs: "
        '\'{"profile": "backup"}\', \'{"client_kwargs": {"endpoint_url": "https://..."}}\'); '
        "credentials come from the usual AWS variables and files",
    )


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


_UNITS: Final = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def _age(text: str) -> float:
    """An age: ``36h``, ``90m``, ``2d``, ``45s`` or plain seconds, > 0."""
    raw = text.strip().lower()
    unit = _UNITS.get(raw[-1:], None)
    try:
        value = float(raw[:-1] if unit else raw) * (unit or 1.0)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        msg = f"expected an age such as 36h, 90m, 2d or a number of seconds, not {text!r}"
        raise argparse.ArgumentTypeError(msg)
    return value


class _Unbuilt(argparse.ArgumentParser):
    """Stands in for the parser of a command that is not being run: takes its arguments and
    builds nothing."""

    def add_argument(self, *args: Any, **kwargs: Any) -> Any:
        return None


def _parser(command: str | None = None) -> argparse.ArgumentParser:
    """The command line's parser; with ``command`` (the command being run), only that command.

    Building the arguments of all 21 commands costs ~8 ms, a good part of a one-line ``query``;
    the others are not needed to parse a command's arguments or print its ``--help``. Without a
    known command (``--help``, ``--version``, a typo) every command is built, so the list and the
    "invalid choice" message name them all.
    """
    p = argparse.ArgumentParser(
        prog="wrdsvault",
        description="A local, versioned warehouse of WRDS data (CRSP, Compustat, Fama-French).",
    )
    p.add_argument("--version", action="version", version=f"wrdsvault {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    unbuilt = _Unbuilt(add_help=False)

    def add(name: str, help_text: str) -> argparse.ArgumentParser:
        if command is not None and name != command:
            return unbuilt
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
    sync.add_argument("datasets", nargs="*", metavar="DATASET", help="e.g. crsp.msf comp.funda")
    sync.add_argument(
        "--all",
        action="store_true",
        help="re-sync every dataset the latest snapshot holds, with the options each was synced "
        "with (instead of naming datasets)",
    )
    sync.add_argument(
        "--log",
        type=Path,
        metavar="FILE",
        help="append one JSON line describing this run to FILE (created if missing)",
    )
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
    sync.add_argument(
        "--wrds-connect-timeout",
        type=_seconds,
        metavar="SECONDS",
        help="give up a WRDS login after this long, Duo approval included (default: 90)",
    )

    add("snapshots", "list committed snapshots, oldest first")

    query = add("query", "run one SELECT on a snapshot and print the result")
    query.add_argument("sql", help="one SELECT statement, e.g. 'select count(*) from crsp.msf'")
    query.add_argument("--snapshot", default="latest", help="tag, id, 'latest' or ISO date")
    query.add_argument("--max-rows", type=int, default=50, help="rows to print (50; 0 = all)")
    query.add_argument("--csv", action="store_true", help="print CSV")
    query.add_argument(
        "--timeout", type=_seconds, help="interrupt after this many seconds (a number > 0)"
    )

    diff = add("diff", "what changed between two snapshots: row counts by key, first changes")
    diff.add_argument("old", help="tag, id, 'latest' or ISO date of the older snapshot")
    diff.add_argument("new", help="tag, id, 'latest' or ISO date of the newer snapshot")
    diff.add_argument("datasets", nargs="*", metavar="DATASET", help="default: every dataset")
    diff.add_argument(
        "--limit", type=int, default=20, help="changes shown per dataset (20; 0 = all)"
    )
    diff.add_argument(
        "--tolerance", type=float, help="floats within this absolute distance are equal"
    )

    status = add("status", "show the latest snapshot, datasets, tags, disk and the writer lock")
    status.add_argument(
        "--max-age",
        type=_age,
        metavar="AGE",
        help="flag datasets last synced longer ago than AGE (36h, 90m, 2d, seconds) as stale "
        "and exit 5 if any is",
    )

    verify = add("verify", "re-hash every file of a snapshot; exit 1 if any is damaged")
    verify.add_argument("--snapshot", default="latest", help="tag, id, 'latest' or ISO date")
    verify.add_argument("--all", action="store_true", help="every committed snapshot")

    backup = add(
        "backup", "copy every committed snapshot into a backup vault (only files it lacks)"
    )
    backup.add_argument(
        "dest",
        metavar="DEST",
        help="the backup folder (a vault; created if new), or an object-storage URL "
        "(s3://bucket/prefix; needs the s3 extra)",
    )
    backup.add_argument(
        "--verify", action="store_true", help="re-hash every file already in the backup too"
    )
    backup.add_argument("--wait", type=float, help="seconds to wait for another backup into DEST")
    backup.add_argument("-q", "--quiet", action="store_true", help="show no progress")
    _storage_options_arg(backup)

    repair = add("repair", "restore missing or damaged files from a backup; exit 1 if any remain")
    repair.add_argument(
        "--from",
        dest="source",
        required=True,
        metavar="BACKUP",
        help="the backup vault (a folder or an s3://bucket/prefix URL)",
    )
    repair.add_argument("--wait", type=float, help="seconds to wait for another writer")
    _storage_options_arg(repair)

    restore = add("restore", "rebuild a vault from a backup into a new or empty folder")
    restore.add_argument(
        "source", metavar="BACKUP", help="the backup vault (a folder or an s3://bucket/prefix URL)"
    )
    restore.add_argument("path", metavar="PATH", help="the new vault's folder (new or empty)")
    _storage_options_arg(restore)

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

    receipt = add("receipt", "print a reproducibility receipt (JSON) of datasets in a snapshot")
    receipt.add_argument("datasets", nargs="*", metavar="DATASET", help="default: all of them")
    receipt.add_argument("--snapshot", default="latest", help="tag, id, 'latest' or ISO date")
    receipt.add_argument("-o", "--output", help="write the receipt to this file, not stdout")

    check = add("check-receipt", "check a receipt against a vault; exit 1 if a dataset differs")
    check.add_argument("receipt", help="a receipt file written by `wrdsvault receipt`")

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

    ice = add("export-iceberg", "publish the snapshots as Apache Iceberg tables (no data copied)")
    ice.add_argument(
        "--catalog",
        metavar="URI",
        help="a SQL catalog URI (sqlite:///..., postgresql://...); default: a SQLite file "
        "beside the vault (<vault>-iceberg.db)",
    )
    ice.add_argument("--namespace", default="wrds", help="the Iceberg namespace (default: wrds)")
    ice.add_argument(
        "--forget",
        action="store_true",
        help="remove the export record instead (gc then stops keeping its snapshots)",
    )
    ice.add_argument("--wait", type=float, help="seconds to wait for another writer")
    return p


def _open(
    args: argparse.Namespace, *, source: Any = None, create: bool | None = False
) -> Warehouse:
    """The vault ``--vault`` names; only a sync (``create=None``) may create it."""
    from wrdsvault.warehouse import Warehouse

    return Warehouse(args.vault, source=source, create=create)


def _cmd_sync(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    if args.all == bool(args.datasets):
        err.write("wrdsvault sync: name datasets or pass --all (not both)\n")
        return EXIT_USAGE
    if args.all and args.date_column is not None:
        err.write("wrdsvault sync: --all re-syncs each dataset as it was; drop --date-column\n")
        return EXIT_USAGE
    if args.all and args.years is not None:
        err.write(
            "wrdsvault sync: --all re-syncs the years each dataset was synced for; drop --years\n"
        )
        return EXIT_USAGE
    reports: list[SyncReport] = []  # the report, as soon as the sync returns it
    if args.log is None:
        return _sync(args, out, err, reports)
    started, clock = datetime.now(timezone.utc), time.monotonic()
    code, error = EXIT_FAILED, None
    try:
        code = _sync(args, out, err, reports)
        return code
    except BaseException as exc:
        code, error = _exit_code(exc), exc
        raise
    finally:
        report = reports[0] if reports else None
        _log_run(args, err, started, time.monotonic() - clock, code, report, error)


def _sync(args: argparse.Namespace, out: TextIO, err: TextIO, reports: list[SyncReport]) -> int:
    source: Any
    if args.source == "wrds":
        from wrdsvault.sources import WrdsSource

        connect = {
            f"wrds_{k}": getattr(args, f"wrds_{k}")
            for k in ("username", "hostname", "port", "dbname")
            if getattr(args, f"wrds_{k}") is not None
        }
        if args.wrds_connect_timeout is not None:
            from wrdsvault.sources.wrds import WRDS_CONNECT_ARGS

            # libpq takes whole seconds (and at least 2)
            seconds = max(2, math.ceil(args.wrds_connect_timeout))
            connect["wrds_connect_args"] = {**WRDS_CONNECT_ARGS, "connect_timeout": seconds}
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
    display: contextlib.AbstractContextManager[SyncDisplay | None] = contextlib.nullcontext()
    if not (args.json or args.quiet):
        width = max((len(name) for name in args.datasets), default=16)
        display = SyncDisplay(err, name_width=width)
    common: dict[str, Any] = {
        "full": args.full,
        "allow_removal": args.allow_removal,
        "wait": args.wait,
    }
    with (
        _open(args, source=source, create=None if not args.all else False) as wh,
        display as progress,
    ):
        if args.all:
            report = wh.sync_all(progress=progress, **common)
        else:
            report = wh.sync(args.datasets, years=args.years, progress=progress, **common, **kwargs)
    reports.append(report)
    if args.json:
        print_json(report.to_json(), out)
    else:
        out.write(sync_summary(report) + "\n")
    return EXIT_OK if report.committed else EXIT_UNCHANGED


def _exit_code(exc: BaseException) -> int:
    """The exit code for an exception that ends a command."""
    if isinstance(exc, LockHeldError):
        return EXIT_LOCK_BUSY
    if isinstance(exc, KeyboardInterrupt):
        return EXIT_INTERRUPTED
    return EXIT_FAILED


def _log_run(
    args: argparse.Namespace,
    err: TextIO,
    started: datetime,
    duration_s: float,
    code: int,
    report: SyncReport | None,
    error: BaseException | None,
) -> None:
    """Append this sync's record to ``--log`` (one JSON line; docs/cli.md#the-run-log)."""
    record = {
        "started_at": format_timestamp(started),
        "ended_at": format_timestamp(datetime.now(timezone.utc)),
        "duration_s": round(duration_s, 3),
        "vault": os.path.abspath(args.vault),
        "command": "sync --all" if args.all else "sync",
        "exit_code": code,
        "outcome": _OUTCOMES.get(code, "failed"),
        "datasets": (
            {d.dataset: d.status for d in report.datasets}
            if report is not None
            else {name: "failed" for name in args.datasets}
        ),
        "snapshot_id": report.snapshot_id if report is not None else None,
        "committed": report.committed if report is not None else False,
        "notes": list(report.notes) if report is not None else [],
        "error": None
        if error is None
        else {"type": type(error).__name__, "message": str(error) or type(error).__name__},
        "pid": os.getpid(),
        "version": __version__,
    }
    try:
        args.log.parent.mkdir(parents=True, exist_ok=True)
        append_durably(args.log, canonical_json(record) + b"\n", mode=0o600)
    except OSError as exc:  # the sync's own outcome stands; say the record is missing
        err.write(f"wrdsvault: could not append to the log {args.log}: {exc}\n")


def _cmd_snapshots(args: argparse.Namespace, out: TextIO, _err: TextIO) -> int:
    with _open(args) as wh:
        snaps = wh.snapshots()
    if args.json:
        print_json([s.to_json() for s in snaps], out)
    else:
        out.write(snapshots_text(snaps) + "\n")
    return 0


def _cmd_query(args: argparse.Namespace, out: TextIO, _err: TextIO) -> int:
    from wrdsvault._query import render

    with _open(args) as wh, wh.snapshot(args.snapshot) as snap:
        result = snap._run(args.sql, None, args.timeout, render("json" if args.json else "text"))
    if args.json:
        write_json_rows(result, out)
    elif args.csv:
        write_csv(result, out)
    else:
        write_table(result, out, args.max_rows)
    return 0


def _cmd_diff(args: argparse.Namespace, out: TextIO, _err: TextIO) -> int:
    from wrdsvault._query import render

    with _open(args) as wh:
        rev = wh.diff(args.old, args.new, datasets=args.datasets or None, tolerance=args.tolerance)
        limit = max(args.limit, 0) or None
        if args.json:
            doc = rev.to_json()
            for entry, d in zip(doc["datasets"], rev, strict=True):
                if d.status == "unchanged":
                    continue
                for name, lazy in (
                    ("changes", d.changes()),
                    ("added_keys", d.added_keys()),
                    ("removed_keys", d.removed_keys()),
                    ("duplicates", d.duplicate_keys()),
                ):
                    entry[name] = json_records(lazy.head(limit)._run(None, render("json")))
            print_json(doc, out)
            return 0
        out.write(rev.summary() + "\n")
        for d in rev:
            if d.status == "unchanged" or not d.changed:
                continue
            out.write(f"\n{d.dataset}: first changes\n")
            write_table(d.changes().head(limit)._run(None, render("text")), out, 0)
            if limit is not None and d.changed and len(d.columns):
                total = sum(c.changed for c in d.columns.values())
                if total > limit:
                    out.write(f"... {total - limit:,} more changed values (--limit 0 shows all)\n")
    return 0


def _cmd_status(args: argparse.Namespace, out: TextIO, _err: TextIO) -> int:
    with _open(args) as wh:
        st = wh.status(max_age_s=args.max_age)
    if args.json:
        print_json(st.to_json(), out)
    else:
        out.write(status_text(st) + "\n")
    return EXIT_STALE if st.stale else EXIT_OK


def _cmd_verify(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    with _open(args) as wh:
        report = wh.verify(
            args.snapshot,
            all_snapshots=args.all,
            progress=None if args.json else VerifyDisplay(err),
        )
    if args.json:
        print_json(report.to_json(), out)
    else:
        out.write(report.summary() + "\n")
    return 0 if report.ok else 1


def _cmd_backup(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    quiet = args.json or args.quiet
    with _open(args) as wh:
        report = wh.backup(
            args.dest,
            verify=args.verify,
            wait=args.wait,
            progress=None if quiet else VerifyDisplay(err, verb="backing up"),
            storage_options=args.storage_options,
        )
    if args.json:
        print_json(report.to_json(), out)
    else:
        out.write(report.summary() + "\n")
    return 0 if report.ok else 1


def _cmd_repair(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    with _open(args) as wh:
        report = wh.repair(args.source, wait=args.wait, storage_options=args.storage_options)
    if args.json:
        print_json(report.to_json(), out)
    else:
        out.write(report.summary() + "\n")
    return 0 if report.ok else 1


def _cmd_restore(args: argparse.Namespace, out: TextIO, _err: TextIO) -> int:
    from wrdsvault.warehouse import Warehouse

    report = Warehouse.restore(args.source, args.path, storage_options=args.storage_options)
    if args.json:
        print_json(report.to_json(), out)
    else:
        out.write(report.summary() + "\n")
    return 0


def _cmd_unlock(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    with _open(args) as wh:
        lock = wh.lock_info()
        if lock.free:
            if args.json:
                print_json({**lock.to_json(), "broken": False}, out)
            else:
                out.write("the writer lock is free\n")
            return 0
        if not args.json:
            out.write(f"writer lock {describe_lock(lock)}\n")
        writable = lock.write_access is not False
        if not args.force:
            if args.json:
                print_json({**lock.to_json(), "broken": False}, out)
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
        print_json(broken.to_json(), out)
    else:
        out.write("lock broken\n" if broken.broken else "the lock was already free\n")
    return 0


def _cmd_doctor(args: argparse.Namespace, out: TextIO, _err: TextIO) -> int:
    with _open(args) as wh:
        report = wh.doctor(repair=args.repair)
    if args.json:
        print_json(report.to_json(), out)
    else:
        out.write(report.summary() + "\n")
    return 0 if report.ok else 1


def _cmd_quarantine(args: argparse.Namespace, out: TextIO, _err: TextIO) -> int:
    with _open(args) as wh:
        if args.action == "list":
            entries = wh.quarantine()
            if args.json:
                print_json([e.to_json() for e in entries], out)
            else:
                out.write(quarantine_text(entries) + "\n")
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
            print_json([by_name[n].reason for n in args.names], out)
            return 0
        if not args.names and not args.all:
            raise InvalidNameError(
                kind="quarantine entry", value=[], rule="name entries to purge, or pass --all"
            )
        purged = wh.purge_quarantine(None if args.all else args.names)
    if args.json:
        print_json({"purged": purged}, out)
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
                out.write(drop_listing(latest.id, held) + "\n")
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
        print_json({"snapshot_id": snapshot_id, "dropped": args.datasets}, out)
    else:
        out.write(f"committed snapshot {snapshot_id} without {', '.join(args.datasets)}\n")
    return 0


def _cmd_tag(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    if args.delete:
        return _untag(args, out, err)
    with _open(args) as wh:
        target = wh.tag(args.name, args.ref, force=args.force)
    if args.json:
        print_json({"tag": args.name, "snapshot_id": target}, out)
    else:
        out.write(f"{args.name} -> {target}\n")
    return 0


def _cmd_receipt(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    with _open(args) as wh, wh.snapshot(args.snapshot) as snap:
        receipt = snap.receipt(args.datasets or None)
    if args.output:
        receipt.save(args.output)
        err.write(f"receipt of {len(receipt.datasets)} datasets written to {args.output}\n")
    else:
        out.write(receipt.dumps())  # JSON either way: a receipt is made to be saved
    computed = [d.name for d in receipt.datasets if d.computed]
    if computed:
        err.write(
            f"note: content digests of {', '.join(computed)} were computed from the files "
            "(synced before format 3)\n"
        )
    return 0


def _cmd_check_receipt(args: argparse.Namespace, out: TextIO, _err: TextIO) -> int:
    from wrdsvault.receipts import Receipt, check_receipt

    receipt = Receipt.load(args.receipt)
    with _open(args) as wh:
        result = check_receipt(receipt, wh)
    if args.json:
        print_json(result.to_json(), out)
    else:
        out.write(result.summary() + "\n")
    return 0 if result.ok else 1


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
        print_json({"tag": args.name, "deleted": True, "snapshot_id": target}, out)
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
                print_json({"dry_run": True, **plan.to_json()}, out)
            else:
                out.write(plan.summary() + "\n(dry run: nothing was changed)\n")
            return 0
        report = wh.gc(policy=policy, wait=args.wait)
    if args.json:
        print_json({"dry_run": False, **report.to_json()}, out)
    else:
        for sid in report.expired:
            out.write(f"expired {sid}\n")
        out.write(report.summary() + "\n")
    return 0


def _cmd_expired(args: argparse.Namespace, out: TextIO, _err: TextIO) -> int:
    with _open(args) as wh:
        entries = wh.expired()
    if args.json:
        print_json([e.to_json() for e in entries], out)
    else:
        out.write(expired_text(entries) + "\n")
    return 0


def _cmd_export_iceberg(args: argparse.Namespace, out: TextIO, _err: TextIO) -> int:
    with _open(args) as wh:
        if args.forget:
            had = wh.forget_iceberg_export(args.catalog, args.namespace, wait=args.wait)
            if args.json:
                print_json({"forgotten": had}, out)
            else:
                out.write(
                    "export record removed: gc no longer keeps its snapshots\n"
                    if had
                    else "no export record for that catalog and namespace\n"
                )
            return 0
        report = wh.export_iceberg(args.catalog, args.namespace, wait=args.wait)
    if args.json:
        print_json(report.to_json(), out)
    else:
        out.write(report.summary() + "\n")
    return 0


def _cmd_demo(args: argparse.Namespace, out: TextIO, _err: TextIO) -> int:
    from wrdsvault.demo import run_demo

    root = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="wrdsvault-demo-"))
    result = run_demo(root, n_securities=args.securities, out=None if args.json else out)
    if args.json:
        print_json(result, out)
    return 0


_COMMANDS = {
    "demo": _cmd_demo,
    "sync": _cmd_sync,
    "snapshots": _cmd_snapshots,
    "query": _cmd_query,
    "status": _cmd_status,
    "diff": _cmd_diff,
    "tag": _cmd_tag,
    "verify": _cmd_verify,
    "backup": _cmd_backup,
    "repair": _cmd_repair,
    "restore": _cmd_restore,
    "quarantine": _cmd_quarantine,
    "doctor": _cmd_doctor,
    "unlock": _cmd_unlock,
    "drop": _cmd_drop,
    "receipt": _cmd_receipt,
    "check-receipt": _cmd_check_receipt,
    "gc": _cmd_gc,
    "expired": _cmd_expired,
    "export-iceberg": _cmd_export_iceberg,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; return the exit code."""
    given = sys.argv[1:] if argv is None else list(argv)
    command = given[0] if given and given[0] in _COMMANDS else None
    args = _parser(command).parse_args(given)
    out, err = sys.stdout, sys.stderr
    try:
        return _COMMANDS[args.command](args, out, err)
    except WrdsVaultError as exc:
        if getattr(args, "json", False):
            print_json({"error": type(exc).__name__, "message": str(exc)}, out)
        err.write(f"wrdsvault: {exc}\n")
        return _exit_code(exc)
    except KeyboardInterrupt:
        err.write("wrdsvault: interrupted; nothing was committed by an unfinished sync\n")
        return EXIT_INTERRUPTED
