"""Fixtures for the reader-lease tests: real reader processes, and a small synced vault."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from wrdsvault import Warehouse
from wrdsvault.sources import SampleSource

CHILD: Path = Path(__file__).with_name("_reader_child.py")


class Reader:
    """A ``_reader_child.py`` process: JSON events from its stdout, commands to its stdin."""

    def __init__(self, argv: list[str]) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("WRDSVAULT_")}
        self.events: queue.Queue[dict[str, Any]] = queue.Queue()
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.events.put(json.loads(line))
        self.events.put({"event": "eof"})

    def expect(self, event: str, timeout_s: float = 60.0) -> dict[str, Any]:
        """The next event, which must be ``event``."""
        try:
            got = self.events.get(timeout=timeout_s)
        except queue.Empty:
            pytest.fail(f"reader {self.proc.pid} sent nothing within {timeout_s} s")
        if got["event"] != event:
            err = self.proc.stderr.read() if got["event"] == "eof" and self.proc.stderr else ""
            pytest.fail(f"expected {event}, reader sent {got}; stderr: {err}")
        return got

    def send(self, command: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()

    def sigkill(self) -> None:
        """SIGKILL the reader and reap it (its pid is then provably gone)."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.sigkill()
        for stream in (self.proc.stdin, self.proc.stderr):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        self._reader.join(timeout=5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


@pytest.fixture
def reader() -> Iterator[Callable[..., Reader]]:
    """Start ``_reader_child.py MODE CONFIG``; every reader is killed at teardown."""
    started: list[Reader] = []

    def start(mode: str, cfg: dict[str, Any], *, prefix: list[str] | None = None) -> Reader:
        child = Reader([*(prefix or []), sys.executable, str(CHILD), mode, json.dumps(cfg)])
        started.append(child)
        return child

    yield start
    for child in started:
        child.close()


@pytest.fixture
def synced(tmp_path: Path) -> Iterator[tuple[Warehouse, list[str]]]:
    """A vault with two committed snapshots (two vintages of crsp.msf), oldest id first."""
    wh = Warehouse(tmp_path / "vault", source=SampleSource(years=range(2020, 2022), vintage=1))
    wh.sync("crsp.msf")
    wh.source = SampleSource(years=range(2020, 2022), vintage=2)
    wh.sync("crsp.msf")
    ids = [s.snapshot_id for s in wh.snapshots()]
    assert len(ids) == 2
    yield wh, ids
    wh.close()
