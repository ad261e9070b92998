"""Measure one sync path in a fresh interpreter: wall time, peak memory, the SyncReport.

Shared by ``test_sync.py`` and ``test_resync.py``. The parent (`measure`) starts this file as a
script with one JSON argument, samples the child's RSS with psutil every ~50 ms while it runs, and
reads back the one JSON line the child prints last. The child (`child`) runs exactly one path:

* ``raw_sql``: ``wrds.Connection.raw_sql("SELECT * FROM crsp.dsf ...", date_cols=["date"])``;
* ``sync``: `Warehouse.sync` through `WrdsSource` (per-year markers on), default settings;
* ``sync_without_year_markers``: the same with ``WrdsSource(year_markers=False)``;
* ``sync_per_year``: the same with one COPY per year (the source's ``read_partitions`` hidden,
  so the sync reads no runs of years);
* ``bare_copy``: the physical floor (`bare_copy`): ``COPY ... TO STDOUT (FORMAT csv)`` ->
  ``pyarrow.csv.open_csv`` -> one zstd ``ParquetWriter``, nothing else.

The sync paths read ``streams`` years at once (``WrdsSource(streams=...)``, default 1 here).

Every path logs in before its clock starts (``raw_sql``: ``wrds.Connection``; the sync paths:
``WrdsSource.db``; ``bare_copy``: `connect`), so no measured time includes a login.

``cpu_seconds`` is the child's user + system CPU time (all its threads) over the measured call
alone: steadier than wall time on a busy machine. Two peak-memory figures come back:

* ``peak_rss_bytes``: the child's own high-water mark, ``VmHWM`` of ``/proc/self/status``
  (exact, read at the end of the child). Not ``ru_maxrss``: on Linux ``getrusage`` carries the
  peak RSS of the pre-``exec`` image over into the new program, so a child started by a 300 MB
  pytest process reports at least 300 MB whatever it does. Where ``/proc`` is missing (macOS) the
  child falls back to ``ru_maxrss``.
* ``sampled_peak_rss_bytes``: the largest RSS the parent saw while sampling (psutil; can miss a
  spike shorter than the sampling interval, so it is a lower bound of the first).

``start_rss_bytes`` is the child's RSS when its clock started (interpreter, imports, login: the
floor under every peak).

``server_cpu_seconds`` (added by the parent) is the CPU time PostgreSQL spent while the child
lived: every ``postgres`` process of the machine, the backends the postmaster reaped included
(`server_cpu_seconds`). On these benchmarks the server shares the client's cores, so what a path
asks of the server is time it takes from the client; against WRDS it runs on WRDS's CPUs.

pytest runs with ``--import-mode=importlib``, so the test modules load this file by path
(`load_helper` in ``conftest.py``), never as ``import _measure``.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Final

DATASET: Final = "crsp.dsf"
#: How often the parent samples the child's RSS.
SAMPLE_INTERVAL_S: Final = 0.05
#: A child that runs longer than this is killed (the largest scaled run takes minutes).
CHILD_TIMEOUT_S: Final = 3 * 3600


# --------------------------------------------------------------------------------------------
# The child
# --------------------------------------------------------------------------------------------


def peak_rss_bytes() -> int:
    """This process's peak RSS: ``VmHWM`` (Linux), else ``ru_maxrss``."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024  # kB
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # Linux reports KiB


def rss_bytes() -> int:
    """This process's current RSS (``VmRSS``; 0 where ``/proc`` is missing)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def server_cpu_seconds() -> float:
    """CPU seconds of every PostgreSQL process of this machine, with the backends the
    postmaster reaped (its children's times). A backend still alive counts its own."""
    import psutil

    total = 0.0
    for proc in psutil.process_iter(["name"]):
        try:
            if "postgres" not in (proc.info["name"] or ""):
                continue
            t = proc.cpu_times()
            total += t.user + t.system + t.children_user + t.children_system
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return total


def cpu_seconds() -> float:
    """User + system CPU time of this process so far (every thread)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def child(args: dict[str, Any]) -> dict[str, Any]:
    """Run one path in this (fresh) process; return rows, seconds, peak RSS, the report."""
    kwargs = args["connect"]
    year = args.get("year")
    out: dict[str, Any] = {}
    if args["path"] == "raw_sql":
        import wrds

        # Prints "Loading library list..." to stdout: the parent reads only the last line.
        db = wrds.Connection(**kwargs)
        where = (
            "" if year is None else (f" WHERE date >= '{year}-01-01' AND date < '{year + 1}-01-01'")
        )
        start_rss = rss_bytes()
        started, cpu = time.perf_counter(), cpu_seconds()
        frame = db.raw_sql(f"SELECT * FROM {DATASET}{where}", date_cols=["date"])
        seconds, cpu = time.perf_counter() - started, cpu_seconds() - cpu
        rows = len(frame)
        db.close()
    elif args["path"] == "bare_copy":
        from wrdsvault.sources.wrds import connect

        db = connect(**kwargs)  # log in before the clock starts, as the sync paths do
        start_rss = rss_bytes()
        started, cpu = time.perf_counter(), cpu_seconds()
        rows = bare_copy(db, args["vault"], year)
        seconds, cpu = time.perf_counter() - started, cpu_seconds() - cpu
        db.close()
    elif args["path"] in ("sync", "sync_without_year_markers", "sync_per_year"):
        from wrdsvault import VaultSettings, Warehouse
        from wrdsvault.sources import WrdsSource

        source = WrdsSource(
            **kwargs,
            year_markers=args["path"] != "sync_without_year_markers",
            streams=args.get("streams", 1),
        )
        if args["path"] == "sync_per_year":
            source.read_partitions = None  # type: ignore[method-assign,assignment]
        source.login()  # before the clock starts, as raw_sql's Connection did
        with Warehouse(args["vault"], source=source, settings=VaultSettings()) as wh:
            start_rss = rss_bytes()
            started, cpu = time.perf_counter(), cpu_seconds()
            report = wh.sync(DATASET, years=None if year is None else [year])
            seconds, cpu = time.perf_counter() - started, cpu_seconds() - cpu
        result = report[DATASET]
        rows = result.rows_written
        out["report"] = result.to_json()
        out["committed"] = report.committed
        out["snapshot_id"] = report.snapshot_id
    else:
        raise ValueError(f"unknown path {args['path']!r}")
    out.update(
        rows=rows,
        seconds=seconds,
        cpu_seconds=cpu,
        peak_rss_bytes=peak_rss_bytes(),
        start_rss_bytes=start_rss,
    )
    return out


def bare_copy(db: Any, folder: str, year: int | None) -> int:
    """The physical floor: ``COPY (SELECT * ...) TO STDOUT (FORMAT csv)`` -> OS pipe ->
    ``pyarrow.csv.open_csv`` (types inferred) -> one zstd ``ParquetWriter``. No ordering,
    hashing, validation, fsync or manifest. Returns the rows written.

    ``db`` is a logged-in ``wrds.Connection``: the caller logs in before its clock starts, as
    the sync paths do, so the login (a Duo push on WRDS) is in neither time."""
    import io
    import os
    import threading

    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    raw = db.connection.connection.dbapi_connection
    where = "" if year is None else f" WHERE date >= '{year}-01-01' AND date < '{year + 1}-01-01'"
    read_fd, write_fd = os.pipe()
    sink = os.fdopen(write_fd, "wb", buffering=1 << 20)

    def copy() -> None:
        try:
            with raw.cursor() as cur:
                cur.copy_expert(
                    f"COPY (SELECT * FROM {DATASET}{where}) TO STDOUT (FORMAT csv)", sink
                )
        finally:
            sink.close()

    thread = threading.Thread(target=copy)
    thread.start()
    source = io.BufferedReader(io.FileIO(read_fd, "rb"), 1 << 20)
    reader = pacsv.open_csv(
        source,
        read_options=pacsv.ReadOptions(autogenerate_column_names=True, block_size=4 << 20),
        parse_options=pacsv.ParseOptions(newlines_in_values=True),
    )
    rows = 0
    Path(folder).mkdir(parents=True, exist_ok=True)
    with pq.ParquetWriter(
        str(Path(folder) / "bare.parquet"), reader.schema, compression="zstd"
    ) as w:
        for batch in reader:
            w.write_batch(batch)
            rows += batch.num_rows
    thread.join()
    return rows


# --------------------------------------------------------------------------------------------
# The parent
# --------------------------------------------------------------------------------------------


def watch(proc: Any, started: float, timeout: float, label: str) -> tuple[int, int]:
    """Sample a running child's RSS until it exits; return (peak bytes, samples taken).

    Kills the child and raises `AssertionError` if it runs over ``timeout`` seconds from
    ``started`` (a ``time.perf_counter()`` reading).
    """
    import psutil

    peak = samples = 0
    try:
        # Popen returns once the child has exec'ed: from here on its RSS is its own.
        watched: psutil.Process | None = psutil.Process(proc.pid)
    except psutil.NoSuchProcess:
        watched = None
    try:
        while True:
            if watched is not None:
                try:
                    peak = max(peak, watched.memory_info().rss)
                    samples += 1
                except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
                    watched = None
            try:
                proc.wait(timeout=SAMPLE_INTERVAL_S)
                return peak, samples
            except subprocess.TimeoutExpired:
                if time.perf_counter() - started > timeout:
                    msg = f"{label}: child ran over {timeout} s"
                    raise AssertionError(msg) from None
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def run_child(script: Path, args: dict[str, Any], *, timeout: float = CHILD_TIMEOUT_S) -> dict:
    """Run ``python script '<json args>'``; sample its RSS; return its last stdout line, parsed.

    Adds ``sampled_peak_rss_bytes``, ``rss_samples``, ``process_seconds`` (the child's whole
    life: interpreter start, imports, login, the measured call), ``process_cpu_seconds`` (its
    user + system CPU time over that life; ``cpu_seconds``, from the child, covers the measured
    call alone) and ``server_cpu_seconds`` (PostgreSQL's CPU time over that life).
    """

    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        server_before = server_cpu_seconds()
        started = time.perf_counter()
        proc = subprocess.Popen(
            [sys.executable, str(script), json.dumps(args)], stdout=out, stderr=err, text=True
        )
        peak, samples = watch(proc, started, timeout, str(args.get("path")))
        process_seconds = time.perf_counter() - started
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        server = server_cpu_seconds() - server_before
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if proc.returncode != 0 or not stdout.strip():
        raise AssertionError(
            f"{args.get('path')} {args.get('year')}: child failed "
            f"(exit {proc.returncode}):\n{stderr[-4000:]}"
        )
    result: dict[str, Any] = json.loads(stdout.strip().splitlines()[-1])
    result["sampled_peak_rss_bytes"] = peak
    result["rss_samples"] = samples
    result["process_seconds"] = process_seconds
    # The child's whole CPU time, user + system (children waited for since `before`: this one).
    result["process_cpu_seconds"] = (after.ru_utime - before.ru_utime) + (
        after.ru_stime - before.ru_stime
    )
    result["server_cpu_seconds"] = server
    return result


def measure(
    path: str, year: int | None, connect: dict[str, Any], vault: Path, *, streams: int = 1
) -> dict[str, Any]:
    """Run one sync path (see the module docstring) in a fresh interpreter; add rows/s."""
    args = {"path": path, "year": year, "connect": connect, "vault": str(vault), "streams": streams}
    result = run_child(Path(__file__), args)
    result["rows_per_s"] = result["rows"] / result["seconds"] if result["seconds"] > 0 else 0.0
    return result


def median_of(results: list[dict[str, Any]]) -> dict[str, Any]:
    """The round with the median ``seconds`` (the lower middle one of an even count), with every
    round's seconds in ``seconds_all``."""
    ranked = sorted(results, key=lambda r: r["seconds"])
    chosen = dict(ranked[(len(ranked) - 1) // 2])
    chosen["seconds_all"] = [r["seconds"] for r in results]
    return chosen


def record(info: dict[str, Any], name: str, result: dict[str, Any]) -> None:
    """Put one measured path's numbers into ``benchmark.extra_info`` under ``name_*``."""
    info[f"{name}_seconds"] = round(result["seconds"], 4)
    if "cpu_seconds" in result:  # not from every helper (db2pq's child)
        info[f"{name}_cpu_seconds"] = round(result["cpu_seconds"], 3)
    info[f"{name}_rows_per_s"] = round(result["rows_per_s"])
    info[f"{name}_peak_rss_mb"] = round(result["peak_rss_bytes"] / 2**20, 1)
    info[f"{name}_sampled_peak_rss_mb"] = round(result["sampled_peak_rss_bytes"] / 2**20, 1)
    info[f"{name}_start_rss_mb"] = round(result["start_rss_bytes"] / 2**20, 1)
    info[f"{name}_process_seconds"] = round(result["process_seconds"], 3)
    if "process_cpu_seconds" in result:
        info[f"{name}_process_cpu_seconds"] = round(result["process_cpu_seconds"], 3)
    if "server_cpu_seconds" in result:
        info[f"{name}_server_cpu_seconds"] = round(result["server_cpu_seconds"], 3)
    if len(result.get("seconds_all", ())) > 1:
        info[f"{name}_seconds_all"] = [round(x, 4) for x in result["seconds_all"]]


if __name__ == "__main__":
    print(json.dumps(child(json.loads(sys.argv[1]))))
