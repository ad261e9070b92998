"""Run db2pq once in its own venv (``setup_db2pq.py``): wall time, peak memory, rows written.

The parent (`measure_db2pq`) starts this file with the db2pq venv's interpreter, ``HOME`` set to
the venv's private home (where DuckDB's postgres extension is installed), one JSON argument, and
samples the child's RSS like ``_measure.py`` does for the sync paths. The child (`child`) calls
``db2pq.pg_update_pq(table, schema, ...)`` with db2pq's defaults (DuckDB engine, 3 threads,
zstd, row groups of 1M rows): the table's comment decides whether anything is copied (a
``... (Updated YYYY-MM-DD)`` date newer than the one stored in the Parquet file's metadata), and
a copy always rewrites the whole table to ``<data_dir>/<schema>/<table>.parquet``. Its last
stdout line is JSON: ``rows`` (of the Parquet file, 0 when nothing was copied), ``seconds`` (the
call), ``peak_rss_bytes`` (``VmHWM``), ``start_rss_bytes``, ``copied``.

db2pq has no separate login step: the call's time includes its connection probe, the comment
look-up and the DuckDB ``ATTACH``, as a user of it would pay. The replica is reached through its
Unix socket: the socket folder, percent-encoded, is the host of db2pq's ``postgres://`` URI.

This file runs under the db2pq venv, which has no wrdsvault: it imports only the standard
library, db2pq, pyarrow and ``_measure.py`` (loaded by path, standard library only).
"""

from __future__ import annotations

import importlib.util
import json
import resource
import subprocess
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path
from typing import Any, Final

HERE: Final = Path(__file__).resolve().parent
CHILD_TIMEOUT_S: Final = 3 * 3600


def _load(name: str) -> Any:
    spec = importlib.util.spec_from_file_location(f"wrdsvault_bench_{name}", HERE / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def child(args: dict[str, Any]) -> dict[str, Any]:
    """Run ``pg_update_pq`` once in this fresh process (the db2pq venv)."""
    measure = _load("_measure")
    schema, table = args["dataset"].split(".")
    import db2pq
    import pyarrow.parquet as pq

    target = Path(args["data_dir"]) / schema / f"{table}.parquet"
    before = target.stat().st_mtime_ns if target.exists() else None
    start_rss = measure.rss_bytes()
    started = time.perf_counter()
    db2pq.pg_update_pq(
        table,
        schema,
        user=args["user"],
        host=urllib.parse.quote(args["host"], safe=""),
        database=args["database"],
        port=args["port"],
        data_dir=args["data_dir"],
        engine="duckdb",
    )
    seconds = time.perf_counter() - started
    copied = target.exists() and target.stat().st_mtime_ns != before
    rows = pq.ParquetFile(target).metadata.num_rows if copied else 0
    return {
        "rows": rows,
        "seconds": seconds,
        "copied": copied,
        "parquet_bytes": target.stat().st_size if target.exists() else 0,
        "peak_rss_bytes": measure.peak_rss_bytes(),
        "start_rss_bytes": start_rss,
    }


def measure_db2pq(
    venv_python: Path, env: dict[str, str], dataset: str, connect: dict[str, Any], data_dir: Path
) -> dict[str, Any]:
    """Run `child` with the db2pq venv's interpreter; sample its RSS; return its numbers.

    ``connect`` is the replica's `WrdsSource` keyword arguments (``connect_kwargs``). Adds
    ``sampled_peak_rss_bytes``, ``process_seconds``, ``process_cpu_seconds``,
    ``server_cpu_seconds`` and ``rows_per_s`` as ``_measure`` does.
    """

    args = {
        "dataset": dataset,
        "user": connect["wrds_username"],
        "host": connect["wrds_connect_args"]["host"],
        "database": connect["wrds_dbname"],
        "port": connect["wrds_port"],
        "data_dir": str(data_dir),
    }
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        measure = _load("_measure")
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        server_before = measure.server_cpu_seconds()
        started = time.perf_counter()
        proc = subprocess.Popen(
            [str(venv_python), str(Path(__file__)), json.dumps(args)],
            stdout=out,
            stderr=err,
            text=True,
            env=env,
            cwd=data_dir.parent,  # db2pq loads a .env from the working folder: not ours
        )
        peak, _ = measure.watch(proc, started, CHILD_TIMEOUT_S, "db2pq")
        process_seconds = time.perf_counter() - started
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        server = measure.server_cpu_seconds() - server_before
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if proc.returncode != 0 or not stdout.strip():
        raise AssertionError(f"db2pq child failed (exit {proc.returncode}):\n{stderr[-4000:]}")
    result: dict[str, Any] = json.loads(stdout.strip().splitlines()[-1])
    result["output"] = "\n".join(stdout.strip().splitlines()[:-1])
    result["sampled_peak_rss_bytes"] = peak
    result["process_seconds"] = process_seconds
    result["process_cpu_seconds"] = (after.ru_utime - before.ru_utime) + (
        after.ru_stime - before.ru_stime
    )
    result["server_cpu_seconds"] = server
    result["rows_per_s"] = result["rows"] / result["seconds"] if result["seconds"] > 0 else 0.0
    return result


if __name__ == "__main__":
    print(json.dumps(child(json.loads(sys.argv[1]))))
