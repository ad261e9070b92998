"""Readers under write load (docs/reliability.md), with a negative control.

Four reader processes (``_rw_child.py reader``) query the vault about five times a second each
while one writer process (``_rw_child.py writer``) commits 20 snapshots of changing vintages (the
first snapshot is committed before they start). Readers query a snapshot pinned at start, a second
one re-pinned now and then to a random committed id (both held open across commits), a fresh
``snapshot("latest")`` and ``Warehouse.arrow`` (latest, bracketed by two reads of HEAD); each
records which snapshot answered.

The writer computes each snapshot's expected answers from the source's own batches with pyarrow
(per year: rows, the exact sum of ``crsp.msf.ret``, the sum of ``ff.factors_monthly.mktrf``),
never from the vault; afterwards a fresh ``Warehouse`` re-checks every snapshot (verify=True)
against them, so the expectation itself is tested. `reliability.check_observations` then demands:
zero failed queries, every answer equal to the one of the snapshot it was pinned to (one between
the two HEAD reads for ``Warehouse.arrow``), never a mix of two snapshots, and ``latest`` never
moving backwards for any reader.

The negative control runs the same readers and checker against a deliberately broken writer that
rewrites a pinned Parquet file in place after each commit: the checker must report failures.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from _helpers import reliability as S
from wrdsvault import Warehouse

pytestmark = pytest.mark.slow

COMMITS = 20
READERS = 4
RATE_HZ = 5.0


def test_readers_see_exactly_their_snapshot_during_commits(tmp_path: Path) -> None:
    """4 readers x ~5 queries/s during 20 commits: 0 failures, 0 mixed answers, latest monotone."""
    run = S.readers_round(
        tmp_path, commits=COMMITS, readers=READERS, rate_hz=RATE_HZ, min_queries=10, seed=1
    )
    assert run["commits"] == COMMITS
    problems = run["problems"]
    assert problems == [], f"{len(problems)} problems, first ones: {problems[:10]}"
    obs = run["observations"]
    kinds = {o["kind"] for o in obs}
    assert kinds == {"pinned", "other", "latest", "query"}, kinds
    # The load was real: every reader queried while the writer committed, at about the rate.
    per_reader = {r: [o for o in obs if o["reader"] == r] for r in range(READERS)}
    for r, mine in per_reader.items():
        assert len(mine) >= 0.4 * RATE_HZ * run["writer_s"], (r, len(mine), run["writer_s"])
    latest_ids = {o.get("snapshot_id") or o["h1"] for o in obs if o["kind"] in ("latest", "query")}
    assert all("error" not in o for o in obs)
    assert len(latest_ids) >= COMMITS // 2, "readers must have seen latest move many times"
    pinned_ids = {o["snapshot_id"] for o in obs if o["kind"] == "pinned"}
    assert len(pinned_ids) == 1, pinned_ids
    # The expected answers are right: re-check every snapshot in a fresh Warehouse, hashed.
    with Warehouse(run["root"], create=False) as wh:
        assert [s.snapshot_id for s in wh.snapshots()] == sorted(run["expected"])
        assert wh.verify(all_snapshots=True).ok
        for sid, exp in run["expected"].items():
            with wh.snapshot(sid, verify=True) as snap:
                assert S.same_answer(S.snapshot_answers(snap), exp["expected"]), sid
        assert wh.doctor().ok


def test_negative_control_in_place_rewrite_is_caught(tmp_path: Path) -> None:
    """A writer that rewrites a pinned Parquet file in place makes the same checker fail."""
    run = S.readers_round(
        tmp_path, commits=6, readers=READERS, rate_hz=RATE_HZ, min_queries=8, broken=True
    )
    problems = run["problems"]
    assert problems, "the checker missed a writer that rewrites pinned files in place"
    failed = [p for p in problems if "failed query" in p]
    wrong = [p for p in problems if "answered" in p or "matches none" in p]
    assert failed or wrong, problems
    with Warehouse(run["root"], create=False) as wh:
        report = wh.verify(all_snapshots=True)
        assert not report.ok, "verify must flag the rewritten file too"
        assert {f.problem for f in report.faults} <= {"size", "sha256"}, report.summary()


def test_reader_threads_share_a_warehouse_and_a_snapshot_during_commits(tmp_path: Path) -> None:
    """2 processes x 4 threads share one Warehouse and snapshot during 10 commits: 0 failures.

    Each commit makes the next ``Warehouse.arrow`` replace (and close) the cached latest snapshot
    while other threads still query it; threads also query the one pinned snapshot at once.
    """
    run = S.readers_round(
        tmp_path, commits=10, readers=2, rate_hz=50.0, min_queries=6, seed=7, threads=4
    )
    assert run["commits"] == 10
    problems = run["problems"]
    assert problems == [], f"{len(problems)} problems, first ones: {problems[:10]}"
    obs = run["observations"]
    assert {o["reader"] for o in obs} == {r * 100 + t for r in range(2) for t in range(4)}
    assert {o["kind"] for o in obs} == {"pinned", "other", "latest", "query"}
    latest_ids = {o["h1"] for o in obs if o["kind"] == "query"}
    assert len(latest_ids) >= 5, "the shared latest snapshot must have been replaced many times"
