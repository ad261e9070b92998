"""What the content digest costs a sync: the same sync with and without it (target <= 10%).

The digest (`wrdsvault._digest`) is hashed from the batches as the sync writes them (the sources
here send rows in key order; otherwise it is computed from the written file). Two sources:

* **WRDS replica** (``dsf_replica`` of ``conftest.py``: ``crsp.dsf`` of
  ``WRDSVAULT_BENCH_SYNC_ROWS`` rows through `WrdsSource`): the sync users run;
* **SampleSource** ``crsp.dsf`` of about the same rows, generated in memory: no network and no
  PostgreSQL, so the digest is a larger share of the time than with any real source (the
  worst case).

Each round syncs into two fresh vaults, one with the digest and one with it switched off (the
writer's ``Digester`` and ``file_digest`` replaced by ones that hash nothing), alternating which
goes first;
``WRDSVAULT_BENCH_SYNC_ROUNDS`` rounds (at least 5) and the medians are compared. Row counts and
the presence or absence of digests are asserted; the overhead ``(with - without) / without`` goes
to ``benchmark.extra_info`` (``digest_overhead``) and is never asserted.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import wrdsvault._digest as digest_module
from wrdsvault import Warehouse
from wrdsvault.sources import SampleSource

DATASET = "crsp.dsf"


class _NoDigest:
    """Stands in for `Digester` in the runs without a digest: hashes nothing."""

    in_order = False

    def __init__(self, *_args: Any) -> None:
        pass

    def update(self, _batch: Any) -> None:
        pass


def _sync(vault: Path, source: Any, *, digest: bool, monkeypatch: pytest.MonkeyPatch) -> float:
    """Seconds of one ``sync(crsp.dsf)`` into the empty ``vault``; checks the digests."""
    with monkeypatch.context() as m:
        if not digest:
            # The writer imports these from wrdsvault._digest when it stages a file.
            m.setattr(digest_module, "Digester", _NoDigest)
            m.setattr(digest_module, "file_digest", lambda *_a, **_k: None)
        with Warehouse(vault, source=source) as wh:
            started = time.perf_counter()
            wh.sync(DATASET)
            elapsed = time.perf_counter() - started
            parts = wh.snapshot().dataset(DATASET).partitions
    assert all((p.content_digest is not None) == digest for p in parts)
    return elapsed


def _compare(
    tmp: Path,
    make_source: Callable[[], Any],
    rounds: int,
    monkeypatch: pytest.MonkeyPatch,
) -> dict[str, Any]:
    on: list[float] = []
    off: list[float] = []
    for i in range(rounds):
        order = [True, False] if i % 2 == 0 else [False, True]
        for digest in order:
            vault = tmp / f"{'on' if digest else 'off'}-{i}"
            t = _sync(vault, make_source(), digest=digest, monkeypatch=monkeypatch)
            (on if digest else off).append(t)
    with_s, without_s = statistics.median(on), statistics.median(off)
    return {
        "rounds": rounds,
        "sync_s_with_digest": round(with_s, 3),
        "sync_s_without_digest": round(without_s, 3),
        "digest_overhead": round((with_s - without_s) / without_s, 4),
        "target": "digest_overhead <= 0.10",
    }


@pytest.mark.benchmark(group="digest")
def test_digest_cost_on_a_wrds_sync(
    benchmark: Any,
    dsf_replica: Any,
    bench_sizes: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Sync of crsp.dsf from the WRDS replica with and without the digest: the overhead."""
    rounds = max(5, bench_sizes.sync_rounds)
    info = benchmark.pedantic(
        _compare,
        args=(tmp_path, dsf_replica.rep.source, rounds, monkeypatch),
        rounds=1,
        iterations=1,
    )
    benchmark.extra_info.update(info | {"rows": dsf_replica.rows})


@pytest.mark.benchmark(group="digest")
def test_digest_cost_on_an_in_memory_sync(
    benchmark: Any, bench_sizes: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same with SampleSource (no network, no server): the digest's worst-case share."""
    n_securities = max(10, bench_sizes.sync_rows // 620)
    rounds = max(5, bench_sizes.sync_rounds)

    def source() -> SampleSource:
        return SampleSource(seed=0, years=range(2020, 2024), n_securities=n_securities)

    info = benchmark.pedantic(
        _compare, args=(tmp_path, source, rounds, monkeypatch), rounds=1, iterations=1
    )
    with Warehouse(tmp_path / "on-0") as wh:
        rows = wh.snapshot().dataset(DATASET).row_count
    benchmark.extra_info.update(info | {"rows": rows})
