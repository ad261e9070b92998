"""Several years read with one COPY, against a real PostgreSQL laid out like WRDS.

A COPY of one year filters the table on its date column; without an index on that column the
server scans the whole table for every year. `WrdsSource.read_partitions` reads a run of years
with one COPY ordered by year (the row's year comes as a last column and the reader cuts the
batches where it changes), and the sync reads each stream's years as such a run (`_groups`).
What must hold:

* the rows, their order and each year's marker are those of one COPY per year, wherever the
  year changes (inside a CSV block or at its edge), and a year without rows is an empty year;
* a sync with one stream sends one COPY for all its years and commits the rows, markers and
  content digests of a sync that reads year by year (a source without `read_partitions`);
* a caller that leaves a year early, or the whole run, stops nothing it should not: the next
  year starts at its first row, and a closed run cancels its COPY;
* a writer killed after some years of a run were staged resumes them on the next sync.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import attrs
import pyarrow as pa
import pytest

import wrdsvault.sources.wrds as wrds_source
from _helpers.disk import staging_dirs
from _helpers.proc import killed_at
from _helpers.sources import Wrapping
from wrdsvault import Warehouse
from wrdsvault._sync import GROUP_ROWS, _groups
from wrdsvault.datasets import builtin_spec
from wrdsvault.sources.base import PartitionInfo
from wrdsvault.testing import WrdsReplica

pytestmark = pytest.mark.postgres

MakeReplica = Callable[..., AbstractContextManager[WrdsReplica]]
CHILD = Path(__file__).with_name("_parallel_child.py")
DSF = builtin_spec("crsp.dsf")
YEARS = range(2016, 2022)


def log_statements(rep: WrdsReplica) -> int:
    """Log every statement from now on; return the log's size to read from."""
    rep.execute("ALTER SYSTEM SET log_statement = 'all'")
    rep.execute("SELECT pg_reload_conf()")
    return rep.server.log_path.stat().st_size


def statements_since(rep: WrdsReplica, offset: int) -> str:
    return rep.server.log_path.read_bytes()[offset:].decode(errors="replace")


def table(batches: Iterator[pa.RecordBatch], schema: pa.Schema) -> pa.Table:
    return pa.Table.from_batches(list(batches), schema=schema)


@pytest.mark.parametrize("block_bytes", [64 << 10, 4 << 20], ids=["small-blocks", "one-block"])
def test_a_run_of_years_sends_the_rows_and_markers_of_one_copy_per_year(
    make_replica: MakeReplica, monkeypatch: pytest.MonkeyPatch, block_bytes: int
) -> None:
    """Small CSV blocks put year changes inside blocks and across many of them; one block
    holds every year. Either way each year's rows, order and marker are the per-year COPY's."""
    monkeypatch.setattr(wrds_source, "_CSV_BLOCK_BYTES", block_bytes)
    with make_replica(datasets=["crsp.dsf"], years=YEARS) as rep:
        server = rep.source()  # the server's markers, from a source of their own: a year
        expected = {p.year: p.marker for p in server.partitions(DSF)}  # it marks is not hashed
        server.close()
        src = rep.source()
        try:
            schema = src.describe(DSF).schema
            offset = log_statements(rep)
            got = {}
            for year, batches in src.read_partitions(DSF, list(YEARS), batch_rows=1000):
                got[year] = table(batches, schema)
                assert max(b.num_rows for b in got[year].to_batches()) <= 1000
                assert src.streamed_marker(DSF, year) == expected[year]
            assert statements_since(rep, offset).count("COPY (") == 1
            assert list(got) == list(YEARS)
            for year in YEARS:
                one = table(src.read_partition(DSF, year), schema)
                assert got[year].num_rows > 0
                assert got[year].equals(one), year  # same rows in the same order
        finally:
            src.close()


def test_a_year_without_rows_in_a_run_is_an_empty_year(make_replica: MakeReplica) -> None:
    """Years with no rows (before, inside and after the table's years) are handed on empty,
    with the marker of no rows, and the years around them are complete."""
    with make_replica(datasets=["crsp.dsf"], years=YEARS) as rep:
        rep.execute(
            "DELETE FROM crsp_a_stock.dsf WHERE date >= '2018-01-01' AND date < '2019-01-01'"
        )
        src = rep.source()
        try:
            schema = src.describe(DSF).schema
            server = rep.source()
            listed = server.partitions(DSF)
            server.close()
            counts = {p.year: p.row_count for p in listed}
            markers = {p.year: p.marker for p in listed}
            asked = [2015, 2017, 2018, 2019, 2030]
            got = {y: table(b, schema).num_rows for y, b in src.read_partitions(DSF, asked)}
            assert got == {2015: 0, 2017: counts[2017], 2018: 0, 2019: counts[2019], 2030: 0}
            assert 2018 not in counts
            assert src.streamed_marker(DSF, 2018) == "pg-rowhash1:0:0"
            assert src.streamed_marker(DSF, 2017) == markers[2017]
            assert src.streamed_marker(DSF, 2019) == markers[2019]
        finally:
            src.close()


def test_leaving_a_year_early_or_the_whole_run(make_replica: MakeReplica) -> None:
    """A year left after one batch: the next year still starts at its first row. A run closed
    midway cancels its COPY, and the source reads again on the same connection."""
    with make_replica(datasets=["crsp.dsf"], years=YEARS) as rep:
        src = rep.source()
        try:
            schema = src.describe(DSF).schema
            run = src.read_partitions(DSF, [2016, 2017, 2018], batch_rows=500)
            _, first = next(run)
            assert next(first).num_rows == 500
            year, second = next(run)  # 2016 left after one batch
            assert year == 2017
            assert table(second, schema).equals(table(src.read_partition(DSF, 2017), schema))
            run.close()  # 2018 never read: its COPY is cancelled
            active = rep.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'COPY (%%' "
                "AND state = 'active' AND pid <> pg_backend_pid()"
            )
            assert active == [(0,)]
            again = table(src.read_partition(DSF, 2018), schema)
            assert again.num_rows == src.partitions(DSF, years=[2018])[0].row_count
        finally:
            src.close()


@pytest.mark.parametrize(
    "years",
    [[], [2017, 2016], [2016, 2016], [0, 2016], [2016.0], [True]],
    ids=["none", "descending", "repeated", "year-0", "float", "bool"],
)
def test_read_partitions_refuses_years_it_cannot_read_in_order(
    make_replica: MakeReplica, years: list[object]
) -> None:
    with make_replica(datasets=["crsp.dsf"]) as rep:
        src = rep.source()
        try:
            with pytest.raises(ValueError, match="strictly increasing"):
                src.read_partitions(DSF, years)  # type: ignore[arg-type]
            with pytest.raises(ValueError, match="partitioned"):
                src.read_partitions(attrs.evolve(DSF, partition_column=None), [2021])
        finally:
            src.close()


class PerYear(Wrapping):
    """WrdsSource without `read_partitions`: the sync reads one COPY per year."""

    def partitions(self, spec, *, years=None, markers=None):  # type: ignore[no-untyped-def]
        return self.inner.partitions(spec, years=years, markers=markers)  # type: ignore[call-arg]

    def streamed_marker(self, spec, year):  # type: ignore[no-untyped-def]
        return self.inner.streamed_marker(spec, year)  # type: ignore[attr-defined]


def test_one_stream_syncs_its_years_with_one_copy(
    make_replica: MakeReplica, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """streams=1 sends one COPY for six years and commits what a year-by-year sync commits:
    rows, markers and content digests (file bytes may differ: batches are cut elsewhere)."""
    monkeypatch.setattr(wrds_source, "_CSV_BLOCK_BYTES", 64 << 10)
    with make_replica(datasets=["crsp.dsf"], years=YEARS) as rep:
        got = {}
        for name, make in (
            ("runs", rep.source),
            ("per-year", lambda **kw: PerYear(rep.source(**kw))),
        ):
            offset = log_statements(rep)
            with Warehouse(tmp_path / name, source=make(streams=1)) as wh:  # type: ignore[operator]
                report = wh.sync("crsp.dsf")
                parts = wh.snapshot().dataset("crsp.dsf").partitions
                got[name] = {p.year: (p.row_count, p.marker, p.content_digest) for p in parts}
                assert report["crsp.dsf"].years_written == tuple(YEARS)
            copies = statements_since(rep, offset).count("COPY (")
            assert copies == (1 if name == "runs" else len(YEARS)), name
        assert got["runs"] == got["per-year"]
        assert all(
            m is not None and m.startswith("pg-rowhash1:") for _, m, _ in got["runs"].values()
        )

        # A full re-read in the other layout finds the same rows and keeps every file.
        with Warehouse(tmp_path / "runs", source=PerYear(rep.source(streams=1))) as wh:
            before = {p.year: p.sha256 for p in wh.snapshot().dataset("crsp.dsf").partitions}
            result = wh.sync("crsp.dsf", full=True)["crsp.dsf"]
            after = {p.year: p.sha256 for p in wh.snapshot().dataset("crsp.dsf").partitions}
            assert before == after
            assert result.years_written == ()


def test_the_sync_cuts_its_years_into_runs_per_stream() -> None:
    """At least one run per stream, consecutive years balanced by rows, and no run above
    GROUP_ROWS rows unless it is one year."""

    def parts(*rows: int | None) -> dict[int, PartitionInfo]:
        return {i: PartitionInfo(year=2000 + i, row_count=n) for i, n in enumerate(rows)}

    assert _groups(parts(10, 10, 10), 1, together=False) == [[0], [1], [2]]
    assert _groups(parts(10, 10, 10), 4, together=True) == [[0], [1], [2]]
    assert _groups(parts(10, 10, 10, 10), 1, together=True) == [[0, 1, 2, 3]]
    assert _groups(parts(10, 10, 10, 10, 10, 10), 2, together=True) == [[0, 1, 2], [3, 4, 5]]
    assert _groups(parts(100, 1, 1, 1, 1), 2, together=True) == [[0], [1, 2, 3, 4]]
    assert _groups(parts(None, None, None, None), 2, together=True) == [[0, 1], [2, 3]]
    many = parts(*[GROUP_ROWS // 4] * 20)
    runs = _groups(many, 1, together=True)
    assert [i for run in runs for i in run] == list(range(20))
    assert len(runs) == 5
    assert all(sum(many[i].row_count or 0 for i in run) <= GROUP_ROWS for run in runs)
    # A run closes before it would pass GROUP_ROWS, a year larger than that is a run alone.
    tenth = GROUP_ROWS // 10
    assert _groups(parts(6 * tenth, 6 * tenth, 3 * tenth, 3 * tenth, tenth), 1, together=True) == [
        [0],
        [1, 2],
        [3, 4],
    ]
    assert _groups(parts(1, 2 * GROUP_ROWS, 1), 1, together=True) == [[0], [1], [2]]
    # Indices of reused partitions are missing from todo; runs keep the given order.
    gaps = {i: PartitionInfo(year=2000 + i, row_count=5) for i in (0, 2, 3, 7, 9)}
    assert _groups(gaps, 2, together=True) == [[0, 2, 3], [7, 9]]


@pytest.mark.crash
@pytest.mark.parametrize("point", ["partition-staged:2", "checkpoint-recorded:3"])
def test_writer_killed_inside_a_run_of_years(
    make_replica: MakeReplica, vault_dir: Path, point: str
) -> None:
    """SIGKILL after some years of a one-stream run were staged: nothing is committed; the
    next sync resumes the checkpointed years, reads the others and commits the exact table."""
    with make_replica(datasets=["crsp.dsf"], years=YEARS) as rep:
        killed_at(point, CHILD, str(vault_dir), json.dumps(rep.connect_kwargs()), "1")
        assert not (vault_dir / "HEAD").exists()
        with Warehouse(vault_dir, source=rep.source(streams=1)) as wh:
            result = wh.sync("crsp.dsf")["crsp.dsf"]
            checkpointed = 3 if point.startswith("checkpoint") else 1
            assert result.years_resumed == tuple(YEARS)[:checkpointed]
            expected = rep.execute(
                "SELECT extract(year FROM date)::int, count(*) FROM crsp.dsf GROUP BY 1 ORDER BY 1"
            )
            got = wh.snapshot().arrow(
                "SELECT year(date) AS y, count(*) AS n FROM crsp.dsf GROUP BY 1 ORDER BY 1"
            )
            assert [(g["y"], g["n"]) for g in got.to_pylist()] == [tuple(e) for e in expected]
            assert wh.verify().ok
        assert staging_dirs(vault_dir) == []
