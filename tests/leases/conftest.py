"""Fixtures for the reader-lease tests: real reader processes, and a small synced vault.

A reader is ``_reader_child.py`` run as an `EventChild` (``tests/_helpers/children.py``).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from _helpers.children import EventChild
from wrdsvault import Warehouse
from wrdsvault.sources import SampleSource

CHILD: Path = Path(__file__).with_name("_reader_child.py")


@pytest.fixture
def reader() -> Iterator[Callable[..., EventChild]]:
    """Start ``_reader_child.py MODE CONFIG``; every reader is killed at teardown."""
    started: list[EventChild] = []

    def start(mode: str, cfg: dict[str, Any], *, prefix: list[str] | None = None) -> EventChild:
        child = EventChild([*(prefix or []), sys.executable, str(CHILD), mode, json.dumps(cfg)])
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
