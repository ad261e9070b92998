"""Fixtures of the engine tests: one two-vintage vault for the session, a small one to damage.

Each module starts its engine once (module-scoped fixture) and stops it after its last test.
The engines are the ``engines`` extra (``pip install -e '.[test,engines]'``); without them each
module skips.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import wrdsvault
from _helpers.engines import build_vault


@pytest.fixture(scope="session")
def vault_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two vintages of the sample datasets; ``v1`` tags the first."""
    root = tmp_path_factory.mktemp("engines") / "vault"
    build_vault(root)
    return root


@pytest.fixture
def wh(vault_root: Path) -> Iterator[wrdsvault.Warehouse]:
    with wrdsvault.Warehouse(vault_root) as wh:
        yield wh


@pytest.fixture
def damaged(
    tmp_path: Path, make_source: Callable[..., Any]
) -> Iterator[Callable[[str], tuple[wrdsvault.Snapshot, Path]]]:
    """A snapshot of a fresh ``crsp.msf`` vault whose 2021 file is then removed or truncated."""
    import os

    opened: list[wrdsvault.Warehouse] = []

    def make(how: str) -> tuple[wrdsvault.Snapshot, Path]:
        wh = wrdsvault.Warehouse(tmp_path / "damaged", source=make_source(1))
        opened.append(wh)
        wh.sync(["crsp.msf"])
        snap = wh.snapshot()
        victim = snap.files("crsp.msf", years=2021)[0]
        if how == "removed":
            victim.unlink()
        else:
            os.truncate(victim, victim.stat().st_size // 2)
        return snap, victim

    yield make
    for wh in opened:
        wh.close()
