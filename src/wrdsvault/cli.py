"""The ``wrdsvault`` command line: sync, snapshots, query, status, tag, demo.

Every command takes ``--json`` for machine-readable output. Exit codes: 0 success, 1 a wrdsvault
error (the message says what to do), 2 bad usage.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from wrdsvault._sync import Progress
from wrdsvault._version import __version__
from wrdsvault.errors import InvalidNameError, WrdsVaultError
from wrdsvault.warehouse import Warehouse

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
    sync.add_argument("--date-column", help="partition column of a table without a built-in spec")
    sync.add_argument("--wait", type=float, help="seconds to wait for another writer")
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
    query.add_argument("--timeout", type=float, help="interrupt after this many seconds")

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

    tag = add("tag", "name a snapshot so backtests can pin it")
    tag.add_argument("name")
    tag.add_argument("ref", nargs="?", default="latest")
    tag.add_argument("--force", action="store_true", help="move an existing tag")
    return p


def _print_json(obj: Any, out: TextIO) -> None:
    json.dump(obj, out, indent=2, default=str)
    out.write("\n")


def _progress_printer(err: TextIO) -> Any:
    started: dict[str, float] = {}

    def show(ev: Progress) -> None:
        key = ev.dataset
        if not ev.done:
            started.setdefault(key, time.monotonic())
            return
        elapsed = time.monotonic() - started[key]
        year = "all" if ev.year is None else ev.year
        rows = "" if ev.rows is None else f", {ev.rows:,} rows"
        eta = elapsed / (ev.index + 1) * (ev.total - ev.index - 1)
        err.write(f"  {ev.dataset} {year} [{ev.index + 1}/{ev.total}{rows}] ETA {eta:.0f}s\n")
        err.flush()

    return show


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
    with _open(args, source=source, create=True) as wh:
        report = wh.sync(
            args.datasets,
            years=args.years,
            full=args.full,
            wait=args.wait,
            progress=None if args.json else _progress_printer(err),
            **kwargs,
        )
    if args.json:
        _print_json(report.to_json(), out)
    else:
        out.write(report.summary() + "\n")
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
        df = snap.query(args.sql, timeout_s=args.timeout)
    if args.json:
        out.write(df.to_json(orient="records", date_format="iso", default_handler=str) + "\n")
    elif args.csv:
        df.to_csv(out, index=False)
    else:
        shown = df if args.max_rows == 0 else df.head(args.max_rows)
        out.write(shown.to_string(index=False) + "\n")
        if len(shown) < len(df):
            out.write(f"... {len(df) - len(shown):,} more rows (--max-rows 0 shows all)\n")
    return 0


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


def _describe_lock(lock: dict[str, Any] | None) -> str:
    if not lock or lock.get("state") == "free":
        return "free"
    if lock.get("unreadable"):
        return f"{lock['state']} (unreadable owner record)"
    return (
        f"{lock['state']}: pid {lock.get('pid')} on {lock.get('host')} since "
        f"{lock.get('acquired_at')} ({lock.get('operation')}), last heartbeat "
        f"{lock.get('heartbeat_age_s', 0):.0f} s ago"
    )


def _cmd_unlock(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    with _open(args) as wh:
        lock = wh.lock_info()
        if lock["state"] == "free":
            if args.json:
                _print_json({"state": "free", "broken": False}, out)
            else:
                out.write("the writer lock is free\n")
            return 0
        if not args.json:
            out.write(f"writer lock {_describe_lock(lock)}\n")
        if not args.force:
            if not args.json:
                out.write(
                    "pass --force to break it by hand (refused while its owner is alive "
                    "on this host)\n"
                )
            else:
                _print_json({**lock, "broken": False}, out)
            return 1
        if not args.yes:
            if not sys.stdin.isatty():
                err.write("wrdsvault: not breaking the lock without a confirmation; pass --yes\n")
                return 1
            out.write("Break it? Only do this if that writer is really gone. [y/N] ")
            out.flush()
            if sys.stdin.readline().strip().lower() not in ("y", "yes"):
                out.write("left alone\n")
                return 1
        broken = wh.break_lock(expect_token=lock.get("incarnation"))
    if args.json:
        _print_json(broken, out)
    else:
        out.write("lock broken\n" if broken.get("broken") else "the lock was already free\n")
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


def _cmd_tag(args: argparse.Namespace, out: TextIO, _err: TextIO) -> int:
    with _open(args) as wh:
        target = wh.tag(args.name, args.ref, force=args.force)
    if args.json:
        _print_json({"tag": args.name, "snapshot_id": target}, out)
    else:
        out.write(f"{args.name} -> {target}\n")
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
