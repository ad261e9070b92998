"""Fixtures for the WRDS source tests: one PostgreSQL server per session, one database per replica.

The server comes from the ``pgserver`` wheel (the test extra) and is started once for the whole
session; every replica is a database of its own on it, dropped in ``finally`` when its test (or
module) is done.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

import pytest

from wrdsvault.sources import SampleSource
from wrdsvault.testing import ReplicaServer, WrdsReplica

#: Small enough to load in about a second, big enough for every table to have rows in each year.
REPLICA_SAMPLE: dict[str, Any] = {"seed": 0, "years": range(2021, 2024), "n_securities": 40}


@pytest.fixture(scope="session")
def replica_server() -> Iterator[ReplicaServer]:
    """One real PostgreSQL server for the whole session (stopped and deleted at the end).

    Its folder is not under pytest's tmp_path: run as root, pgserver runs PostgreSQL as another
    user, and any pytest session starting meanwhile resets /tmp/pytest-of-root to 0700.
    """
    server = ReplicaServer.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def make_replica(
    replica_server: ReplicaServer,
) -> Callable[..., AbstractContextManager[WrdsReplica]]:
    """Build a replica database on the session server; dropped when the ``with`` block ends."""

    @contextmanager
    def make(
        *, datasets: list[str] | None = None, profile: str = "2025", **sample: Any
    ) -> Iterator[WrdsReplica]:
        source = SampleSource(**{**REPLICA_SAMPLE, **sample}, profile=profile)
        replica = WrdsReplica.start(server=replica_server, source=source, datasets=datasets)
        try:
            yield replica
        finally:
            replica.close()

    return make


@pytest.fixture
def replica_sample() -> dict[str, Any]:
    """The SampleSource arguments replicas are built from (seed, years, size)."""
    return dict(REPLICA_SAMPLE)


@pytest.fixture
def vault_dir(tmp_path: Path) -> Path:
    """Where a test's vault goes."""
    return tmp_path / "vault"
