"""How `WrdsSource` logs in: psycopg2 alone, by the ``wrds`` client's rules, importing neither
``wrds``, SQLAlchemy nor pandas unless a ``wrds.Connection`` is asked for.

The conventions are checked against the installed client itself (its constants and what its
``Connection`` resolves from the same arguments and environment); the import checks run whole
sync processes (a script and the CLI) against a real PostgreSQL replica.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, Final

import pytest

from wrdsvault.datasets import BUILTIN_SPECS
from wrdsvault.errors import SourceAuthError
from wrdsvault.sources._wrds_login import LoginParams
from wrdsvault.sources.wrds import (
    CONNECT_TIMEOUT_S,
    WRDS_CONNECT_ARGS,
    WRDS_POSTGRES_DB,
    WRDS_POSTGRES_HOST,
    WRDS_POSTGRES_PORT,
    WrdsSource,
)
from wrdsvault.testing import REPLICA_PASSWORD, REPLICA_USER, WrdsReplica

MakeReplica = Callable[..., AbstractContextManager[WrdsReplica]]
#: What a sync through WrdsSource must never load: the client and its database stack, and
#: (its built-in rules proven from the stream) neither pandas nor DuckDB.
NEVER_ON_SYNC: Final = ("wrds", "sqlalchemy", "pandas", "duckdb")
#: What a sync that finds nothing changed has no use for: Arrow and NumPy (it stops at the
#: table comment, `WrdsSource.change_marker`), the content digest (only written files need it).
NEVER_ON_UNCHANGED: Final = (*NEVER_ON_SYNC, "pyarrow", "numpy", "wrdsvault._digest")


def test_wrds_constants_match_the_installed_client() -> None:
    """Host, port, database and default connect args are the wrds client's (drift is caught)."""
    from wrds import sql as wrds_sql

    assert WRDS_POSTGRES_HOST == wrds_sql.WRDS_POSTGRES_HOST
    assert WRDS_POSTGRES_PORT == wrds_sql.WRDS_POSTGRES_PORT
    assert WRDS_POSTGRES_DB == wrds_sql.WRDS_POSTGRES_DB
    ours, theirs = dict(WRDS_CONNECT_ARGS), dict(wrds_sql.WRDS_CONNECT_ARGS)
    # The application name has the client's format but names wrdsvault (not the wrds package).
    assert ours.pop("application_name").split(" python ")[0] == sys.platform
    assert theirs.pop("application_name").split(" python ")[0] == sys.platform
    assert ours == theirs == {"sslmode": "require"}


@pytest.mark.parametrize(
    ("kwargs", "env"),
    [
        ({}, {}),
        ({}, {"PGHOST": "pg.example.org", "PGPORT": "1234", "PGDATABASE": "other"}),
        ({"wrds_hostname": "h", "wrds_port": "5433", "wrds_dbname": "d"}, {"PGHOST": "x"}),
        ({"wrds_username": "jdoe", "wrds_password": "S3cret!"}, {}),
        ({"wrds_connect_args": {"host": "/run/pg"}}, {}),
        ({"wrds_connect_args": {"sslmode": "verify-full", "connect_timeout": 5}}, {}),
    ],
    ids=["defaults", "pg-env", "explicit", "credentials", "socket", "own-args"],
)
def test_login_resolves_what_the_wrds_client_resolves(
    kwargs: dict[str, Any], env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Host, port, database, user, password and connect args as wrds.Connection takes them."""
    import wrds

    for name in ("PGHOST", "PGPORT", "PGDATABASE"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    params = LoginParams.resolve(kwargs)
    client = wrds.Connection(autoconnect=False, **kwargs)
    assert params.host == client._hostname
    assert params.port == int(client._port)
    assert params.dbname == client._dbname
    assert (params.user or "") == client._username
    if "wrds_password" in kwargs and not client._password:
        # Older clients (wrds 3.1.6) ignore wrds_password and only prompt; wrdsvault takes it,
        # as newer clients do.
        assert params.password == kwargs["wrds_password"]
    else:
        assert (params.password or "") == client._password
    expected = dict(client._connect_args)
    if "wrds_connect_args" not in kwargs:  # ours name wrdsvault, in the client's format
        expected["application_name"] = WRDS_CONNECT_ARGS["application_name"]
    expected.setdefault("connect_timeout", CONNECT_TIMEOUT_S)
    assert dict(params.connect_args) == expected
    libpq = params.libpq_kwargs()
    # Credentials not given are left to libpq (PGUSER, PGPASSWORD, ~/.pgpass), as the client does.
    assert ("user" in libpq, "password" in libpq) == ("wrds_username" in kwargs,) * 2
    assert "S3cret!" not in repr(params)


@pytest.fixture(scope="module")
def replica(make_replica: MakeReplica) -> Iterator[WrdsReplica]:
    """A replica of crsp.msf and the monthly factors (quick to sync)."""
    with make_replica(datasets=["crsp.msf", "ff.factors_monthly"]) as rep:
        yield rep


def sessions(rep: WrdsReplica, user: str) -> list[int]:
    """The backend pids of ``user``'s client sessions on the replica's database."""
    rows = rep.execute(
        "SELECT pid FROM pg_stat_activity WHERE datname = %s AND usename = %s "
        "AND backend_type = 'client backend' ORDER BY pid",
        [rep.dbname, user],
    )
    return [pid for (pid,) in rows]


@pytest.mark.postgres
def test_libpq_environment_alone_logs_in(
    replica: WrdsReplica, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PGHOST, PGUSER and PGPASSWORD are enough (no arguments), as with the wrds client."""
    monkeypatch.setenv("PGHOST", str(replica.server.socket_dir))
    monkeypatch.setenv("PGUSER", REPLICA_USER)
    monkeypatch.setenv("PGPASSWORD", REPLICA_PASSWORD)
    source = WrdsSource(wrds_port=replica.server.port, wrds_dbname=replica.dbname)
    try:
        info = source.describe(BUILTIN_SPECS["crsp.msf"])
        assert "permno" in info.schema.names
        assert len(sessions(replica, REPLICA_USER)) == 1
        monkeypatch.setenv("PGPASSWORD", "Wrong-Secret-2")
        source.close()
        with pytest.raises(SourceAuthError, match=r"\.pgpass") as caught:
            source.login()
        assert "Wrong-Secret-2" not in str(caught.value)
    finally:
        source.close()
    assert sessions(replica, REPLICA_USER) == []


@pytest.mark.postgres
def test_db_is_a_wrds_connection_on_the_sources_own_login(replica: WrdsReplica) -> None:
    """source.db runs raw_sql on the sync's connection (no second login), also after a drop."""
    source = replica.source(user=REPLICA_USER, retry_backoff_s=0.01)
    try:
        source.describe(BUILTIN_SPECS["crsp.msf"])
        [pid] = sessions(replica, REPLICA_USER)
        db = source.db
        assert db.raw_sql("SELECT pg_backend_pid() AS pid")["pid"].tolist() == [pid]
        assert sessions(replica, REPLICA_USER) == [pid]  # one login serves both
        replica.execute("SELECT pg_terminate_backend(%s)", [pid])
        source.describe(BUILTIN_SPECS["ff.factors_monthly"])  # reconnects
        [new] = sessions(replica, REPLICA_USER)
        assert new != pid
        assert source.db is db
        assert db.raw_sql("SELECT pg_backend_pid() AS pid")["pid"].tolist() == [new]
        db.close()  # closes the source's connection too: it logs in again when used
        assert "permno" in source.describe(BUILTIN_SPECS["crsp.msf"]).schema.names
        assert source.db is not db
        assert len(sessions(replica, REPLICA_USER)) == 1
    finally:
        source.close()
    assert sessions(replica, REPLICA_USER) == []


@pytest.mark.postgres
def test_threads_that_find_no_connection_log_in_once(replica: WrdsReplica) -> None:
    """Streams starting together on a fresh or dropped connection share one new login."""
    source = replica.source(user=REPLICA_USER)
    barrier = threading.Barrier(6)

    def start() -> None:
        barrier.wait()
        source.login()

    dropped: list[int] = []  # a terminated backend may linger in pg_stat_activity a moment
    try:
        for _ in range(2):  # a fresh source, then one whose connection was dropped
            threads = [threading.Thread(target=start) for _ in range(6)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            [pid] = [p for p in sessions(replica, REPLICA_USER) if p not in dropped]
            dropped.append(pid)
            replica.execute("SELECT pg_terminate_backend(%s)", [pid])
            with contextlib.suppress(Exception):  # psycopg2 learns of the drop on use
                source._raw().cursor().execute("SELECT 1")
    finally:
        source.close()


def _modules_after(code: str, env: dict[str, str]) -> tuple[list[str], list[str]]:
    """Run ``code`` in a fresh interpreter; return (its printed lines, its sys.modules)."""
    script = textwrap.dedent(code) + "\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))\n"
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        env=env,
        stdin=subprocess.DEVNULL,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    lines = done.stdout.splitlines()
    return lines[:-1], json.loads(lines[-1])


def _offending(loaded: list[str], names: tuple[str, ...]) -> list[str]:
    return sorted(m for m in loaded if any(m == n or m.startswith(n + ".") for n in names))


@pytest.mark.postgres
def test_sync_processes_import_neither_wrds_sqlalchemy_pandas_nor_duckdb(
    replica: WrdsReplica, tmp_path: Path
) -> None:
    """A first sync, an unchanged one, the CLI's sync and sync --all load no wrds client stack,
    pandas or DuckDB; when nothing changed, not the Parquet writer either. A first sync's
    process allocates Arrow's memory from jemalloc (`wrdsvault._memory.prefer_jemalloc`)."""
    vault = tmp_path / "vault"
    kwargs = replica.connect_kwargs(user=REPLICA_USER)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    script = f"""
        from wrdsvault import Warehouse
        from wrdsvault.sources import WrdsSource
        with Warehouse({str(vault)!r}, source=WrdsSource(**{kwargs!r})) as wh:
            print(wh.sync(["crsp.msf", "ff.factors_monthly"])["crsp.msf"].status)
        import sys
        arrow = sys.modules.get("pyarrow")  # loaded by the sync, if at all
        print(arrow.default_memory_pool().backend_name if arrow else "no pyarrow")
    """
    for expected in ("added", "unchanged"):
        printed, loaded = _modules_after(script, env)
        assert printed[0] == expected
        if expected == "unchanged":
            assert printed[1] == "no pyarrow"
        elif sys.platform == "linux":
            assert printed[1] == "jemalloc"
        assert "psycopg2" in loaded  # it did log in
        never = NEVER_ON_UNCHANGED if expected == "unchanged" else NEVER_ON_SYNC
        assert _offending(loaded, never) == []
    cli_env = {**env, "PGHOST": str(replica.server.socket_dir), "PGPASSWORD": REPLICA_PASSWORD}
    for args in (["crsp.msf"], ["--all"]):
        argv = ["sync", *args, "--vault", str(vault), "--source", "wrds", "--json"]
        argv += ["--wrds-username", REPLICA_USER, "--wrds-port", str(replica.server.port)]
        argv += ["--wrds-dbname", replica.dbname, "--wrds-connect-timeout", "30"]
        printed, loaded = _modules_after(
            f"""
            import contextlib, io
            from wrdsvault.cli import main
            out = io.StringIO()
            with contextlib.redirect_stdout(out):
                code = main({argv!r})
            print(code)
            """,
            cli_env,
        )
        assert printed == ["3"], args  # EXIT_UNCHANGED: nothing new, nothing written
        assert _offending(loaded, NEVER_ON_UNCHANGED) == [], args
