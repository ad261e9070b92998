"""Short scripts and CLI queries as whole processes: what a researcher waits for, start to end.

Every benchmark starts a fresh interpreter per round (like ``hyperfine``), runs one variant and
exits; the time is the whole process (interpreter start, imports, opening the vault, the query,
printing, exit). Each child reports its own peak RSS (``VmHWM``; ``ru_maxrss`` would carry over
the forking pytest's). All variants count the rows of ``crsp.msf`` in the demo vault (the
datasets and years of ``wrdsvault demo``; 2,000 securities):

* ``test_oneshot_bare_duckdb_baseline[rows]``: ``import duckdb; duckdb.sql("select count(*) from
  read_parquet([...])").fetchall()`` over the same files (``snap.files("crsp.msf")``): the
  baseline of the CLI, which prints DuckDB's text of each value (no pyarrow, no pandas);
* ``test_oneshot_bare_duckdb_baseline[arrow]`` and ``[pandas]``: the same script fetching
  ``.to_arrow_table()`` / ``.df()``, the baselines of ``Warehouse.arrow`` and ``.query`` (the
  result type decides the imports: pyarrow ~0.1-0.4 s, pandas ~0.3-0.8 s on 2 shared cores);
* ``test_oneshot_warehouse_arrow``: ``Warehouse(root).arrow(sql)`` (a pyarrow Table);
* ``test_oneshot_warehouse_query``: ``Warehouse(root).query(sql)`` (a pandas DataFrame);
* ``test_oneshot_cli_query``: ``wrdsvault query --vault root "select count(*) from crsp.msf"``.

A second group times ``import wrdsvault`` against ``import duckdb``.

Target (``extra_info``, never asserted): each wrdsvault variant <= 1.5x the median of the bare
script (``ratio_to_bare``) and of the bare script with the same result type
(``ratio_to_same_result``), measured earlier in the same run; peak RSS next to it.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import pytest

from wrdsvault import Warehouse
from wrdsvault.demo import DEMO_DATASETS, DEMO_YEARS
from wrdsvault.sources import SampleSource

SQL: Final = "select count(*) as n from crsp.msf"
TARGET_RATIO: Final = 1.5
ROUNDS: Final = 10
DEMO_SECURITIES: Final = 2_000
SMOKE_SECURITIES: Final = 100

#: Appended to every child: print the peak RSS (kB) on stderr as the last line.
_PEAK: Final = """
def _peak():
    import sys
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                sys.stderr.write(f"\\nVmHWM {line.split()[1]}\\n")
import atexit
atexit.register(_peak)
"""

#: Medians of the variants already run in this session, by variant (for the ratios).
_MEDIANS: dict[str, float] = {}
#: Variant -> (the bare script, the bare script returning the same result type).
_BASELINES: Final = {
    "cli": ("bare", "bare"),
    "arrow": ("bare", "bare_arrow"),
    "query": ("bare", "bare_pandas"),
    "import_wrdsvault": ("import_duckdb", "import_duckdb"),
}


@dataclass(frozen=True)
class DemoVault:
    """The vault, the files of crsp.msf and its row count."""

    root: Path
    msf_files: tuple[str, ...]
    msf_rows: int


@pytest.fixture(scope="module")
def demo_vault(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> DemoVault:
    """The demo's datasets and years (vintage 1) in a new vault; small when not timed."""
    smoke = bool(request.config.getoption("benchmark_disable", default=False))
    n = SMOKE_SECURITIES if smoke else DEMO_SECURITIES
    root = tmp_path_factory.mktemp("oneshot") / "vault"
    source = SampleSource(seed=0, years=DEMO_YEARS, vintage=1, n_securities=n)
    with Warehouse(root, source=source) as wh:
        wh.sync(list(DEMO_DATASETS))
        with wh.snapshot() as snap:
            files = tuple(str(p) for p in snap.files("crsp.msf"))
            rows = snap.dataset("crsp.msf").row_count
    return DemoVault(root, files, rows)


def _run(code: str, *args: str) -> tuple[str, int]:
    """Run ``python -c code args`` to the end: (its stdout, its peak RSS in kB)."""
    done = subprocess.run(
        [sys.executable, "-c", _PEAK + code, *args],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    peak = int(done.stderr.rsplit("VmHWM ", 1)[1].split()[0])
    return done.stdout, peak


def _bench(benchmark: Any, name: str, code: str, *args: str, expect: str | None) -> str:
    """Time ``code`` as whole processes; record peak RSS, and the ratio to the baseline."""
    peaks: list[int] = []

    def once() -> str:
        out, peak = _run(code, *args)
        peaks.append(peak)
        return out

    out = benchmark.pedantic(once, rounds=ROUNDS, warmup_rounds=1, iterations=1)
    if expect is not None:
        assert expect in out, out
    info = benchmark.extra_info
    info["peak_rss_mb"] = round(statistics.median(peaks) / 1024, 1)
    if benchmark.stats is None:  # --benchmark-disable: nothing was timed
        return str(out)
    median = benchmark.stats.stats.median
    _MEDIANS[name] = median
    info["median_s"] = round(median, 4)
    bare, same = _BASELINES.get(name, (None, None))
    if bare is not None and _MEDIANS.get(bare):
        info["ratio_to_bare"] = round(median / _MEDIANS[bare], 3)
        info["target_ratio"] = TARGET_RATIO
        info["within_target"] = median / _MEDIANS[bare] <= TARGET_RATIO
    if same is not None and _MEDIANS.get(same):
        info["ratio_to_same_result"] = round(median / _MEDIANS[same], 3)
    return str(out)


def _bare(fetch: str) -> str:
    """A bare DuckDB script counting the files given as JSON in argv[1], fetched by ``fetch``."""
    return (
        "import json, sys, duckdb\n"
        "files = json.loads(sys.argv[1])\n"
        "rel = duckdb.sql('select count(*) as n from read_parquet($files)', "
        "params={'files': files})\n"
        f"result = rel.{fetch}\n"
        "print(result)\n"
    )


@pytest.mark.benchmark(group="oneshot-count-msf")
@pytest.mark.parametrize(
    ("variant", "fetch"),
    [("bare", "fetchall()[0][0]"), ("bare_arrow", "to_arrow_table()"), ("bare_pandas", "df()")],
    ids=["rows", "arrow", "pandas"],
)
def test_oneshot_bare_duckdb_baseline(
    benchmark: Any, demo_vault: DemoVault, variant: str, fetch: str
) -> None:
    """The baselines: a bare DuckDB script counting the same files (rows, Arrow, pandas)."""
    benchmark.extra_info["files"] = len(demo_vault.msf_files)
    benchmark.extra_info["rows"] = demo_vault.msf_rows
    out = _bench(benchmark, variant, _bare(fetch), json.dumps(demo_vault.msf_files), expect=None)
    assert str(demo_vault.msf_rows) in out.replace(",", ""), out


@pytest.mark.benchmark(group="oneshot-count-msf")
def test_oneshot_warehouse_query(benchmark: Any, demo_vault: DemoVault) -> None:
    """``Warehouse(root).query(sql)``: opens the latest snapshot, returns pandas."""
    code = (
        "import sys, wrdsvault\n"
        "print(wrdsvault.Warehouse(sys.argv[1], create=False).query(sys.argv[2])['n'][0])\n"
    )
    _bench(benchmark, "query", code, str(demo_vault.root), SQL, expect=str(demo_vault.msf_rows))


@pytest.mark.benchmark(group="oneshot-count-msf")
def test_oneshot_warehouse_arrow(benchmark: Any, demo_vault: DemoVault) -> None:
    """``Warehouse(root).arrow(sql)``: the same, returning a pyarrow Table (no pandas)."""
    code = (
        "import sys, wrdsvault\n"
        "print(wrdsvault.Warehouse(sys.argv[1], create=False).arrow(sys.argv[2])['n'][0])\n"
    )
    _bench(benchmark, "arrow", code, str(demo_vault.root), SQL, expect=str(demo_vault.msf_rows))


@pytest.mark.benchmark(group="oneshot-count-msf")
def test_oneshot_cli_query(benchmark: Any, demo_vault: DemoVault) -> None:
    """``wrdsvault query --vault root sql``: the console script's code, text output."""
    code = "import sys\nfrom wrdsvault.cli import main\nsys.exit(main(sys.argv[1:]))\n"
    _bench(
        benchmark,
        "cli",
        code,
        "query",
        "--vault",
        str(demo_vault.root),
        SQL,
        expect=f"{demo_vault.msf_rows}",
    )


@pytest.mark.benchmark(group="oneshot-import")
def test_oneshot_import_duckdb_baseline(benchmark: Any) -> None:
    """The baseline of the import group: ``import duckdb``."""
    _bench(benchmark, "import_duckdb", "import duckdb\n", expect=None)


@pytest.mark.benchmark(group="oneshot-import")
def test_oneshot_import_wrdsvault(benchmark: Any) -> None:
    """``import wrdsvault`` (names resolve on first use; no engine is loaded)."""
    _bench(benchmark, "import_wrdsvault", "import wrdsvault\n", expect=None)
