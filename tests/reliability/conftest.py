"""Fixtures of the reliability suite: template vaults, the reference states, the soak tally.

The helpers themselves live in ``_support.py`` (loaded by path: pytest runs with
``--import-mode=importlib``, and the child scripts import the same file by name).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest


def load_support() -> ModuleType:
    """Import tests/reliability/_support.py once per process, by path."""
    name = "wrdsvault_reliability_support"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name("_support.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


S = load_support()


@pytest.fixture(scope="session")
def small_vaults(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A vintage-1 template vault of the small scenario and the vintage-2 reference state.

    ``template`` holds one snapshot (``old_id``); ``new_fingerprint`` is what a clean sync of
    vintage 2 on top of it commits (measured on a copy).
    """
    from wrdsvault import VaultSettings, Warehouse

    base = tmp_path_factory.mktemp("reliability-small")
    template = base / "template"
    Warehouse(template, settings=VaultSettings()).close()  # vault.json with default settings
    with Warehouse(template, source=S.sample_source(S.SMALL, 1)) as wh:
        report = wh.sync(list(S.DATASETS))
        assert report.committed and report.snapshot_id is not None
        old_id = report.snapshot_id
        with wh.snapshot(verify=True) as snap:
            old_fingerprint = snap.fingerprint
            old_answers = S.snapshot_answers(snap)
    reference = S.copy_vault(template, base / "reference")
    with Warehouse(reference, source=S.sample_source(S.SMALL, 2)) as wh:
        assert wh.sync(list(S.DATASETS)).committed
        with wh.snapshot(verify=True) as snap:
            new_fingerprint = snap.fingerprint
            new_answers = S.snapshot_answers(snap)
    assert old_fingerprint != new_fingerprint
    assert new_answers == S.source_answers(S.sample_source(S.SMALL, 2))
    assert old_answers == S.source_answers(S.sample_source(S.SMALL, 1))
    return {
        "template": template,
        "old_id": old_id,
        "old_fingerprint": old_fingerprint,
        "new_fingerprint": new_fingerprint,
        "old_answers": old_answers,
        "new_answers": new_answers,
    }
