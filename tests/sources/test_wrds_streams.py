"""Parallel streams and markers taken from the rows, against a real PostgreSQL laid out like WRDS.

* A first sync compares no per-year marker, so it runs no hashing scan before the first row:
  each year's marker is summed from a row-hash column of its COPY, and equals the one
  `WrdsSource.partitions` computes on the server (so the next sync compares them).
* Several years are read at once, each on its own connection, never more than ``streams``;
  the files are byte for byte those of a one-stream sync; a failed stream stops the others and
  commits nothing; a writer SIGKILLed while streams run leaves the previous state, and the next
  sync completes.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from _helpers.disk import staging_dirs
from _helpers.proc import killed_at
from _helpers.sources import Wrapping
from wrdsvault import Warehouse
from wrdsvault.datasets import DatasetSpec, builtin_spec
from wrdsvault.errors import SourceError
from wrdsvault.sources import WrdsSource
from wrdsvault.testing import WrdsReplica

pytestmark = pytest.mark.postgres

MakeReplica = Callable[..., AbstractContextManager[WrdsReplica]]
CHILD = Path(__file__).with_name("_parallel_child.py")


def statements_since(rep: WrdsReplica, offset: int) -> str:
    log = rep.server.log_path.read_bytes()[offset:]
    return log.decode(errors="replace")


def log_statements(rep: WrdsReplica) -> int:
    """Log every statement from now on; return the log's size to read from."""
    rep.execute("ALTER SYSTEM SET log_statement = 'all'")
    rep.execute("SELECT pg_reload_conf()")
    return rep.server.log_path.stat().st_size


def files_by_year(wh: Warehouse, dataset: str) -> dict[int | None, str]:
    return {p.year: p.sha256 for p in wh.snapshot().dataset(dataset).partitions}


def markers_by_year(wh: Warehouse, dataset: str) -> dict[int | None, str | None]:
    return {p.year: p.marker for p in wh.snapshot().dataset(dataset).partitions}


def test_first_sync_takes_each_years_marker_from_its_rows(
    make_replica: MakeReplica, vault_dir: Path
) -> None:
    """No hashing scan before a first sync; its markers equal the server's, so the next sync
    after a comment-only change reuses every year without reading."""
    with make_replica(datasets=["crsp.msf"]) as rep:
        offset = log_statements(rep)
        with Warehouse(vault_dir, source=rep.source()) as wh:
            first = wh.sync("crsp.msf")
        log = statements_since(rep, offset)
        assert first["crsp.msf"].years_written == (2021, 2022, 2023)
        assert "sum(hash_record_extended" not in log  # no marker scan up front
        assert log.count("hash_record_extended") == 3  # one row-hash column per COPY
        server = rep.source()
        expected = {p.year: p.marker for p in server.partitions(builtin_spec("crsp.msf"))}
        server.close()
        with Warehouse(vault_dir, source=rep.source()) as wh:
            assert markers_by_year(wh, "crsp.msf") == expected
            assert all(m is not None and m.startswith("pg-rowhash1:") for m in expected.values())
            rep.execute("COMMENT ON VIEW crsp.msf IS 'Monthly Stock (Updated 2030-01-01)'")
            offset = log_statements(rep)
            again = wh.sync("crsp.msf")
            assert again["crsp.msf"].years_reused == (2021, 2022, 2023)
            assert again["crsp.msf"].years_written == ()
            assert "COPY (" not in statements_since(rep, offset)
            # A changed year was given its marker by the hashing query: its COPY sends no hashes.
            rep.execute("UPDATE crsp_a_stock.msf SET ret = 0.25 WHERE date = '2022-03-31'")
            rep.execute("COMMENT ON VIEW crsp.msf IS 'Monthly Stock (Updated 2030-02-01)'")
            offset = log_statements(rep)
            changed = wh.sync("crsp.msf")
            log = statements_since(rep, offset)
            assert changed["crsp.msf"].years_written == (2022,)
            copies = [line for line in log.splitlines() if "COPY (" in line]
            assert len(copies) == 1
            assert "hash_record_extended" not in copies[0]
            server = rep.source()
            now = {p.year: p.marker for p in server.partitions(builtin_spec("crsp.msf"))}
            server.close()
            assert markers_by_year(wh, "crsp.msf") == now
            assert now[2022] != expected[2022]


def test_table_the_server_cannot_hash_is_read_without_markers(
    make_replica: MakeReplica, vault_dir: Path
) -> None:
    """A json column has no extended hash: the COPY is read again without the hash column, the
    rows are right and the markers are unknown (the next sync compares content)."""
    with make_replica(datasets=["ff.factors_monthly"]) as rep:
        rep.execute("CREATE SCHEMA odd_all")
        rep.execute("CREATE SCHEMA odd")
        rep.execute(
            "CREATE TABLE odd_all.t AS SELECT g AS id, DATE '2020-01-01' + g AS d, "
            "json_build_object('g', g) AS j FROM generate_series(1, 800) AS g"
        )
        rep.execute("CREATE VIEW odd.t AS SELECT * FROM odd_all.t")
        with Warehouse(vault_dir, source=rep.source()) as wh:
            report = wh.sync("odd.t", date_column="d")
            assert report["odd.t"].rows_written == 800
            assert set(markers_by_year(wh, "odd.t").values()) == {None}
            got = wh.snapshot().arrow("SELECT j FROM odd.t WHERE id = 7").to_pylist()
            assert got == [{"j": '{"g" : 7}'}]


def test_parallel_streams_write_the_files_of_one_stream(
    make_replica: MakeReplica, tmp_path: Path
) -> None:
    """streams=4 reads years on several connections (never more than 4) and writes exactly the
    files, markers and rows that streams=1 writes."""
    with make_replica(datasets=["crsp.dsf", "crsp.msf"], years=range(2018, 2024)) as rep:
        seen: list[int] = []

        def count_connections(_event: object) -> None:
            seen.append(
                rep.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = %s "
                    "AND usename = current_user AND pid <> pg_backend_pid()",
                    [rep.dbname],
                )[0][0]
            )

        results = {}
        for streams in (1, 4):
            with Warehouse(tmp_path / f"v{streams}", source=rep.source(streams=streams)) as wh:
                admin = rep.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = %s "
                    "AND usename = current_user",
                    [rep.dbname],
                )[0][0]
                seen.clear()
                report = wh.sync(["crsp.dsf", "crsp.msf"], progress=count_connections)
                # The source's own connection, plus at most streams - 1 of its own; the admin
                # connection of the replica is not the source's.
                assert max(seen) - admin + 1 <= streams
                if streams > 1:
                    assert max(seen) - admin + 1 > 1, "the years were not read in parallel"
                results[streams] = (
                    {d: files_by_year(wh, d) for d in ("crsp.dsf", "crsp.msf")},
                    {d: markers_by_year(wh, d) for d in ("crsp.dsf", "crsp.msf")},
                    {d: report[d].rows_written for d in ("crsp.dsf", "crsp.msf")},
                )
        assert results[1] == results[4]
        assert len(results[4][0]["crsp.dsf"]) == 6


class KillOneYear(Wrapping):
    """Hands on WrdsSource's rows in parallel; kills the COPY backend of one year mid-stream."""

    def __init__(self, inner: WrdsSource, rep: WrdsReplica, year: int) -> None:
        super().__init__(inner)
        self.rep, self.year, self.streams = rep, year, inner.streams
        self.killed = 0

    def partitions(self, spec: DatasetSpec, **hints: Any) -> Any:
        return self.inner.partitions(spec, **hints)

    def streamed_marker(self, spec: DatasetSpec, year: int | None) -> str | None:
        return self.inner.streamed_marker(spec, year)

    def read_partition(
        self, spec: DatasetSpec, year: int | None, *, batch_rows: int = 131_072
    ) -> Iterator[pa.RecordBatch]:
        batches = self.inner.read_partition(spec, year, batch_rows=batch_rows)
        first = next(batches)
        if year == self.year:
            self.killed += len(
                self.rep.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s "
                    "AND query LIKE 'COPY (%%' AND query LIKE %s AND pid <> pg_backend_pid()",
                    [self.rep.dbname, f"%>= '{year}-01-01'%"],
                )
            )
        yield first
        yield from batches


def test_a_failed_stream_stops_the_others_and_commits_nothing(
    make_replica: MakeReplica, vault_dir: Path
) -> None:
    """One year's connection dies mid-stream: the sync raises that error (not a cancellation),
    commits nothing, leaves no staged file and no stream thread behind; the next sync works."""
    with make_replica(datasets=["ff.factors_monthly"]) as rep:
        # ~45 MB of CSV per year: more than the COPY pipeline buffers, so the kill lands mid-way.
        rep.execute("CREATE SCHEMA big_all")
        rep.execute("CREATE SCHEMA big")
        rep.execute(
            "CREATE TABLE big_all.t AS SELECT g AS id, DATE '2019-01-01' + (g % 1095) AS d, "
            "repeat(md5(g::text), 6) AS pad FROM generate_series(1, 600000) AS g"
        )
        rep.execute("CREATE VIEW big.t AS SELECT * FROM big_all.t")
        killer = KillOneYear(rep.source(streams=3, retry_backoff_s=0.01), rep, 2020)
        with Warehouse(vault_dir, source=killer) as wh:
            with pytest.raises(SourceError, match="never resumed halfway") as caught:
                wh.sync("big.t", date_column="d")
            assert caught.value.retryable
            assert killer.killed >= 1
            assert wh.snapshots() == []
            assert not [t for t in threading.enumerate() if t.name.startswith("wrdsvault-stream")]
            assert staging_dirs(vault_dir) == []
        with Warehouse(vault_dir, source=rep.source(streams=3)) as wh:
            report = wh.sync("big.t", date_column="d")
            assert report.committed
            assert wh.snapshot().arrow("SELECT count(*) AS n FROM big.t").to_pylist() == [
                {"n": 600_000}
            ]


@pytest.mark.crash
@pytest.mark.parametrize("point", ["partition-staged:2", "checkpoint-recorded:3"])
def test_writer_killed_during_a_parallel_sync(
    make_replica: MakeReplica, vault_dir: Path, point: str
) -> None:
    """SIGKILL while four streams run: nothing is committed, and the next sync (recovery, the
    dead writer's checkpoints) commits the exact table."""
    with make_replica(datasets=["crsp.dsf"], years=range(2018, 2024)) as rep:
        killed_at(point, CHILD, str(vault_dir), json.dumps(rep.connect_kwargs()), "4")
        assert not (vault_dir / "HEAD").exists()
        with Warehouse(vault_dir, source=rep.source(streams=4)) as wh:
            assert wh.snapshots() == []
            report = wh.sync("crsp.dsf")
            assert report.committed
            expected = rep.execute(
                "SELECT extract(year FROM date)::int, count(*), sum(ret) FROM crsp.dsf "
                "GROUP BY 1 ORDER BY 1"
            )
            got = (
                wh.snapshot()
                .arrow(
                    "SELECT year(date) AS y, count(*) AS n, sum(ret) AS r FROM crsp.dsf "
                    "GROUP BY 1 ORDER BY 1"
                )
                .to_pylist()
            )
            assert [(g["y"], g["n"]) for g in got] == [(y, n) for y, n, _ in expected]
            assert [float(g["r"]) for g in got] == pytest.approx([float(r) for *_, r in expected])
            assert wh.verify().ok
        assert staging_dirs(vault_dir) == []


def test_a_sync_never_loads_the_library_list(make_replica: MakeReplica, vault_dir: Path) -> None:
    """wrds.Connection() lists every library at login; a sync of one table logs in without it,
    on every stream connection too."""
    with make_replica(datasets=["crsp.msf"]) as rep:
        offset = log_statements(rep)
        with Warehouse(vault_dir, source=rep.source(streams=3)) as wh:
            assert wh.sync("crsp.msf").committed
        log = statements_since(rep, offset)
        assert log.count("COPY (") == 3
        assert "schemaname" not in log  # wrds's load_library_list query


def test_a_wrds_sync_proves_its_rules_from_the_stream_in_the_stream_pool(
    make_replica: MakeReplica, vault_dir: Path
) -> None:
    """The COPY sends each year in strictly increasing key order with no NULL key and every
    date in its year: the built-in rules pass on those facts without reading the staged files
    (no validation database is opened), and the parsed rows live in the sync's memory pool."""
    from wrdsvault import validation
    from wrdsvault._memory import stream_pool

    with make_replica(datasets=["crsp.dsf"]) as rep:
        opened: list[bool] = []

        def sync() -> None:
            with Warehouse(vault_dir, source=rep.source()) as wh:
                assert wh.sync("crsp.dsf")["crsp.dsf"].years_written == (2021, 2022, 2023)
            opened.append(getattr(validation._local, "con", None) is not None)

        thread = threading.Thread(target=sync)  # a thread of its own: its own validation DB
        thread.start()
        thread.join()
        assert opened == [False]

        pool = stream_pool()
        if pool.backend_name != "jemalloc":
            pytest.skip(f"this pyarrow has no jemalloc pool (stream pool: {pool.backend_name})")
        source = rep.source()
        try:
            before = pool.bytes_allocated()
            batches = list(source.read_partition(builtin_spec("crsp.dsf"), 2022))
            held = pool.bytes_allocated() - before
            assert held >= sum(b.nbytes for b in batches) > 0
        finally:
            source.close()
