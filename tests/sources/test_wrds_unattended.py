"""An unattended ``wrdsvault sync --all --source wrds``: ``~/.pgpass`` only, never a prompt.

Each run is the real CLI in a subprocess as cron starts it: stdin closed (``/dev/null``), no TTY,
``HOME`` a temporary folder, no ``PGPASSWORD``, against the real PostgreSQL replica. A prompt on
stdin would read EOF or block; the timeout would catch a hang.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import pytest

from wrdsvault.testing import REPLICA_PASSWORD, REPLICA_USER, WrdsReplica

pytestmark = pytest.mark.postgres

MakeReplica = Callable[..., AbstractContextManager[WrdsReplica]]


@pytest.fixture(scope="module")
def replica(make_replica: MakeReplica) -> Iterator[WrdsReplica]:
    """A replica holding the Fama-French factors (small and quick to sync)."""
    with make_replica(datasets=["ff.factors_monthly"]) as rep:
        yield rep


def unattended(
    rep: WrdsReplica, home: Path, *args: str, timeout_s: float = 120
) -> subprocess.CompletedProcess[str]:
    """``wrdsvault ARGS --source wrds ...`` with HOME=home, stdin closed, no password in the env."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    # The replica listens on a Unix socket: PGHOST names its folder (libpq uses no SSL there).
    env.update(HOME=str(home), PGHOST=str(rep.server.socket_dir))
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "wrdsvault",
            *args,
            "--source",
            "wrds",
            "--wrds-username",
            REPLICA_USER,
            "--wrds-port",
            str(rep.server.port),
            "--wrds-dbname",
            rep.dbname,
            "--json",
        ],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout_s,
        check=False,
        start_new_session=True,  # no controlling terminal either
    )


def write_pgpass(home: Path, password: str) -> None:
    pgpass = home / ".pgpass"
    pgpass.write_text(f"*:*:*:{REPLICA_USER}:{password}\n")
    pgpass.chmod(0o600)  # libpq ignores a .pgpass others can read


def test_unattended_sync_authenticates_with_pgpass_only(
    replica: WrdsReplica, tmp_path: Path
) -> None:
    """With ~/.pgpass, sync and sync --all run with stdin closed and exit 0, then 3."""
    home = tmp_path / "home"
    home.mkdir()
    write_pgpass(home, REPLICA_PASSWORD)
    vault = str(tmp_path / "vault")
    first = unattended(replica, home, "sync", "ff.factors_monthly", "--vault", vault)
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout)["committed"] is True
    again = unattended(replica, home, "sync", "--all", "--vault", vault)
    assert again.returncode == 3, again.stderr
    assert [d["status"] for d in json.loads(again.stdout)["datasets"]] == ["unchanged"]


@pytest.mark.parametrize("pgpass", ["missing", "wrong password"])
def test_without_usable_credentials_it_fails_fast_with_source_auth_error(
    replica: WrdsReplica, tmp_path: Path, pgpass: str
) -> None:
    """No ~/.pgpass (or a wrong one), no TTY: SourceAuthError and exit 1, nothing read on stdin."""
    home = tmp_path / "home"
    home.mkdir()
    if pgpass == "wrong password":
        write_pgpass(home, "not-the-password")
    vault = tmp_path / "vault"
    log = tmp_path / "sync.jsonl"
    proc = unattended(
        replica,
        home,
        "sync",
        "ff.factors_monthly",
        "--vault",
        str(vault),
        "--log",
        str(log),
        timeout_s=60,
    )
    assert proc.returncode == 1, proc.stderr
    assert json.loads(proc.stdout)["error"] == "SourceAuthError"
    assert ".pgpass" in proc.stderr and "Enter your" not in proc.stdout + proc.stderr
    assert "not-the-password" not in proc.stdout + proc.stderr
    (record,) = [json.loads(line) for line in log.read_text().splitlines()]
    assert record["outcome"] == "failed" and record["error"]["type"] == "SourceAuthError"
    assert not list((vault / "snapshots").glob("*.json"))


def test_a_server_that_never_answers_fails_after_the_connect_timeout(tmp_path: Path) -> None:
    """A server that accepts but never answers: SourceUnavailableError after the timeout, exit 1."""
    home = tmp_path / "home"
    home.mkdir()
    write_pgpass(home, REPLICA_PASSWORD)
    with socket.create_server(("127.0.0.1", 0)) as silent:  # the kernel completes the handshake
        port = silent.getsockname()[1]
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env["HOME"] = str(home)
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "wrdsvault",
                "sync",
                "ff.factors_monthly",
                "--vault",
                str(tmp_path / "vault"),
                "--source",
                "wrds",
                "--wrds-hostname",
                "127.0.0.1",
                "--wrds-port",
                str(port),
                "--wrds-username",
                REPLICA_USER,
                "--wrds-connect-timeout",
                "2",
                "--json",
            ],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            env=env,
            timeout=60,  # without a connect timeout libpq would wait for ever
            check=False,
            start_new_session=True,
        )
    assert proc.returncode == 1, proc.stderr
    assert json.loads(proc.stdout)["error"] == "SourceUnavailableError"
    assert "127.0.0.1" in proc.stderr
