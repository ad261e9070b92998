"""Fixtures of the reliability suite: template vaults and the reference states.

The helpers themselves live in ``tests/_helpers/reliability.py`` (shared with the child scripts
of this folder).
"""

from __future__ import annotations

from typing import Any

import pytest

from _helpers import disk
from _helpers import reliability as S
from _helpers.sources import sample_from_json


@pytest.fixture(scope="session")
def small_vaults(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A vintage-1 template vault of the small scenario and the vintage-2 reference state.

    ``template`` holds one snapshot (``old_id``); ``new_fingerprint`` is what a clean sync of
    vintage 2 on top of it commits (measured on a copy).
    """
    from wrdsvault import VaultSettings, Warehouse

    base = tmp_path_factory.mktemp("reliability-small")
    template = base / "template"
    Warehouse(template, settings=VaultSettings(), create=True).close()  # default settings
    with Warehouse(template, source=sample_from_json(S.SMALL, 1)) as wh:
        report = wh.sync(list(S.DATASETS))
        assert report.committed and report.snapshot_id is not None
        old_id = report.snapshot_id
        with wh.snapshot(verify=True) as snap:
            old_fingerprint = snap.fingerprint
            old_answers = S.snapshot_answers(snap)
    reference = disk.copy_vault(template, base / "reference")
    with Warehouse(reference, source=sample_from_json(S.SMALL, 2)) as wh:
        assert wh.sync(list(S.DATASETS)).committed
        with wh.snapshot(verify=True) as snap:
            new_fingerprint = snap.fingerprint
            new_answers = S.snapshot_answers(snap)
    assert old_fingerprint != new_fingerprint
    assert new_answers == S.source_answers(sample_from_json(S.SMALL, 2))
    assert old_answers == S.source_answers(sample_from_json(S.SMALL, 1))
    return {
        "template": template,
        "old_id": old_id,
        "old_fingerprint": old_fingerprint,
        "new_fingerprint": new_fingerprint,
        "old_answers": old_answers,
        "new_answers": new_answers,
    }
