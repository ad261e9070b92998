"""What a read loads: ``import wrdsvault``, a snapshot query to Arrow and the CLI's ``query``.

Each case runs in a fresh interpreter and lists ``sys.modules`` at the end. The lists below name
what must *not* be there (not what may be), so a module added later that imports an optional
engine, the WRDS client or the write path at its top is caught whatever it is called.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Final

import pytest

import wrdsvault
from wrdsvault.sources import SampleSource

#: Packages a read never needs: the WRDS client and its database stack, process tools, pandas
#: (only when a DataFrame is asked for), the Parquet writer, and every optional extra or test-only
#: package (an optional package is imported inside the function that needs it).
NEVER_ON_READ: Final = (
    "wrds",
    "sqlalchemy",
    "psycopg2",
    "psutil",
    "pandas",
    "pyarrow.parquet",
    "pyarrow.dataset",
    "polars",
    "sqlglot",
    "pyspark",
    "dask",
    "distributed",
    "ray",
    "pyiceberg",
    "fsspec",
    "s3fs",
    "boto3",
    "botocore",
    "moto",
    "adbc_driver_manager",
    "adbc_driver_postgresql",
    "matplotlib",
    "pgserver",
    "hypothesis",
    "pytest",
)

#: wrdsvault's write path and tools: syncing, staging, the writer lock, backup, gc, doctor,
#: validation, content digests (numpy, the Parquet reader) and the built-in sources.
WRITE_PATH: Final = (
    "wrdsvault._sync",
    "wrdsvault._storage.writer",
    "wrdsvault._storage.checkpoint",
    "wrdsvault._storage.lock",
    "wrdsvault._storage.lock_tools",
    "wrdsvault._backup",
    "wrdsvault._gc",
    "wrdsvault._doctor",
    "wrdsvault._digest",
    "wrdsvault.validation",
    "wrdsvault.demo",
    "wrdsvault.sources.sample",
    "wrdsvault.sources.wrds",
)

#: `import wrdsvault` alone loads no engine at all: names are resolved on first use.
NOT_ON_IMPORT: Final = ("duckdb", "pyarrow", "numpy")

#: The PostgreSQL-dialect translator: loaded for ``dialect="postgres"`` only (~10 ms), never by a
#: DuckDB-dialect query.
TRANSLATOR: Final = ("wrdsvault._pgsql",)

#: What commands other than a query return or keep: the reports of sync, status, verify, backup
#: and repair, and the Iceberg export records. A query needs none of them (~10 ms of classes).
NOT_FOR_A_QUERY: Final = ("wrdsvault.reports", "wrdsvault.exports")


def _loaded(code: str, *args: str) -> set[str]:
    """The modules a fresh interpreter has loaded after running ``code`` (argv: ``args``)."""
    script = textwrap.dedent(code) + "\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))\n"
    done = subprocess.run(
        [sys.executable, "-c", script, *args], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    return set(json.loads(done.stdout.splitlines()[-1]))


def _offending(loaded: set[str], names: tuple[str, ...]) -> list[str]:
    """The ``names`` (or their submodules) found in ``loaded``."""
    return sorted(m for m in loaded if any(m == n or m.startswith(n + ".") for n in names))


@pytest.fixture(scope="module")
def small_vault(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A vault holding crsp.msf and comp.funda from a tiny sample."""
    root = tmp_path_factory.mktemp("imports") / "vault"
    source = SampleSource(seed=0, years=range(2021, 2023), n_securities=20)
    with wrdsvault.Warehouse(root, source=source) as wh:
        wh.sync(["crsp.msf", "comp.funda"])
    return root


def test_import_wrdsvault_loads_no_engine_and_nothing_of_the_write_path() -> None:
    """`import wrdsvault` loads neither DuckDB, pyarrow, numpy nor anything a read never needs."""
    loaded = _loaded("import wrdsvault")
    assert _offending(loaded, NEVER_ON_READ + WRITE_PATH + NOT_ON_IMPORT) == []


def test_snapshot_query_to_arrow_loads_nothing_of_the_write_path(small_vault: Path) -> None:
    """Opening a snapshot and fetching Arrow (three ways) loads no write path, pandas, extra or
    the PostgreSQL translator."""
    loaded = _loaded(
        """
        import sys
        import wrdsvault
        wh = wrdsvault.Warehouse(sys.argv[1], create=False)
        with wh.snapshot("latest") as snap:
            assert snap.arrow("select count(*) as n from crsp.msf").num_rows == 1
            assert snap.sql("select gvkey from comp.funda limit 3").arrow().num_rows == 3
            assert len(list(snap.sql("select * from crsp.msf").batches(100))) > 0
            assert len(snap.files("crsp.msf")) == 2
        assert wh.arrow("select 1 as x").num_rows == 1
        wh.close()
        """,
        str(small_vault),
    )
    assert "duckdb" in loaded  # the query did run
    assert _offending(loaded, NEVER_ON_READ + WRITE_PATH + TRANSLATOR + NOT_FOR_A_QUERY) == []


#: ``status`` reports the writer lock, the disk and what gc could free: it may load those tools
#: (and psutil, for the disk), never pandas, an extra, the sync or the sources.
STATUS_MAY_LOAD: Final = (
    "psutil",
    "wrdsvault._storage.lock",
    "wrdsvault._storage.lock_tools",
    "wrdsvault._gc",
)


@pytest.mark.parametrize(
    "argv",
    [
        ["query", "select count(*) as n from crsp.msf"],
        ["query", "--json", "select permno from crsp.msf limit 2"],
        ["query", "--csv", "select * from comp.funda limit 2"],
        ["snapshots"],
        ["status"],
        ["--help"],
    ],
    ids=["query", "query-json", "query-csv", "snapshots", "status", "help"],
)
def test_cli_read_commands_load_no_pandas_and_nothing_of_the_write_path(
    small_vault: Path, argv: list[str]
) -> None:
    """The CLI's read commands print text without pandas, pyarrow, an extra or the write path."""
    loaded = _loaded(
        """
        import contextlib, io, sys
        from wrdsvault.cli import main
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            try:
                code = main(sys.argv[1:])
            except SystemExit as exc:  # --help
                code = exc.code
        assert code == 0, out.getvalue()
        assert out.getvalue()
        """,
        *(argv if argv == ["--help"] else [argv[0], "--vault", str(small_vault), *argv[1:]]),
    )
    forbidden = NEVER_ON_READ + WRITE_PATH + TRANSLATOR
    if argv[0] == "status":
        forbidden = tuple(n for n in forbidden if n not in STATUS_MAY_LOAD)
    if argv[0] == "query":
        forbidden += NOT_FOR_A_QUERY
    assert _offending(loaded, forbidden) == []
    # The CLI prints DuckDB's own text of each value: no Arrow, no numpy.
    assert _offending(loaded, ("pyarrow", "numpy")) == []
    if argv[0] == "--help":
        assert _offending(loaded, ("duckdb",)) == []  # no command, no engine


def test_lazy_names_resolve_to_their_defining_modules() -> None:
    """Every public name resolves on first use, to the same object its module defines."""
    import importlib

    for name in wrdsvault.__all__:
        value = getattr(wrdsvault, name)
        module = wrdsvault._LAZY.get(name)
        if module is not None:
            assert value is getattr(importlib.import_module(module), name)
    assert set(wrdsvault.__all__) <= set(dir(wrdsvault))
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        _ = wrdsvault.Nope  # type: ignore[attr-defined]
