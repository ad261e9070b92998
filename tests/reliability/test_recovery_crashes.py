"""A crash during recovery: the writer after a crash dies too, and doctor names the leftovers.

tests/crash kills one writer at every `CrashPoint` and lets the next writer recover. Here the
*next* writer is killed as well, while it cleans up (or right after): at ``lock-acquired``
(before its recovery ran: two dead writers' leftovers), at ``staging-created`` or later (after
recovery: its own leftovers on top), in the middle of its recovery (the first writer's staging is
padded with 20,000 files and the parent SIGKILLs the second writer once it has deleted some of
them), or at a seeded random moment early in its sync; once also a third writer in a row. The
first sync of an empty vault (recovery's no-HEAD branch) gets the same treatment.

After the dead writers: the committed state is intact and verifies; ``doctor()`` names every
leftover (stale lock, staging, uncommitted manifest, ...) and nothing else; optionally
``doctor(repair=True)`` first leaves a vault with no finding; then a last writer converges on
the reference state (same fingerprint and answers as a clean sync), leaves no leftover, and
``doctor()`` reports nothing but quarantine.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest

from _helpers import disk
from _helpers import reliability as S
from wrdsvault import Warehouse

pytestmark = pytest.mark.crash

#: (first writer's crash point, how the second writer dies, repair with doctor before the third
#: writer). Crash points are `CrashPoint` values, ``:n`` = the n-th hit.
CASES = [
    ("partition-staged:2", ["point:lock-acquired"], False),
    ("manifest-renamed", ["point:staging-created"], True),
    # every year was checkpointed: writer 2 resumes them and dies publishing them
    ("head-temp-fsynced", ["point:publish-dir-created"], False),
    ("head-renamed", ["point:staging-created"], False),
    ("partition-staged:3", ["mid-recovery"], False),
    ("partition-renamed:2", ["random"], True),
    ("partition-staged", ["point:staging-created", "point:lock-acquired"], False),
]


@pytest.mark.parametrize(
    ("first", "then", "repair_first"),
    [pytest.param(*c, id=f"{c[0]}-then-{'-then-'.join(c[1])}") for c in CASES],
)
def test_writer_killed_while_recovering_a_crash(
    tmp_path: Path,
    small_vaults: dict[str, Any],
    first: str,
    then: list[str],
    repair_first: bool,
) -> None:
    """Writer 1 SIGKILLed, writer 2 SIGKILLed during/after its recovery: writer 3 converges."""
    root = disk.copy_vault(small_vaults["template"], tmp_path / "vault")
    status, result, err = S.run_sync_child(root, 2, crashpoint=first)
    assert status == -9, (status, result, err[-2000:])
    rng = random.Random(f"{first}/{then}")  # noqa: S311 (kill timing, not security)
    for mode in then:
        S.second_writer(root, 2, mode, rng)
    S.check_converges(
        root,
        old_id=small_vaults["old_id"],
        vintage=2,
        fingerprint=small_vaults["new_fingerprint"],
        repair_first=repair_first,
    )


@pytest.mark.parametrize(
    "then",
    [
        pytest.param("point:lock-acquired"),
        pytest.param("point:staging-created"),
    ],
)
def test_first_sync_crash_then_crash_during_recovery(
    tmp_path: Path, small_vaults: dict[str, Any], then: str
) -> None:
    """No HEAD yet: writer 1 dies after its manifest rename, writer 2 dies recovering it."""
    root = tmp_path / "vault"
    Warehouse(root, create=True).close()
    status, result, err = S.run_sync_child(root, 1, crashpoint="manifest-renamed")
    assert status == -9, (status, result, err[-2000:])
    assert disk.read_head(root) is None and len(disk.manifests_on_disk(root)) == 1
    S.second_writer(root, 1, then, random.Random(then))  # noqa: S311
    S.check_converges(
        root,
        old_id=None,
        vintage=1,
        fingerprint=small_vaults["old_fingerprint"],
        repair_first=then == "point:staging-created",
    )
