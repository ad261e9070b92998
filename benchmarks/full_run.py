"""Reproduce docs/performance.md: the benchmark suite at three sizes, ratio tables and a plot.

One command (from the repository root, in an environment with ``pip install -e '.[test,bench]'``)::

    python benchmarks/full_run.py              # 1M, 5M and 10M rows: ~30 minutes on 2 cores
    python benchmarks/full_run.py --quick      # 100k, 200k, 400k rows: ~2 minutes (pipeline check)
    python benchmarks/full_run.py --sizes 1M,5M
    python benchmarks/full_run.py --from-results benchmarks/results/<dir>   # redraw the docs only

For each size it runs ``pytest benchmarks`` in a subprocess (timed, ``--benchmark-json``) with
the ``WRDSVAULT_BENCH_*`` sizes derived from one row count ``n`` (`Size.from_rows`):

* sync and re-sync: a ``crsp.dsf`` replica of ``n`` rows (``raw_sql`` needs ~2.4 GB of RSS per
  million rows of it: test_sync.py skips a ``raw_sql`` path that would not fit in 70% of the
  available memory, e.g. the whole table at 10M rows on 24 GiB);
* queries: a vault of ~``n`` ``crsp.dsf`` rows (``n / 794`` securities x 5 years);
* verify and backup: ``n x 1024 / 5M`` MB of incompressible Parquet (1 GiB at 5M rows);
* snapshot open: ``n / 50k`` datasets x 60 years (6,000 files at 5M rows);
* db2pq: the same replica, copied by db2pq in its own venv, which this script sets up first
  (``setup_db2pq.py``; ``--no-db2pq`` skips that, and test_db2pq.py then skips).

Everything lands in ``benchmarks/results/<date>-<host>[-quick]/``: one pytest-benchmark JSON and
one log per size, ``machine.json`` (CPU, RAM, versions, load average before and after, exit
codes), ``summary.json`` (the tables). Then it draws ``docs/img/performance-scaling.png`` and
rewrites the block between ``<!-- results:start -->`` and ``<!-- results:end -->`` of
``docs/performance.md``. matplotlib (the ``bench`` extra) is imported here only. ``--sync-rounds
3`` runs each sync path three times and reports the median run (for noisy machines).
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.metadata
import importlib.util
import json
import math
import os
import platform
import re
import shlex
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Final

BENCH_DIR: Final = Path(__file__).resolve().parent
REPO: Final = BENCH_DIR.parent
RESULTS_DIR: Final = BENCH_DIR / "results"
DOCS: Final = REPO / "docs" / "performance.md"
PLOT: Final = REPO / "docs" / "img" / "performance-scaling.png"
START: Final = "<!-- results:start -->"
END: Final = "<!-- results:end -->"

FULL_SIZES: Final = (1_000_000, 5_000_000, 10_000_000)
QUICK_SIZES: Final = (100_000, 200_000, 400_000)
PACKAGES: Final = (
    "wrdsvault",
    "duckdb",
    "pyarrow",
    "pandas",
    "wrds",
    "psycopg2-binary",
    "pgserver",
    "psutil",
    "pytest",
    "pytest-benchmark",
    "matplotlib",
)
QUERIES: Final = ("monthly-from-daily", "market-cap-by-year", "one-permno-history", "ccm-merge")

# Targets: (comparison, value). Read, never asserted by the suite.
SYNC_SPEEDUP: Final = 6.0
SYNC_RSS: Final = 0.10
#: The whole sync against the bare COPY -> CSV -> Parquet path on the same rows (at most).
SYNC_BARE: Final = 1.2
#: Parallel streams against one stream over the throttled link (at least).
STREAM_SPEEDUP: Final = 2.5
UNCHANGED: Final = 0.02
ONE_YEAR: Final = 1.5
#: wrdsvault against db2pq on the same table (test_db2pq.py): time and memory, at most.
DB2PQ: Final = 1.0
QUERY: Final = 1.10
OPEN_MS: Final = 30.0
FIRST_QUERY_MS: Final = 100.0
ONESHOT: Final = 1.5
#: test_oneshot.py: (wrdsvault variant, its baseline, what). The variants run whole processes.
ONESHOT_PAIRS: Final = (
    ("test_oneshot_cli_query", "test_oneshot_bare_duckdb_baseline[rows]", "`wrdsvault query`"),
    (
        "test_oneshot_warehouse_arrow",
        "test_oneshot_bare_duckdb_baseline[rows]",
        "`Warehouse.arrow`, vs the bare script fetching rows",
    ),
    (
        "test_oneshot_warehouse_arrow",
        "test_oneshot_bare_duckdb_baseline[arrow]",
        "`Warehouse.arrow`, vs the bare script fetching Arrow",
    ),
    (
        "test_oneshot_warehouse_query",
        "test_oneshot_bare_duckdb_baseline[pandas]",
        "`Warehouse.query`, vs the bare script fetching pandas",
    ),
    ("test_oneshot_import_wrdsvault", "test_oneshot_import_duckdb_baseline", "`import wrdsvault`"),
)
VERIFY: Final = 0.8
BACKUP: Final = 0.8


# --------------------------------------------------------------------------------------------
# Sizes
# --------------------------------------------------------------------------------------------


def _label(n: int) -> str:
    if n >= 1_000_000 and n % 100_000 == 0:
        return f"{n / 1_000_000:g}M"
    if n >= 1_000 and n % 1_000 == 0:
        return f"{n // 1_000}k"
    return str(n)


def parse_rows(text: str) -> int:
    """``"5M"``, ``"200k"``, ``"5000000"`` or ``"5_000_000"`` -> an int."""
    match = re.fullmatch(r"\s*([0-9][0-9_]*(?:\.[0-9]+)?)\s*([kKmM]?)\s*", text)
    if match is None:
        raise argparse.ArgumentTypeError(f"not a row count: {text!r} (e.g. 1M, 200k, 5000000)")
    value = float(match.group(1).replace("_", ""))
    value *= {"": 1, "k": 1e3, "m": 1e6}[match.group(2).lower()]
    if value < 10_000:
        raise argparse.ArgumentTypeError(f"{text!r}: at least 10k rows")
    return int(value)


@dataclass(frozen=True)
class Size:
    """The WRDSVAULT_BENCH_* sizes of one run of the suite."""

    label: str
    sync_rows: int
    securities: int
    years: int
    verify_mb: int
    open_datasets: int
    sync_rounds: int = 1

    @classmethod
    def from_rows(cls, n: int, *, sync_rounds: int = 1) -> Size:
        return cls(
            label=_label(n),
            sync_rows=n,
            securities=max(10, math.ceil(n * 12_600 / 10_000_000)),
            years=5,
            verify_mb=max(16, 16 * round(n * 1024 / 5_000_000 / 16)),
            open_datasets=max(2, min(1_000, n // 50_000)),
            sync_rounds=sync_rounds,
        )

    def env(self) -> dict[str, str]:
        return {
            "WRDSVAULT_BENCH_SYNC_ROWS": str(self.sync_rows),
            "WRDSVAULT_BENCH_SECURITIES": str(self.securities),
            "WRDSVAULT_BENCH_YEARS": str(self.years),
            "WRDSVAULT_BENCH_VERIFY_MB": str(self.verify_mb),
            "WRDSVAULT_BENCH_OPEN_DATASETS": str(self.open_datasets),
            "WRDSVAULT_BENCH_SYNC_ROUNDS": str(self.sync_rounds),
        }


# --------------------------------------------------------------------------------------------
# Machine facts
# --------------------------------------------------------------------------------------------


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _postgres_version() -> str | None:
    spec = importlib.util.find_spec("pgserver")
    if spec is None or spec.origin is None:
        return None
    binary = Path(spec.origin).parent / "pginstall" / "bin" / "postgres"
    try:
        done = subprocess.run(
            [str(binary), "--version"], capture_output=True, text=True, timeout=30, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip()


def _versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def machine_facts() -> dict[str, Any]:
    import psutil

    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        usable = os.cpu_count()
    return {
        "host": socket.gethostname(),
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpu_usable": usable,
        "ram_bytes": psutil.virtual_memory().total,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "postgres": _postgres_version(),
        "versions": _versions(),
    }


def _loadavg() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


# --------------------------------------------------------------------------------------------
# Running the suite
# --------------------------------------------------------------------------------------------


def _results_dir(quick: bool) -> Path:
    stem = f"{dt.date.today().isoformat()}-{socket.gethostname()}" + ("-quick" if quick else "")
    path = RESULTS_DIR / stem
    n = 2
    while path.exists():
        path = RESULTS_DIR / f"{stem}-{n}"
        n += 1
    return path


def run_size(size: Size, out: Path, extra_args: Sequence[str]) -> dict[str, Any]:
    """Run ``pytest benchmarks`` at one size; return what happened (exit code, wall, load)."""
    json_path = out / f"{size.label}.json"
    log_path = out / f"{size.label}.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("WRDSVAULT_")}
    env.update(size.env())
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        str(BENCH_DIR),
        "-p",
        "no:cacheprovider",
        f"--benchmark-json={json_path}",
        *extra_args,
    ]
    load_before = _loadavg()
    started = time.perf_counter()
    print(f"  {shlex.join(cmd)}\n  log: {log_path}", flush=True)
    with log_path.open("w") as log:
        log.write(" ".join(f"{k}={v}" for k, v in size.env().items()) + " " + shlex.join(cmd))
        log.write("\n\n")
        log.flush()
        done = subprocess.run(
            cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, check=False
        )
    wall = time.perf_counter() - started
    print(f"  exit {done.returncode} after {wall / 60:.1f} min", flush=True)
    return {
        "size": asdict(size),
        "command": shlex.join(cmd),
        "env": size.env(),
        "exit_code": done.returncode,
        "wall_s": round(wall, 1),
        "loadavg_before": load_before,
        "loadavg_after": _loadavg(),
        "json": json_path.name if json_path.exists() else None,
        "log": log_path.name,
    }


# --------------------------------------------------------------------------------------------
# Reading the results
# --------------------------------------------------------------------------------------------


class Bench:
    """The benchmarks of one pytest-benchmark JSON, by test name."""

    def __init__(self, path: Path | None) -> None:
        self.by_name: dict[str, dict[str, Any]] = {}
        if path is not None and path.exists():
            for b in json.loads(path.read_text())["benchmarks"]:
                self.by_name[b["name"]] = b

    def info(self, name: str) -> dict[str, Any]:
        b = self.by_name.get(name)
        return b["extra_info"] if b else {}

    def median_ms(self, name: str) -> float | None:
        b = self.by_name.get(name)
        return b["stats"]["median"] * 1e3 if b else None


def _status(value: float | None, op: str, target: float) -> str:
    if value is None:
        return "n/a"
    met = value >= target if op == ">=" else value <= target
    return "met" if met else "**missed**"


def _rows(n: float | None) -> str:
    if n is None:
        return "n/a"
    if n >= 1e6:
        return f"{n / 1e6:.2f}M"
    if n >= 1e3:
        return f"{n / 1e3:.0f}k"
    return f"{n:.0f}"


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def ratio_rows(label: str, bench: Bench) -> list[dict[str, Any]]:
    """One row per benchmark (with a baseline or a target) at one size, in table order."""
    out: list[dict[str, Any]] = []

    def add(
        name: str,
        what: str,
        value: float | None,
        op: str,
        target: float | None,
        measured: str,
        unit: str = "",
    ) -> None:
        """One row; ``target=None``: a figure reported to explain another row (no status)."""
        if value is None:
            shown = "n/a"
        else:
            shown = (
                f"{value:.3f}"
                if value < 0.1
                else f"{value:.2f}"
                if value < 100
                else f"{value:,.0f}"
            )
        out.append(
            {
                "size": label,
                "benchmark": name,
                "input": what,
                "measured": measured,
                "value": value,
                "shown": shown + unit,
                "target": "—" if target is None else f"{op} {target:g}{unit}",
                "status": "reported" if target is None else _status(value, op, target),
            }
        )

    s = bench.info("test_sync_dsf_against_raw_sql")
    if s:
        for scope, what in (("all", "whole table"), ("year", "one year")):
            rows = s["rows"] if scope == "all" else s["rows_one_year"]
            skipped = s.get(f"raw_sql_{scope}_skipped")
            add(
                f"sync rows/s / `raw_sql` rows/s, {what}",
                f"{_rows(rows)} rows",
                s.get(f"speedup_{scope}"),
                ">=",
                SYNC_SPEEDUP,
                f"{_rows(s[f'sync_{scope}_rows_per_s'])} vs "
                + (
                    f"{_rows(s[f'raw_sql_{scope}_rows_per_s'])} rows/s"
                    if not skipped
                    else f"? rows/s (`raw_sql` not run: {skipped})"
                ),
            )
        for scope, what in (("all", "whole table"), ("year", "one year")):
            rows = s["rows"] if scope == "all" else s["rows_one_year"]
            skipped = s.get(f"raw_sql_{scope}_skipped")
            add(
                f"sync peak RSS / `raw_sql` peak RSS, {what}",
                f"{_rows(rows)} rows",
                s.get(f"rss_ratio_{scope}"),
                "<=",
                SYNC_RSS,
                f"{s[f'sync_{scope}_peak_rss_mb']:,.0f} vs "
                + (
                    f"{s[f'raw_sql_{scope}_peak_rss_mb']:,.0f} MB"
                    if not skipped
                    else f"? MB (`raw_sql` not run: {skipped})"
                ),
            )
    if s and s.get("bare_ratio_all") is not None:
        add(
            "full sync time / bare COPY -> CSV -> Parquet time",
            f"{_rows(s['rows'])} rows, {s.get('streams', 1)} streams",
            s["bare_ratio_all"],
            "<=",
            SYNC_BARE,
            f"{s['sync_all_seconds']:.2f} s vs {s['bare_copy_all_seconds']:.2f} s",
        )
    if s and s.get("server_cpu_ratio_all") is not None:
        # The same two runs split: the client's CPU (the call, all threads) and PostgreSQL's,
        # which shares these cores here and runs on WRDS's own against WRDS.
        where = f"{_rows(s['rows'])} rows, {s.get('streams', 1)} streams"
        add(
            "full sync / bare COPY -> CSV -> Parquet: client CPU",
            where,
            s["client_cpu_ratio_all"],
            "",
            None,
            f"{s['sync_all_cpu_seconds']:.2f} vs {s['bare_copy_all_cpu_seconds']:.2f} CPU-s",
        )
        add(
            "full sync / bare COPY -> CSV -> Parquet: PostgreSQL CPU",
            where,
            s["server_cpu_ratio_all"],
            "",
            None,
            f"{s['sync_all_server_cpu_seconds']:.2f} vs "
            f"{s['bare_copy_all_server_cpu_seconds']:.2f} CPU-s",
        )
    t = bench.info("test_sync_over_a_throttled_link")
    if t:
        link = f"{t['rate_bytes_s'] / 1e6:g} MB/s, {t['latency_ms']} ms per connection"
        add(
            "one-stream sync time / parallel sync time, slow link",
            f"{_rows(t['rows'])} rows, {link}, {t['streams']} streams",
            t.get("stream_speedup"),
            ">=",
            STREAM_SPEEDUP,
            f"{t['one_stream_seconds']:.2f} s vs {t['streams_seconds']:.2f} s",
        )
        add(
            "peak RSS growth per stream / one stream's, slow link",
            f"{_rows(t['rows'])} rows, {t['streams']} streams",
            t.get("rss_per_stream_ratio"),
            "<=",
            1.0,
            f"{t['streams_peak_rss_mb']:,.0f} vs {t['one_stream_peak_rss_mb']:,.0f} MB peak",
        )
    p = bench.info("test_sync_against_db2pq")
    if p:
        # key: the ratio (``<step>_<key>_ratio``) and the figure behind it (``<tool>_<step>_*``)
        figures = {
            "time": ("seconds", "{:,.2f} s"),
            "process_time": ("process_seconds", "{:,.2f} s"),
            "memory": ("peak_rss_mb", "{:,.0f} MB"),
            "process_cpu": ("process_cpu_seconds", "{:,.2f} CPU-s"),
            "server_cpu": ("server_cpu_seconds", "{:,.2f} CPU-s"),
        }
        for step, what, key in (
            ("full", "full copy, one stream: time", "time"),
            ("full", "full copy, one stream: peak RSS", "memory"),
            ("full_streams", "full copy, default streams: time", "time"),
            ("full_streams", "full copy, default streams: peak RSS", "memory"),
            ("full_streams", "full copy, default streams: own CPU (whole process)", "process_cpu"),
            ("full_streams", "full copy, default streams: PostgreSQL CPU", "server_cpu"),
            ("unchanged", "nothing changed: time of the call", "time"),
            ("unchanged", "nothing changed: whole process (start, imports, login)", "process_time"),
            ("one_year", "1 % of one year changed: time", "time"),
        ):
            field, fmt = figures[key]
            if f"{step}_{key}_ratio" not in p:  # results from before the step was measured
                continue
            add(
                f"{what}, wrdsvault / db2pq",
                f"{_rows(p['rows'])} rows",
                p[f"{step}_{key}_ratio"],
                "<=",
                None if key.endswith("_cpu") else DB2PQ,
                f"{fmt.format(p[f'wrdsvault_{step}_{field}'])} vs "
                f"{fmt.format(p[f'db2pq_{step}_{field}'])}",
            )
    y = bench.info("test_sync_runs_of_years_against_one_copy_per_year")
    if y:
        where = f"{_rows(y['rows'])} rows, {y['years']} years, no index on the date"
        for n in sorted({1, y["streams"]}):
            add(
                f"first sync with runs of years / one COPY per year, {n} stream(s): time",
                where,
                y.get(f"time_ratio_{n}"),
                "<=",
                1.0,
                f"{y[f'runs_{n}_seconds']:.2f} s vs {y[f'per_year_{n}_seconds']:.2f} s",
            )
            add(
                f"first sync with runs of years / one COPY per year, {n} stream(s): PostgreSQL CPU",
                where,
                y.get(f"server_cpu_ratio_{n}"),
                "<=",
                1.0,
                f"{y[f'runs_{n}_server_cpu_seconds']:.2f} vs "
                f"{y[f'per_year_{n}_server_cpu_seconds']:.2f} CPU-s",
            )
    r = bench.info("test_resync_dsf_unchanged_and_one_year")
    if r:
        add(
            "unchanged re-sync time / full sync time",
            f"{_rows(r['rows'])} rows",
            r["unchanged_time_ratio"],
            "<=",
            UNCHANGED,
            f"{r['unchanged_seconds'] * 1e3:,.0f} ms vs {r['full_seconds']:,.2f} s; "
            f"{r['unchanged_bytes_written']} bytes written",
        )
        add(
            "one-year change: (time / full time) / (year's rows / all rows)",
            f"{_rows(r['rows'])} rows",
            r["one_year_cost_ratio"],
            "<=",
            ONE_YEAR,
            f"{r['one_year_seconds']:,.2f} s vs {r['full_seconds']:,.2f} s for "
            f"{r['one_year_row_fraction']:.0%} of the rows; wrote "
            f"{r['one_year_bytes_written'] / 1e6:,.1f} of {r['full_parquet_bytes'] / 1e6:,.1f} MB",
        )
    for q in QUERIES:
        key = q.replace("-", "_")
        pinned = bench.median_ms(f"test_query_{key}_pinned_snapshot")
        bare = bench.median_ms(f"test_query_{key}_bare_duckdb_baseline")
        if pinned is None or bare is None:
            continue
        qi = bench.info(f"test_query_{key}_pinned_snapshot")
        add(
            f"query {q}: pinned / bare DuckDB (medians)",
            f"{_rows(qi.get('input_rows'))} rows, {qi.get('input_files')} files",
            pinned / bare,
            "<=",
            QUERY,
            f"{pinned:,.1f} vs {bare:,.1f} ms",
        )
    for name, what, target in (
        ("test_snapshot_open_latest", "snapshot open latest, fresh Warehouse (median)", OPEN_MS),
        (
            "test_snapshot_open_latest_cached_manifest",
            "snapshot open latest, manifest cached (median)",
            OPEN_MS,
        ),
        ("test_snapshot_open_first_query", "first query after opening (median)", FIRST_QUERY_MS),
        (
            "test_snapshot_open_second_dataset_query",
            "first query on a second dataset (median)",
            None,
        ),
    ):
        ms = bench.median_ms(name)
        if ms is not None:
            files = bench.info(name).get("files", 0)
            add(what, f"{files:,} files", ms, "<=", target, f"{ms:,.1f} ms", " ms")
    for name, base_name, what in ONESHOT_PAIRS:
        ms, base_ms = bench.median_ms(name), bench.median_ms(base_name)
        if ms is not None and base_ms is not None:
            rss = bench.info(name).get("peak_rss_mb")
            base_rss = bench.info(base_name).get("peak_rss_mb")
            add(
                f"one-shot process: {what} / bare (medians)",
                "fresh interpreter" if "import" in name else "demo vault, crsp.msf",
                ms / base_ms,
                "<=",
                ONESHOT,
                f"{ms:,.0f} vs {base_ms:,.0f} ms; peak RSS {rss} vs {base_rss} MB",
            )
    verify = bench.median_ms("test_verify_vault")
    hashlib_ms = bench.median_ms("test_verify_plain_hashlib_baseline")
    if verify is not None and hashlib_ms is not None:
        vi = bench.info("test_verify_vault")
        nbytes = vi["bytes"]
        add(
            "verify MB/s / hashlib MB/s (medians)",
            f"{nbytes / 1e6:,.0f} MB, {vi.get('files')} files",
            hashlib_ms / verify,
            ">=",
            VERIFY,
            f"{nbytes / 1e3 / verify:,.0f} vs {nbytes / 1e3 / hashlib_ms:,.0f} MB/s",
        )
    backup = bench.median_ms("test_full_backup")
    # Not named ``label``: add() files each row under the size's label.
    for baseline, base_name in (
        ("test_full_cp_r_baseline", "cp -r"),
        ("test_full_cp_r_sync_baseline", "cp -r + sync"),
    ):
        base_ms = bench.median_ms(baseline)
        if backup is None or base_ms is None:
            continue
        nbytes = bench.info("test_full_backup")["bytes"]
        add(
            f"full backup MB/s / {base_name} MB/s (medians)",
            f"{nbytes / 1e6:,.0f} MB in 16 MB files",
            base_ms / backup,
            ">=",
            BACKUP,
            f"{nbytes / 1e3 / backup:,.0f} vs {nbytes / 1e3 / base_ms:,.0f} MB/s",
        )
    return out


def scaling_row(label: str, bench: Bench) -> dict[str, Any]:
    """The absolute costs at one size (for the scaling tables and the plot)."""
    s = bench.info("test_sync_dsf_against_raw_sql")
    r = bench.info("test_resync_dsf_unchanged_and_one_year")
    row: dict[str, Any] = {"size": label}
    if s:
        row.update(
            sync_rows=s["rows"],
            sync_rows_per_s=s["sync_all_rows_per_s"],
            sync_no_markers_rows_per_s=s["sync_all_without_year_markers_rows_per_s"],
            raw_sql_rows_per_s=s.get("raw_sql_all_rows_per_s"),
            sync_year_rows_per_s=s["sync_year_rows_per_s"],
            raw_sql_year_rows_per_s=s.get("raw_sql_year_rows_per_s"),
            sync_peak_rss_mb=s["sync_all_peak_rss_mb"],
            raw_sql_peak_rss_mb=s.get("raw_sql_all_peak_rss_mb"),
            sync_year_peak_rss_mb=s["sync_year_peak_rss_mb"],
            raw_sql_year_peak_rss_mb=s.get("raw_sql_year_peak_rss_mb"),
            sync_s=s["sync_all_seconds"],
            raw_sql_s=s.get("raw_sql_all_seconds"),
            parquet_mb=s.get("parquet_bytes", 0) / 1e6,
        )
    if r:
        row.update(
            resync_rows=r["rows"],
            full_s=r["full_seconds"],
            unchanged_s=r["unchanged_seconds"],
            recorded_s=r["recorded_seconds"],
            one_year_s=r["one_year_seconds"],
            one_year_mb=r["one_year_bytes_written"] / 1e6,
            full_mb=r["full_parquet_bytes"] / 1e6,
        )
    for q in ("monthly-from-daily", "one-permno-history"):
        key = q.replace("-", "_")
        pinned = bench.median_ms(f"test_query_{key}_pinned_snapshot")
        if pinned is not None:
            row[f"{key}_pinned_ms"] = pinned
            row[f"{key}_bare_ms"] = bench.median_ms(f"test_query_{key}_bare_duckdb_baseline")
            row["query_rows"] = bench.info(f"test_query_{key}_pinned_snapshot")["input_rows"]
    verify = bench.median_ms("test_verify_vault")
    hashlib_ms = bench.median_ms("test_verify_plain_hashlib_baseline")
    if verify is not None and hashlib_ms is not None:
        nbytes = bench.info("test_verify_vault")["bytes"]
        row.update(
            verify_mb=nbytes / 1e6,
            verify_mb_per_s=nbytes / 1e3 / verify,
            hashlib_mb_per_s=nbytes / 1e3 / hashlib_ms,
        )
    for name, key in (
        ("test_snapshot_open_latest", "open_ms"),
        ("test_snapshot_open_latest_cached_manifest", "open_cached_ms"),
        ("test_snapshot_open_first_query", "first_query_ms"),
    ):
        ms = bench.median_ms(name)
        if ms is not None:
            row[key] = ms
            row["open_files"] = bench.info(name)["files"]
    return row


# --------------------------------------------------------------------------------------------
# The docs block and the plot
# --------------------------------------------------------------------------------------------


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], align: str) -> list[str]:
    lines = ["| " + " | ".join(header) + " |"]
    lines.append("| " + " | ".join("---:" if a == "r" else "---" for a in align) + " |")
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return lines


def _get(row: dict[str, Any], key: str, fmt: Callable[[Any], str]) -> str:
    value = row.get(key)
    return "n/a" if value is None else fmt(value)


def render_block(meta: dict[str, Any], ratios: list[dict[str, Any]], scaling: list[dict]) -> str:
    m = meta["machine"]
    v = m["versions"]
    when = meta.get("finished_at", meta["started_at"])[:16].replace("T", " ")
    kind = (
        "**Quick run** (`--quick`: a pipeline check at small sizes, not the reference numbers; "
        "replace it with a full run: `python benchmarks/full_run.py`)."
        if meta["quick"]
        else "**Full run** (reference sizes)."
    )
    sizes = ", ".join(r["size"]["label"] for r in meta["runs"])
    failed = [r for r in meta["runs"] if r["exit_code"] != 0]
    lines = [
        START,
        f"<!-- generated by benchmarks/full_run.py from {meta['results_dir']}; "
        "do not edit by hand -->",
        "",
        f"{kind} Sizes {sizes}; finished {when}; total wall time "
        f"{sum(r['wall_s'] for r in meta['runs']) / 60:.0f} min. Raw results: "
        f"`{meta['results_dir']}/`.",
        "",
        f"Machine: `{m['host']}`, {m['cpu_usable']} usable of {m['cpu_count']} CPUs "
        f"({m['cpu_model']}), {m['ram_bytes'] / 2**30:.1f} GiB RAM, {m['platform']}; "
        f"Python {m['python']}, DuckDB {v.get('duckdb')}, pyarrow {v.get('pyarrow')}, "
        f"pandas {v.get('pandas')}, wrds {v.get('wrds')}, psycopg2 {v.get('psycopg2-binary')}, "
        f"{m.get('postgres') or 'PostgreSQL (pgserver)'}, wrdsvault {v.get('wrdsvault')}. "
        "Load average (1/5/15 min) before and after each size: "
        + "; ".join(
            f"{r['size']['label']} {r['loadavg_before']} -> {r['loadavg_after']}"
            for r in meta["runs"]
        )
        + ".",
        "",
    ]
    if failed:
        lines += [
            "Failed sizes (pytest exit code != 0; see the logs): "
            + ", ".join(
                f"{r['size']['label']} (exit {r['exit_code']}, {r['log']})" for r in failed
            ),
            "",
        ]
    lines += ["Sizes (environment of each `pytest benchmarks` run):", ""]
    lines += _table(
        ["size", "sync rows (rounds)", "query vault", "verify", "snapshot open", "wall"],
        [
            [
                r["size"]["label"],
                f"{r['size']['sync_rows']:,} ({r['size'].get('sync_rounds', 1)})",
                f"{r['size']['securities']:,} securities x {r['size']['years']} years",
                f"{r['size']['verify_mb']:,} MB",
                f"{r['size']['open_datasets']} datasets x 60 years",
                f"{r['wall_s'] / 60:.1f} min",
            ]
            for r in meta["runs"]
        ],
        "lrlllr",
    )
    lines += ["", "### Ratios against the baselines", ""]
    lines += _table(
        ["benchmark", "size", "input", "measured", "ratio", "target", "status"],
        [
            [
                r["benchmark"],
                r["size"],
                r["input"],
                r["measured"],
                r["shown"],
                r["target"],
                r["status"],
            ]
            for r in ratios
        ],
        "lllrrll",
    )
    lines += ["", "### Cost against size", "", "Sync and re-sync (seconds of `wh.sync`):", ""]
    lines += _table(
        [
            "size",
            "rows",
            "sync rows/s",
            "`raw_sql` rows/s",
            "sync peak RSS",
            "`raw_sql` peak RSS",
            "full sync",
            "unchanged",
            "comment only",
            "one year",
            "Parquet",
        ],
        [
            [
                r["size"],
                _get(r, "sync_rows", lambda x: f"{x:,}"),
                _get(r, "sync_rows_per_s", lambda x: f"{x:,.0f}"),
                _get(r, "raw_sql_rows_per_s", lambda x: f"{x:,.0f}"),
                _get(r, "sync_peak_rss_mb", lambda x: f"{x:,.0f} MB"),
                _get(r, "raw_sql_peak_rss_mb", lambda x: f"{x:,.0f} MB"),
                _get(r, "full_s", lambda x: f"{x:,.2f} s"),
                _get(r, "unchanged_s", lambda x: f"{x * 1e3:,.0f} ms"),
                _get(r, "recorded_s", lambda x: f"{x:,.2f} s"),
                _get(r, "one_year_s", lambda x: f"{x:,.2f} s"),
                _get(r, "full_mb", lambda x: f"{x:,.0f} MB"),
            ]
            for r in scaling
        ],
        "lrrrrrrrrrr",
    )
    lines += ["", "Reads (medians):", ""]
    lines += _table(
        [
            "size",
            "dsf rows",
            "monthly-from-daily pinned / bare",
            "one permno pinned / bare",
            "verify / hashlib",
            "files",
            "open / cached / first query",
        ],
        [
            [
                r["size"],
                _get(r, "query_rows", lambda x: f"{x:,}"),
                f"{_get(r, 'monthly_from_daily_pinned_ms', lambda x: f'{x:,.1f}')} / "
                f"{_get(r, 'monthly_from_daily_bare_ms', lambda x: f'{x:,.1f}')} ms",
                f"{_get(r, 'one_permno_history_pinned_ms', lambda x: f'{x:,.1f}')} / "
                f"{_get(r, 'one_permno_history_bare_ms', lambda x: f'{x:,.1f}')} ms",
                f"{_get(r, 'verify_mb_per_s', lambda x: f'{x:,.0f}')} / "
                f"{_get(r, 'hashlib_mb_per_s', lambda x: f'{x:,.0f}')} MB/s "
                f"({_get(r, 'verify_mb', lambda x: f'{x:,.0f}')} MB)",
                _get(r, "open_files", lambda x: f"{x:,}"),
                f"{_get(r, 'open_ms', lambda x: f'{x:,.0f}')} / "
                f"{_get(r, 'open_cached_ms', lambda x: f'{x:,.0f}')} / "
                f"{_get(r, 'first_query_ms', lambda x: f'{x:,.0f}')} ms",
            ]
            for r in scaling
        ],
        "lrrrrrr",
    )
    alt = "Cost against size" + (" (quick run)" if meta["quick"] else "")
    rel = os.path.relpath(PLOT, DOCS.parent)
    lines += ["", f"![{alt}]({rel})", "", END]
    return "\n".join(lines)


def write_docs(block: str, docs: Path) -> None:
    text = docs.read_text()
    if START not in text or END not in text:
        raise SystemExit(f"{docs}: no {START} ... {END} block to rewrite")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    docs.write_text(head + block + tail)


def draw(scaling: list[dict[str, Any]], title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 3, figsize=(15, 8.5))

    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    def human(x: float, _pos: object = None) -> str:
        for div, suffix in ((1e6, "M"), (1e3, "k")):
            if abs(x) >= div:
                return f"{x / div:.3g}{suffix}"
        return f"{x:.3g}"

    def series(ax: Any, xkey: str, keys: Sequence[tuple[str, str, str]], scale: float = 1) -> None:
        xs_all: set[float] = set()
        for key, label, style in keys:
            pts = [(r[xkey], r[key] * scale) for r in scaling if xkey in r and r.get(key)]
            if pts:
                xs, ys = zip(*sorted(pts), strict=True)
                ax.plot(xs, ys, style, label=label)
                xs_all.update(xs)
        ax.set_xscale("log")
        if xs_all:  # ticks at the measured sizes, labelled 100k, 1M ...
            ax.set_xticks(sorted(xs_all), [human(x) for x in sorted(xs_all)])
            ax.xaxis.set_minor_formatter(NullFormatter())
        ax.grid(True, which="both", alpha=0.3)
        if xs_all:
            ax.legend(fontsize=8)
        else:
            ax.text(0.5, 0.5, "not measured", ha="center", va="center", transform=ax.transAxes)

    def log_y(ax: Any) -> None:
        ax.set_yscale("log")
        ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.yaxis.set_major_formatter(FuncFormatter(human))
        ax.yaxis.set_minor_formatter(NullFormatter())

    ax = axes[0][0]
    series(
        ax,
        "sync_rows",
        [
            ("sync_rows_per_s", "wh.sync, whole table", "o-"),
            ("sync_no_markers_rows_per_s", "wh.sync, no year markers", "o:"),
            ("sync_year_rows_per_s", "wh.sync, one year", "s--"),
            ("raw_sql_rows_per_s", "raw_sql, whole table", "^-"),
            ("raw_sql_year_rows_per_s", "raw_sql, one year", "v--"),
        ],
        1e-3,
    )
    ax.set(title="Sync throughput", xlabel="crsp.dsf rows", ylabel="thousand rows/s")
    ax = axes[0][1]
    series(
        ax,
        "sync_rows",
        [
            ("sync_peak_rss_mb", "wh.sync, whole table", "o-"),
            ("sync_year_peak_rss_mb", "wh.sync, one year", "s--"),
            ("raw_sql_peak_rss_mb", "raw_sql, whole table", "^-"),
            ("raw_sql_year_peak_rss_mb", "raw_sql, one year", "v--"),
        ],
    )
    log_y(ax)
    ax.set(title="Peak RSS of the syncing process", xlabel="crsp.dsf rows", ylabel="MB")
    ax = axes[0][2]
    series(
        ax,
        "resync_rows",
        [
            ("full_s", "first full sync", "o-"),
            ("one_year_s", "one year changed", "s-"),
            ("recorded_s", "comment changed only", "d:"),
            ("unchanged_s", "unchanged re-sync", "^-"),
        ],
    )
    log_y(ax)
    ax.set(title="Re-sync vs full sync", xlabel="crsp.dsf rows", ylabel="seconds")
    ax = axes[1][0]
    series(
        ax,
        "query_rows",
        [
            ("monthly_from_daily_pinned_ms", "monthly from daily, pinned", "o-"),
            ("monthly_from_daily_bare_ms", "monthly from daily, bare DuckDB", "o--"),
            ("one_permno_history_pinned_ms", "one permno, pinned", "s-"),
            ("one_permno_history_bare_ms", "one permno, bare DuckDB", "s--"),
        ],
    )
    log_y(ax)
    ax.set(title="Queries (median)", xlabel="crsp.dsf rows in the vault", ylabel="ms")
    ax = axes[1][1]
    series(
        ax,
        "verify_mb",
        [("verify_mb_per_s", "wh.verify()", "o-"), ("hashlib_mb_per_s", "hashlib.sha256", "^--")],
    )
    ax.set_ylim(bottom=0)
    ax.set(title="Verify throughput", xlabel="MB in the vault", ylabel="MB/s")
    ax = axes[1][2]
    series(
        ax,
        "open_files",
        [
            ("open_ms", "open latest (fresh)", "o-"),
            ("open_cached_ms", "open latest (manifest cached)", "s-"),
            ("first_query_ms", "first query after opening", "^-"),
        ],
    )
    ax.axhline(OPEN_MS, color="grey", linestyle=":", linewidth=1)
    log_y(ax)
    ax.set(title="Snapshot open (median)", xlabel="files in the snapshot", ylabel="ms")
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def report(out: Path, docs: Path | None) -> None:
    """Build the tables, the plot and the docs block from a results folder."""
    meta = json.loads((out / "machine.json").read_text())
    ratios: list[dict[str, Any]] = []
    scaling: list[dict[str, Any]] = []
    for run in meta["runs"]:
        bench = Bench(out / run["json"] if run["json"] else None)
        ratios += ratio_rows(run["size"]["label"], bench)
        scaling.append(scaling_row(run["size"]["label"], bench))
    order = {r["size"]["label"]: i for i, r in enumerate(meta["runs"])}
    first: dict[str, int] = {}
    for r in ratios:
        first.setdefault(r["benchmark"], len(first))
    ratios.sort(key=lambda r: (first[r["benchmark"]], order[r["size"]]))
    (out / "summary.json").write_text(json.dumps({"ratios": ratios, "scaling": scaling}, indent=2))
    m = meta["machine"]
    title = (
        f"wrdsvault benchmarks{' (quick run)' if meta['quick'] else ''}: {m['host']}, "
        f"{m['cpu_usable']} CPUs ({m['cpu_model']}), {m['ram_bytes'] / 2**30:.0f} GiB, "
        f"{meta.get('finished_at', meta['started_at'])[:10]}"
    )
    draw(scaling, title, out / PLOT.name)
    block = render_block(meta, ratios, scaling)
    (out / "results-block.md").write_text(block + "\n")
    if docs is not None:
        PLOT.parent.mkdir(parents=True, exist_ok=True)
        PLOT.write_bytes((out / PLOT.name).read_bytes())
        write_docs(block, docs)
        print(f"wrote {PLOT.relative_to(REPO)} and the results block of {docs}")


# --------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--sizes",
        type=lambda s: [parse_rows(x) for x in s.split(",") if x.strip()],
        help="comma-separated crsp.dsf row counts (default 1M,5M,10M)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="three small sizes (100k,200k,400k): minutes"
    )
    parser.add_argument(
        "--from-results",
        type=Path,
        metavar="DIR",
        help="do not run anything: rebuild the plot and docs block from a results folder",
    )
    parser.add_argument(
        "--sync-rounds",
        type=int,
        default=1,
        metavar="N",
        help="runs of each sync path, the median reported (default 1; 3 on a noisy machine)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        metavar="DIR",
        help="results folder (default benchmarks/results/<date>-<host>[-quick])",
    )
    parser.add_argument(
        "--no-docs",
        action="store_true",
        help="leave docs/ alone (results, plot and block stay in the results folder)",
    )
    parser.add_argument(
        "--no-db2pq",
        action="store_true",
        help="do not set up the db2pq baseline (benchmarks/setup_db2pq.py); test_db2pq.py "
        "then skips unless its venv already exists",
    )
    parser.add_argument(
        "--pytest-args", default="", help="extra pytest arguments, e.g. \"-k 'sync or resync'\""
    )
    args = parser.parse_args(argv)
    docs = None if args.no_docs else DOCS

    if args.from_results is not None:
        report(args.from_results.resolve(), docs)
        return 0

    rows = args.sizes or (QUICK_SIZES if args.quick else FULL_SIZES)
    if args.sync_rounds < 1:
        parser.error("--sync-rounds must be at least 1")
    sizes = [Size.from_rows(n, sync_rounds=args.sync_rounds) for n in rows]
    out = args.out.resolve() if args.out is not None else _results_dir(args.quick)
    out.mkdir(parents=True, exist_ok=False)
    print(f"results: {out}", flush=True)
    meta: dict[str, Any] = {
        "quick": bool(args.quick),
        "command": shlex.join([Path(sys.argv[0]).as_posix(), *(argv or sys.argv[1:])]),
        "started_at": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "results_dir": out.relative_to(REPO).as_posix() if out.is_relative_to(REPO) else str(out),
        "machine": machine_facts(),
        "loadavg_before": _loadavg(),
        "runs": [],
    }
    extra = shlex.split(args.pytest_args)
    if not args.no_db2pq:
        # db2pq's own venv (idempotent, offline from PyPI wheels): test_db2pq.py needs it.
        subprocess.run([sys.executable, str(BENCH_DIR / "setup_db2pq.py")], check=True)
    exit_code = 0
    for i, size in enumerate(sizes, 1):
        print(f"[{i}/{len(sizes)}] size {size.label}: {size}", flush=True)
        run = run_size(size, out, extra)
        meta["runs"].append(run)
        exit_code = exit_code or run["exit_code"]
        (out / "machine.json").write_text(json.dumps(meta, indent=2))
    meta["loadavg_after"] = _loadavg()
    meta["finished_at"] = dt.datetime.now().astimezone().isoformat(timespec="seconds")
    (out / "machine.json").write_text(json.dumps(meta, indent=2))
    report(out, docs)
    return exit_code


if __name__ == "__main__":
    sys.exit(main())
