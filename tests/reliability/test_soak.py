"""The soak: readers under load, random crash points and random faults, for N minutes.

``WRDSVAULT_SOAK_MINUTES=N pytest tests/reliability/test_soak.py`` runs rounds in turn until N
minutes have passed: a readers round (4 readers, 20 commits, the checker of
test_readers_under_load.py), a crash round (a writer SIGKILLed at a random `CrashPoint`, then one
or two next writers killed at random points, at random moments or in the middle of their
recovery, then a last writer must converge, `reliability.check_converges`) and three fault rounds (a
random errno injected by strace into a random write/fsync/rename/link of a sync,
`reliability.check_fault_case`). Without the variable the same code runs one small round of each
(CI). At the end it prints the counts (commits, queries, writers killed, faults injected, known
bugs hit, errors) to the terminal, also as ``record_property`` (JUnit XML), and fails if any
error (anything but a known bug) occurred.
"""

from __future__ import annotations

import importlib.util
import random
import shutil
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from _helpers import reliability as S

pytestmark = [pytest.mark.crash, pytest.mark.slow]
if S.SOAK_MINUTES and importlib.util.find_spec("pytest_timeout") is not None:
    # pyproject's 300 s per-test timeout would end a soak early.
    pytestmark.append(pytest.mark.timeout(S.SOAK_MINUTES * 60 + 900))

#: Round kinds in turn (soak); the bounded run does each once, small.
ROTATION = ("readers", "crash", "fault", "fault", "fault")
SEED = 20250601


def test_soak(
    tmp_path: Path,
    small_vaults: dict[str, Any],
    record_property: Any,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Random crashes, random I/O faults and readers under load; prints the counts at the end."""
    minutes = S.SOAK_MINUTES
    deadline = time.monotonic() + minutes * 60
    rng = random.Random(SEED if not minutes else time.time_ns())  # noqa: S311 (test schedule)
    counts: Counter[str] = Counter()
    errors: list[str] = []
    known: Counter[str] = Counter()
    template, old_id = small_vaults["template"], small_vaults["old_id"]
    fingerprint = small_vaults["new_fingerprint"]
    plan = None
    if shutil.which("strace"):
        plan, _ = S.dry_run(template, tmp_path / "dry")
    started = time.monotonic()
    n = 0
    while True:
        if minutes and time.monotonic() > deadline:
            break
        if not minutes and n >= len(set(ROTATION)) + 1:
            break
        kind = ROTATION[n % len(ROTATION)]
        work = tmp_path / f"round-{n:05d}-{kind}"
        work.mkdir()
        n += 1
        counts[f"rounds-{kind}"] += 1
        try:
            if kind == "readers":
                run = S.readers_round(
                    work,
                    commits=20 if minutes else 3,
                    readers=4 if minutes else 2,
                    rate_hz=5.0,
                    min_queries=5,
                    seed=rng.randrange(1 << 30),
                )
                counts["commits"] += run["commits"] + 1
                counts["queries"] += run["queries"]
                errors += run["problems"]
            elif kind == "crash":
                out = S.random_crash_round(work, template, old_id, fingerprint, rng)
                counts["writers killed"] += out["killed"]
                counts["crash rounds survived"] += 1
                counts["commits"] += 1
            elif plan is not None:
                out = S.random_fault_round(work, template, plan, old_id, fingerprint, rng)
                counts["faults injected"] += 1
                if out["outcome"] == "ok":
                    counts["faults handled cleanly"] += 1
                else:
                    where = f"{out['call']['family']}/{out['call']['phase']}"
                    known[f"{out['outcome']} ({where})"] += 1
                counts["commits"] += 1
        except AssertionError as exc:
            errors.append(f"round {n} ({kind}): {exc}"[:2000])
        finally:
            shutil.rmtree(work, ignore_errors=True)  # a long soak must not fill the disk
    elapsed = time.monotonic() - started
    counts["errors"] = len(errors)
    counts["known bugs hit"] = sum(known.values())
    for key, value in sorted(counts.items()):
        record_property(key, value)
    lines = [
        f"wrdsvault soak: {elapsed / 60:.1f} min ({'soak' if minutes else 'bounded CI run'}), "
        f"{n} rounds",
        *(f"  {key:<24} {value}" for key, value in sorted(counts.items())),
        *(f"  known bug: {key:<40} {value}" for key, value in sorted(known.items())),
        *(f"  ERROR: {e[:300]}" for e in errors[:10]),
    ]
    if plan is None:
        lines.append("  (strace not installed: no fault rounds)")
    with capsys.disabled():
        print("\n" + "\n".join(lines))
    assert not errors, "\n".join(errors[:10])
