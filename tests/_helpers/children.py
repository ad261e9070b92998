"""Child processes that talk in JSON lines: one event per line out, one command per line in.

The lock tests' ``_lock_child.py`` and the lease tests' ``_reader_child.py`` are such children.
`EventChild` reads their events on a thread (so a test waits for an event with a deadline, never
blocks on a pipe forever), sends them commands, and kills them with their whole process group:
each runs in a session of its own, so a signal also reaches what runs under a prefix such as
``unshare``.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import subprocess
import threading
from typing import Any

import pytest

from _helpers.proc import child_env


class EventChild:
    """A child process: JSON events from its stdout, commands to its stdin."""

    def __init__(self, argv: list[str], *, env: dict[str, str] | None = None) -> None:
        self.events: queue.Queue[dict[str, Any]] = queue.Queue()
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=child_env() if env is None else env,
            start_new_session=True,  # its own process group: SIGSTOP reaches unshare's child too
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.events.put(json.loads(line))
        self.events.put({"event": "eof"})

    def expect(self, *events: str, timeout_s: float = 60.0) -> dict[str, Any]:
        """The next event, which must be one of ``events`` and come within ``timeout_s``."""
        try:
            got = self.events.get(timeout=timeout_s)
        except queue.Empty:
            pytest.fail(f"child {self.proc.pid} sent nothing within {timeout_s} s")
        if got["event"] not in events:
            err = self.proc.stderr.read() if got["event"] == "eof" and self.proc.stderr else ""
            pytest.fail(f"expected {events}, child sent {got}; stderr: {err}")
        return got

    def send(self, command: str) -> None:
        """Write one command line to the child's stdin."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()

    def signal_group(self, sig: int) -> None:
        """Send ``sig`` to the child's whole process group."""
        os.killpg(self.proc.pid, sig)

    def wait(self, timeout_s: float = 30.0) -> int:
        """The child's exit status (it must exit within ``timeout_s``)."""
        return self.proc.wait(timeout=timeout_s)

    def sigkill(self) -> None:
        """SIGKILL the child's process group and reap the child (its pid is then provably gone)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)

    def close(self) -> None:
        """Kill the child if it still runs, and close its pipes."""
        if self.proc.poll() is None:
            self.sigkill()
        for stream in (self.proc.stdin, self.proc.stderr):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        self._reader.join(timeout=5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
