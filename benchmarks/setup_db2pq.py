"""Create ``benchmarks/.db2pq-venv``: db2pq in its own environment, for test_db2pq.py.

db2pq (a peer tool that mirrors WRDS tables into Parquet) is a benchmark baseline only: it
never enters wrdsvault's dependencies, so it lives in a separate virtual environment. Its
default DuckDB engine reads PostgreSQL through DuckDB's ``postgres_scanner`` extension, which
DuckDB would otherwise download at run time. The ``duckdb-extension-postgres-scanner`` wheel
ships that extension as a plain file,
``duckdb_extension_postgres_scanner/extensions/v<version>/postgres_scanner.duckdb_extension``,
and requires the exact DuckDB version it was built for. The wheel's own package does nothing on
import; this script makes the file loadable by ``INSTALL``-ing it from its path into the
extension folder of a private home directory (``.db2pq-venv/home``). test_db2pq.py runs db2pq
with ``HOME`` pointing there, so db2pq's own ``install_extension("postgres")`` finds it
installed and never goes to the network, and nothing is written to the user's ``~/.duckdb``.

Usage: ``python benchmarks/setup_db2pq.py`` (idempotent; ``--force`` rebuilds the venv).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path
from typing import Final

HERE: Final = Path(__file__).resolve().parent
VENV: Final = HERE / ".db2pq-venv"
HOME: Final = VENV / "home"
#: db2pq's version, and the DuckDB version for which a postgres_scanner wheel exists.
DB2PQ_VERSION: Final = "0.3.0"
DUCKDB_VERSION: Final = "1.5.5"
PACKAGES: Final = (
    f"db2pq=={DB2PQ_VERSION}",
    f"duckdb=={DUCKDB_VERSION}",
    f"duckdb-extension-postgres-scanner=={DUCKDB_VERSION}",
)

#: Run inside the venv: INSTALL the wheel's extension file, then load it by name as db2pq does.
_INSTALL_EXTENSION: Final = """
import pathlib, duckdb, duckdb_extension_postgres_scanner as ext
[path] = pathlib.Path(ext.__file__).parent.glob(
    f"extensions/v{duckdb.__version__}/postgres_scanner.duckdb_extension")
duckdb.connect().install_extension(str(path))
con = duckdb.connect()
con.install_extension("postgres")
con.load_extension("postgres")
print(con.sql("SELECT install_path FROM duckdb_extensions() "
              "WHERE extension_name = 'postgres_scanner'").fetchone()[0])
"""


def python() -> Path:
    """The venv's interpreter."""
    return VENV / "bin" / "python"


def child_env() -> dict[str, str]:
    """The environment db2pq runs in: the private HOME that holds the installed extension."""
    env = dict(os.environ)
    env["HOME"] = str(HOME)
    env.pop("PYTHONPATH", None)
    return env


def ready() -> bool:
    """Whether the venv exists and db2pq imports and loads the postgres extension offline."""
    if not python().exists():
        return False
    check = "import db2pq, duckdb; c = duckdb.connect(); c.load_extension('postgres')"
    done = subprocess.run(
        [str(python()), "-c", check], env=child_env(), capture_output=True, check=False
    )
    return done.returncode == 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--force", action="store_true", help="delete and rebuild the venv")
    args = parser.parse_args(argv)
    if args.force and VENV.exists():
        shutil.rmtree(VENV)
    if not python().exists():
        venv.EnvBuilder(with_pip=True).create(VENV)
    subprocess.run(
        [str(python()), "-m", "pip", "install", "-q", *PACKAGES], check=True, env=child_env()
    )
    HOME.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        [str(python()), "-c", _INSTALL_EXTENSION],
        env=child_env(),
        check=True,
        capture_output=True,
        text=True,
    )
    print(f"db2pq {DB2PQ_VERSION} ready in {VENV}; postgres_scanner: {done.stdout.strip()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
