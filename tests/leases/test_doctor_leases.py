"""doctor and reader leases: live ones are listed, dead ones are garbage that repair removes."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from wrdsvault import Warehouse
from wrdsvault._storage.catalog import Catalog, find_garbage
from wrdsvault.cli import main as cli


def _kinds(wh: Warehouse) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for f in wh.doctor().findings:
        out.setdefault(f.kind, []).append(f.path)
    return out


def test_doctor_lists_live_leases_and_repairs_dead_ones(
    synced: tuple[Warehouse, list[str]],
    reader: Callable[..., Any],
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A live reader's lease is information; after SIGKILL it is garbage and repair removes it."""
    wh, (old, new) = synced
    alive = reader("snapshot", {"root": str(wh.root), "refs": [new]})
    alive.expect("held")
    doomed = reader("snapshot", {"root": str(wh.root), "refs": [old]})
    doomed.expect("held")
    report = wh.doctor()
    leases = [f for f in report.findings if f.kind == "lease"]
    assert len(leases) == 2 and not any(f.garbage for f in leases)
    assert report.ok, report.summary()
    assert any(old in f.detail for f in leases) and any(new in f.detail for f in leases)

    doomed.sigkill()
    kinds = _kinds(wh)
    (dead,) = kinds["dead-lease"]
    assert dead.startswith(f"leases/{old}.")
    assert len(kinds["lease"]) == 1 and new in kinds["lease"][0]
    assert not wh.doctor().ok
    assert cli(["doctor", "--vault", str(wh.root)]) != 0
    assert "dead-lease" in capsys.readouterr().out

    repaired = wh.doctor(repair=True)
    assert repaired.repaired == (dead,)
    assert not (wh.root / dead).exists()
    assert set(_kinds(wh)) == {"lease"}  # the live reader's lease is kept
    alive.send("query")
    alive.expect("answers")


def test_lease_temp_files_are_garbage_only_after_a_grace(
    synced: tuple[Warehouse, list[str]],
) -> None:
    """A lease being written (its temp file) is not garbage; a minute-old leftover is."""
    wh, (old, _new) = synced
    (wh.root / "leases").mkdir(exist_ok=True)
    temp = wh.root / "leases" / f".{old}.{'a' * 32}.json.0123456789ab.tmp"
    temp.write_bytes(b"{")
    catalog = Catalog(wh._layout)
    assert [g for g in find_garbage(catalog) if g.path == temp] == []
    then = time.time() - 120
    os.utime(temp, (then, then))
    (item,) = [g for g in find_garbage(catalog) if g.path == temp]
    assert item.kind == "temp-file"
    wh.doctor(repair=True)
    assert not Path(temp).exists()
