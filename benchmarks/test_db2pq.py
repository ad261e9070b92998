"""wrdsvault's sync against db2pq, the peer tool researchers use to mirror WRDS into Parquet.

db2pq 0.3.0 with its default DuckDB engine (DuckDB's postgres scanner) runs in its own venv,
built by ``python benchmarks/setup_db2pq.py``; without it this benchmark skips. Both tools read
the session's WRDS replica (``dsf_replica`` of ``conftest.py``: a dsf-shaped ``crsp.dsf`` of
``WRDSVAULT_BENCH_SYNC_ROWS`` rows, 2020-2023), each run in a fresh process (``_db2pq.py`` for
db2pq, ``_measure.py`` for the sync: wall time of the call, the child's peak RSS), the two
tools interleaved step by step:

1. **full copy** into an empty folder / an empty vault, wrdsvault twice: with one stream (db2pq
   reads on one connection; ``full_*``) and with its default streams (what ``WrdsSource()``
   does; ``full_streams_*``);
2. **nothing changed**: both re-run against the unchanged replica; db2pq decides from the
   table comment's date, wrdsvault from its change markers;
3. **one-year change**: 1 % of one year's rows get a new ``ret`` and the comment's date moves
   on, as WRDS does on an update; both re-run. db2pq rewrites the whole table, wrdsvault the
   changed year.

Each run also reports its whole process's CPU time and PostgreSQL's CPU time while it ran
(``*_process_cpu_seconds``, ``*_server_cpu_seconds``; ratios ``<step>_process_cpu_ratio`` and
``<step>_server_cpu_ratio``): the replica shares the tools' two cores, so what each asks of the
server is part of its wall time here.

Correctness is asserted (both write every row of a full copy, neither writes a row when nothing
changed, db2pq's file is untouched then, the one-year change is picked up by both); the ratios
wrdsvault / db2pq of time and peak RSS go into ``benchmark.extra_info`` and are never asserted.
The targets they are read against: at most 1.0x db2pq's time and memory for the full copy,
at most 1.0x for "nothing changed".

The step-1 comment is set to a date later than any other benchmark sets, so db2pq's date check
sees each later step's bump. Leaves the replica's ``ret`` values of 1 % of 2022's rows and the
comment changed (row counts unchanged).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Final

import pytest

from wrdsvault.sources.wrds import DEFAULT_STREAMS
from wrdsvault.testing import product_schema

DATASET: Final = "crsp.dsf"
CHANGED_YEAR: Final = 2022
TITLE: Final = "Daily Stock - Securities"
#: Comment dates: later than those test_resync.py sets, so db2pq always sees an update.
FIRST_DATE: Final = "2025-06-01"
CHANGED_DATE: Final = "2025-07-01"
TIME_TARGET: Final = 1.0
MEMORY_TARGET: Final = 1.0
UNCHANGED_TARGET: Final = 1.0


def set_comment(rep: Any, comment: str) -> None:
    """Set the table comment the way WRDS shows it (on the view users query and on the table)."""
    library, table = DATASET.split(".")
    rep.execute(f"COMMENT ON TABLE {product_schema(DATASET)}.{table} IS %s", [comment])
    rep.execute(f"COMMENT ON VIEW {library}.{table} IS %s", [comment])


@pytest.mark.benchmark(group="db2pq-dsf")
def test_sync_against_db2pq(
    benchmark: Any,
    db2pq_env: tuple[Path, dict[str, str]],  # first: skip before the replica is built
    dsf_replica: Any,
    measure: Any,
    db2pq: Any,
    bench_sizes: Any,
    tmp_path: Path,
) -> None:
    """Full copy, nothing changed, one-year change: wrdsvault / db2pq time and memory ratios."""
    python, env = db2pq_env
    rep, connect, counts = dsf_replica.rep, dsf_replica.connect, dsf_replica.counts
    total = dsf_replica.rows
    set_comment(rep, f"{TITLE} (Updated {FIRST_DATE})")

    def run_db2pq(data_dir: Path) -> dict[str, Any]:
        return db2pq.measure_db2pq(python, env, DATASET, connect, data_dir)

    def run_sync(vault: Path, streams: int = 1) -> dict[str, Any]:
        return measure.measure("sync", None, connect, vault, streams=streams)

    # 1. full copy, interleaved; the first round's outputs are the ones the later steps update
    rounds = bench_sizes.sync_rounds
    # wrdsvault twice: one stream (db2pq reads on one connection) and its default streams
    # (what a user runs: `WrdsSource()`); both against the same db2pq rounds.
    fulls_p: list[dict[str, Any]] = []
    fulls_v: list[dict[str, Any]] = []
    fulls_s: list[dict[str, Any]] = []
    for i in range(rounds):
        # Alternate who goes first: neither always gets the warmer page cache.
        order = ("p", "v", "s") if i % 2 == 0 else ("s", "v", "p")
        for who in order:
            if who == "p":
                fulls_p.append(run_db2pq(tmp_path / f"pq-{i}"))
            elif who == "v":
                fulls_v.append(run_sync(tmp_path / f"vault-{i}"))
            else:
                fulls_s.append(run_sync(tmp_path / f"vault-streams-{i}", DEFAULT_STREAMS))
    for p in fulls_p:
        assert p["copied"] and p["rows"] == total
    for v in (*fulls_v, *fulls_s):
        assert v["report"]["status"] == "added" and v["rows"] == total
    full_p, full_v = measure.median_of(fulls_p), measure.median_of(fulls_v)
    full_s = measure.median_of(fulls_s)
    pq_dir, vault = tmp_path / "pq-0", tmp_path / "vault-0"
    pq_file = pq_dir / "crsp" / "dsf.parquet"

    # 2. nothing changed: neither writes a row; db2pq's file stays as it was
    stat_before = pq_file.stat()
    # The benchmark's own timer runs this cheap step (db2pq's comment check), once.
    unchanged_p = benchmark.pedantic(run_db2pq, args=(pq_dir,), rounds=1, iterations=1)
    unchanged_v = run_sync(vault)
    assert not unchanged_p["copied"] and unchanged_p["rows"] == 0
    assert "already up to date" in unchanged_p["output"]
    assert pq_file.stat().st_mtime_ns == stat_before.st_mtime_ns
    assert unchanged_v["report"]["status"] == "unchanged" and unchanged_v["rows"] == 0

    # 3. 1 % of one year's rows change and WRDS moves the comment's date on
    table = DATASET.split(".")[1]
    [(updated,)] = rep.execute(
        f"WITH u AS (UPDATE {product_schema(DATASET)}.{table} SET ret = ret + 0.0001 "
        f"WHERE date >= '{CHANGED_YEAR}-01-01' AND date < '{CHANGED_YEAR + 1}-01-01' "
        "AND ret IS NOT NULL AND (hashtext(permno::text || date::text) & 1023) < 10 "
        "RETURNING 1) SELECT count(*) FROM u"
    )
    assert updated > 0
    set_comment(rep, f"{TITLE} (Updated {CHANGED_DATE})")
    one_year_p = run_db2pq(pq_dir)
    one_year_v = run_sync(vault)
    assert one_year_p["copied"] and one_year_p["rows"] == total  # the whole table again
    assert one_year_v["report"]["status"] == "updated"
    assert one_year_v["report"]["years_written"] == [CHANGED_YEAR]
    assert one_year_v["rows"] == counts[CHANGED_YEAR]

    info = benchmark.extra_info
    info["rows"] = total
    info["years"] = f"{min(counts)}-{max(counts)}"
    info["rounds"] = rounds
    info["one_year"] = CHANGED_YEAR
    info["one_year_updated_rows"] = updated
    info["one_year_updated_fraction_of_year"] = round(updated / counts[CHANGED_YEAR], 4)
    info["db2pq_parquet_bytes"] = full_p["parquet_bytes"]
    info["wrdsvault_parquet_bytes"] = full_v["report"]["bytes_written"]
    info["default_streams"] = DEFAULT_STREAMS
    steps = (
        ("full", full_p, full_v),
        ("full_streams", full_p, full_s),
        ("unchanged", unchanged_p, unchanged_v),
    )
    for step, p, v in (*steps, ("one_year", one_year_p, one_year_v)):
        measure.record(info, f"db2pq_{step}", p)
        measure.record(info, f"wrdsvault_{step}", v)
        info[f"{step}_time_ratio"] = round(v["seconds"] / p["seconds"], 3)
        info[f"{step}_memory_ratio"] = round(v["peak_rss_bytes"] / p["peak_rss_bytes"], 3)
        info[f"{step}_process_time_ratio"] = round(v["process_seconds"] / p["process_seconds"], 3)
        # Where the time goes: each tool's own CPU (whole process) and PostgreSQL's.
        info[f"{step}_process_cpu_ratio"] = round(
            v["process_cpu_seconds"] / max(p["process_cpu_seconds"], 1e-9), 3
        )
        info[f"{step}_server_cpu_ratio"] = round(
            v["server_cpu_seconds"] / max(p["server_cpu_seconds"], 1e-9), 3
        )
    info["full_within_target"] = (
        info["full_time_ratio"] <= TIME_TARGET and info["full_memory_ratio"] <= MEMORY_TARGET
    )
    info["unchanged_within_target"] = info["unchanged_time_ratio"] <= UNCHANGED_TARGET
    info["targets"] = (
        f"full copy: time and peak RSS ratios (wrdsvault / db2pq) <= {TIME_TARGET}; nothing "
        f"changed: time ratio <= {UNCHANGED_TARGET}; one-year change: time ratio < 1"
    )
