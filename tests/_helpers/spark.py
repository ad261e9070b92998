"""Spark for the engine tests: a session bound to 127.0.0.1, a standalone master and worker.

pyspark ships the JVM (Java 17 is on the machine). Everything binds to the loopback interface:
the driver, the master, the worker and its executor.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any

from _helpers.engines import DATASETS, assert_same, bm_sql, monthly_sql

if TYPE_CHECKING:
    from wrdsvault import Snapshot

#: What every Spark process here gets in its environment.
SPARK_ENV = {"SPARK_LOCAL_IP": "127.0.0.1", "PYSPARK_PYTHON": sys.executable}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def session(master: str) -> Any:
    """A SparkSession on ``master`` (``local[2]`` or ``spark://127.0.0.1:<port>``)."""
    from pyspark.sql import SparkSession

    os.environ.update(SPARK_ENV)
    spark = (
        SparkSession.builder.master(master)
        .appName("wrdsvault-engine-tests")
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.driver.bindAddress", "127.0.0.1")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.shuffle.partitions", "4")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.cores.max", "2")
        .config("spark.executor.memory", "1g")
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("ERROR")
    return spark


def executors(spark: Any) -> int:
    """Block managers registered with the driver: 1 (the driver) + one per executor."""
    count: int = spark.sparkContext._jsc.sc().getExecutorMemoryStatus().size()
    return count


def wait_for_executor(spark: Any, limit_s: float = 90) -> None:
    """Poll until the cluster's executor has registered with this driver (it starts async)."""
    deadline = time.monotonic() + limit_s
    while executors(spark) < 2:
        if time.monotonic() > deadline:
            msg = f"no executor registered within {limit_s:.0f} s"
            raise AssertionError(msg)
        time.sleep(0.2)  # polling a JVM that is starting


def _wait(check: Any, what: str, proc: subprocess.Popen[bytes], log: Path, limit_s: float) -> Any:
    """Poll ``check()`` until it returns something true; fail with the log if it never does."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        try:
            found = check()
        except OSError:
            found = None
        if found:
            return found
        time.sleep(0.2)  # polling a process that is starting, not synchronising on a guess
    text = log.read_text(errors="replace")[-3000:]
    msg = f"{what} did not come up within {limit_s:.0f} s (exit {proc.poll()}):\n{text}"
    raise AssertionError(msg)


def master_state(ui_port: int) -> dict[str, Any]:
    """The standalone master's JSON status page."""
    with urllib.request.urlopen(f"http://127.0.0.1:{ui_port}/json/", timeout=5) as resp:
        state: dict[str, Any] = json.load(resp)
        return state


@contextmanager
def standalone_cluster(work: Path) -> Iterator[tuple[str, int]]:
    """A standalone master and one worker (2 cores) as child processes on 127.0.0.1.

    Yields the master URL and its UI port; stops both (SIGTERM, then SIGKILL) on the way out.
    """
    import pyspark

    home = Path(pyspark.__file__).resolve().parent
    spark_class = str(home / "bin" / "spark-class")
    env = {**os.environ, **SPARK_ENV, "SPARK_HOME": str(home), "SPARK_LOG_DIR": str(work)}
    port, ui, worker_ui = _free_port(), _free_port(), _free_port()
    url = f"spark://127.0.0.1:{port}"
    procs: list[subprocess.Popen[bytes]] = []

    def start(name: str, *args: str) -> tuple[subprocess.Popen[bytes], Path]:
        log = work / f"{name}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [spark_class, *args],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        procs.append(proc)
        return proc, log

    try:
        master, mlog = start(
            "master",
            "org.apache.spark.deploy.master.Master",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--webui-port",
            str(ui),
        )
        _wait(lambda: master_state(ui), "the Spark master", master, mlog, 90)
        worker, wlog = start(
            "worker",
            "org.apache.spark.deploy.worker.Worker",
            "--host",
            "127.0.0.1",
            "--cores",
            "2",
            "--memory",
            "2g",
            "--webui-port",
            str(worker_ui),
            "--work-dir",
            str(work / "worker"),
            url,
        )
        _wait(
            lambda: master_state(ui).get("aliveworkers", 0) >= 1,
            "the Spark worker",
            worker,
            wlog,
            90,
        )
        yield url, ui
    finally:
        # Each was started in a session of its own: its process group is it and its children
        # (the worker's executor JVM).
        for proc in reversed(procs):
            _signal_group(proc, signal.SIGTERM)
        for proc in reversed(procs):
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                _signal_group(proc, signal.SIGKILL)
                proc.wait()


def _signal_group(proc: subprocess.Popen[bytes], sig: int) -> None:
    with suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)


# -- the checks both Spark modules run (local[2] and the standalone cluster) ---------------------


def check_types(spark: Any, snap: Snapshot) -> None:
    """DecimalType(11,5), IntegerType (NULLs stay NULL), ShortType, DateType, StringType."""
    from pyspark.sql import types as T

    cols = ["permno", "hexcd", "date", "prc", "numtrd", "cusip"]
    df = snap.to_spark(spark, "crsp.dsf", columns=cols)
    assert [(f.name, f.dataType) for f in df.schema.fields] == [
        ("permno", T.IntegerType()),
        ("hexcd", T.ShortType()),
        ("date", T.DateType()),
        ("prc", T.DecimalType(11, 5)),
        ("numtrd", T.IntegerType()),
        ("cusip", T.StringType()),
    ]
    got = df.selectExpr(
        "count(*) as n", "count(*) - count(numtrd) as nulls", "min(prc) as p", "min(date) as d"
    ).collect()[0]
    want = snap.query(
        "select count(*) as n, count(*) - count(numtrd) as nulls, "
        "min(prc)::varchar as p, min(date) as d from crsp.dsf"
    )
    assert got["n"] == want["n"][0] == snap.dataset("crsp.dsf").row_count
    assert got["nulls"] == want["nulls"][0] > 0
    assert str(got["p"]) == want["p"][0]
    assert got["d"] == want["d"][0].date()


def check_research(spark: Any, snap: Snapshot) -> None:
    """Monthly compounded returns and CCM book-to-market from Spark SQL equal DuckDB's."""
    for name in DATASETS:
        snap.to_spark(spark, name).createOrReplaceTempView(name.split(".")[1])
    monthly = spark.sql(monthly_sql("`", "dsf")).toPandas()
    keys = ["permno", "year", "month", "days"]
    assert_same(monthly, snap.query(monthly_sql()), keys, "mret")
    bm = spark.sql(bm_sql("`", "msf", "ccmxpf_lnkhist", "funda")).toPandas()
    assert_same(bm, snap.query(bm_sql()), ["year", "permno", "gvkey"], "bm")


def check_older(spark: Any, old: Snapshot, new: Snapshot) -> None:
    """Over ``old`` (years pruned to 2022-2023), count and sum equal old's, not new's."""
    sql = (
        "select count(*) as n, sum(cast(ret as double)) as s from crsp.dsf where year(date) >= 2022"
    )
    df = old.to_spark(spark, "crsp.dsf", columns=["ret"], years=range(2022, 2024))
    got = df.selectExpr("count(*) as n", "sum(cast(ret as double)) as s").collect()[0]
    want, newer = old.query(sql), new.query(sql)
    assert got["n"] == want["n"][0] != newer["n"][0]
    assert abs(got["s"] - want["s"][0]) <= 1e-12 * abs(want["s"][0])
