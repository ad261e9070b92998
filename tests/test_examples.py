"""Every script in examples/ runs to completion on a fresh vault."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = sorted((Path(__file__).resolve().parents[1] / "examples").glob("*.py"))


@pytest.mark.parametrize("script", EXAMPLES, ids=lambda p: p.name)
def test_example_runs(script: Path, tmp_path: Path) -> None:
    """The example exits 0 and prints something."""
    proc = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "vault")],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip()


def test_there_are_examples() -> None:
    """The examples folder is not empty (a moved folder would silently skip the test above)."""
    assert len(EXAMPLES) >= 2
