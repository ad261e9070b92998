"""The command line in-process: run ``wrdsvault.cli.main`` and read what it printed."""

from __future__ import annotations

import io

import pytest

from wrdsvault.cli import main


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """``wrdsvault ARGV`` in this process: (exit status, stdout, stderr)."""
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


class Tty(io.StringIO):
    """A stream that says it is a terminal (a progress display, or stdin with typed answers)."""

    def isatty(self) -> bool:
        return True
