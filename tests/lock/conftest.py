"""Fixtures for the writer-lock tests: real child processes, a live stranger, a PID namespace.

The helpers (lock children, stale lock files, holder logs) are in ``tests/_helpers/locks.py``;
test modules import them from there. The "other host" of the heartbeat tests is a real process
in its own PID namespace (``unshare``), which wrdsvault must not judge by PID.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from _helpers.children import EventChild
from _helpers.locks import LOCK_CHILD, namespace_prefix, which
from _helpers.proc import child_env


@pytest.fixture
def lock_path(tmp_path: Path) -> Path:
    """The lock file of a fresh, empty vault folder."""
    root = tmp_path / "vault"
    root.mkdir()
    return root / ".lock"


@pytest.fixture
def spawn() -> Iterator[Callable[..., EventChild]]:
    """Start ``_lock_child.py MODE CONFIG`` (optionally under a prefix such as ``unshare``)."""
    children: list[EventChild] = []

    def start(
        mode: str,
        cfg: dict[str, Any],
        *,
        prefix: list[str] | None = None,
        crashpoint: str | None = None,
    ) -> EventChild:
        env = child_env(**({"WRDSVAULT_TEST_CRASHPOINT": crashpoint} if crashpoint else {}))
        argv = [*(prefix or []), sys.executable, str(LOCK_CHILD), mode, json.dumps(cfg)]
        child = EventChild(argv, env=env)
        children.append(child)
        return child

    yield start
    for child in children:
        child.close()


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    """A live process unrelated to any lock (its PID stands for a reused PID)."""
    proc = subprocess.Popen([which("sleep"), "600"])
    yield proc
    proc.kill()
    proc.wait()


@pytest.fixture(scope="session")
def other_host() -> list[str]:
    """An argv prefix that runs a child in its own PID namespace: to the lock, another host.

    Containers on one kernel share host name and boot id; only the PID namespace tells them apart,
    and a PID from another namespace proves nothing here, so such an owner is judged by heartbeat
    alone, exactly like one on another machine.
    """
    prefix = namespace_prefix()
    if prefix is None:
        pytest.skip("needs unshare(1) with PID namespaces (root or user namespaces)")
    return prefix
