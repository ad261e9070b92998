"""The `Progress` events of a sync: one start, the batches read, one finish per partition."""

from __future__ import annotations

from pathlib import Path

import wrdsvault
from wrdsvault import Progress
from wrdsvault.datasets import builtin_spec
from wrdsvault.sources import SampleSource

DATASETS = ["crsp.msf", "ff.factors_monthly"]


def sample(vintage: int) -> SampleSource:
    return SampleSource(seed=0, years=range(2019, 2024), n_securities=30, vintage=vintage)


def test_events_count_rows_per_partition_and_per_dataset(tmp_path: Path) -> None:
    """Each partition starts, streams (if read) and finishes; running totals add up exactly."""
    settings = wrdsvault.VaultSettings(batch_rows=100)
    with wrdsvault.Warehouse(tmp_path / "v", source=sample(1), settings=settings) as wh:
        wh.sync(DATASETS)
    events: list[Progress] = []
    with wrdsvault.Warehouse(tmp_path / "v", source=sample(2), settings=settings) as wh:
        report = wh.sync(DATASETS, progress=events.append)
    actions = set()
    for k, name in enumerate(DATASETS):
        parts = sample(2).partitions(builtin_spec(name))
        rows = [p.row_count or 0 for p in parts]
        result = report[name]
        mine = [e for e in events if e.dataset == name]
        assert {(e.dataset_index, e.dataset_total, e.total) for e in mine} == {(k, 2, len(parts))}
        assert {e.dataset_rows_total for e in mine} == {sum(rows)}
        for i, part in enumerate(parts):
            of_part = [e for e in mine if e.index == i]
            start, *batches, finish = of_part
            before = sum(rows[:i])
            assert (start.year, start.rows, start.done, start.rows_read) == (
                part.year,
                part.row_count,
                False,
                0,
            )
            assert start.dataset_rows_done == before
            action = finish.action
            assert action is not None
            actions.add(action)
            assert (finish.done, finish.year, finish.dataset_rows_done) == (
                True,
                part.year,
                before + rows[i],
            )
            assert finish.rows_read == (rows[i] if action == "read" else 0)
            read = [e.rows_read for e in batches]
            assert all(not e.done and e.dataset_rows_done == before for e in batches)
            if action == "reused":
                assert part.year in result.years_reused
            if action == "read":
                assert read == sorted(set(read)) and read[-1] == rows[i]
                assert all(b - a <= 100 for a, b in zip([0, *read], read, strict=False))
            else:
                assert read == []
        assert [e.index for e in mine] == sorted(e.index for e in mine)
    assert actions == {"read", "reused"}, "the scenario needs both kinds of partitions"
