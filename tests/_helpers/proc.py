"""The environment of a test and of the processes it starts; waiting on a real condition.

A test must not depend on the developer's shell: every ``WRDSVAULT_*`` variable (vault settings,
crash points) and every ``PG*`` variable (a PostgreSQL login) is removed, from the test process
by `strip_env` (the autouse ``clean_env`` fixture, and module-scoped fixtures that run before
it) and from a child's environment by `child_env`.

Tests never sleep to let something happen: they wait for the thing itself with `wait_for`,
which polls a condition until it holds or a deadline passes.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol, TypeVar

#: ``tests/``: the folder that holds ``_helpers`` (a child script puts it on ``sys.path``).
TESTS_DIR = Path(__file__).resolve().parents[1]
#: Prefixes of the variables no test inherits from the shell.
STRIPPED_PREFIXES = ("WRDSVAULT_", "PG")
#: How often `wait_for` looks again (short: conditions are cheap; no test depends on it).
POLL_S = 0.005

T = TypeVar("T")


class _DelEnv(Protocol):
    def delenv(self, name: str, raising: bool = ...) -> None: ...


def strip_env(monkeypatch: _DelEnv) -> None:
    """Remove every ``WRDSVAULT_*`` and ``PG*`` variable (undone with ``monkeypatch``)."""
    for key in list(os.environ):
        if key.startswith(STRIPPED_PREFIXES):
            monkeypatch.delenv(key, raising=False)


def child_env(**extra: str) -> dict[str, str]:
    """This process's environment without ``WRDSVAULT_*`` / ``PG*`` variables, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(STRIPPED_PREFIXES)}
    env.update(extra)
    return env


def killed_at(point: str, script: Path, *args: str, timeout_s: float = 120.0) -> None:
    """Run the child ``script`` with the crash point ``point`` armed (``name`` or ``name:n``);
    it must die there, by SIGKILL."""
    from wrdsvault._storage.crashpoints import ENV_VAR

    proc = subprocess.run(
        [sys.executable, str(script), *args],
        env=child_env(**{ENV_VAR: point}),
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    assert proc.returncode == -9, proc.stderr[-2000:]


class WaitTimeout(AssertionError):
    """A condition `wait_for` waited for did not come true before its deadline."""


def wait_for(
    condition: Callable[[], T | None],
    what: str,
    *,
    timeout_s: float = 30.0,
    poll_s: float = POLL_S,
) -> T:
    """Call ``condition`` until it returns something truthy; return that. Raise `WaitTimeout`
    naming ``what`` once ``timeout_s`` has passed (generous: a deadline, never a measurement)."""
    deadline = time.monotonic() + timeout_s
    while True:
        got = condition()
        if got:
            return got
        if time.monotonic() >= deadline:
            msg = f"waited {timeout_s:g} s for {what}; it never happened"
            raise WaitTimeout(msg)
        time.sleep(poll_s)  # the poll interval of a condition, not a synchronisation
