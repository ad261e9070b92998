"""Resumable sync: an interrupted sync restarts from the years not yet staged.

Everything is real: the vault, its files, DuckDB. The source is `SampleSource`, wrapped by a
counter that records which years were read (the source is not ours to trust: that is exactly
what is being counted). Interruptions are real exceptions raised inside the sync (from the
progress callback, or by the source), and Ctrl-C; the SIGKILL case is in tests/crash (every
crash point, including ``checkpoint-linked`` / ``checkpoint-recorded``) and tests/reliability.
"""

from __future__ import annotations

import os
import time
from collections.abc import Collection, Iterator, Sequence
from pathlib import Path

import pyarrow as pa
import pytest

import wrdsvault
from _helpers.disk import entry_paths
from _helpers.sources import Wrapping
from wrdsvault import Progress
from wrdsvault._storage.checkpoint import MAX_AGE_S
from wrdsvault.datasets import DatasetSpec
from wrdsvault.sources import SampleSource
from wrdsvault.sources.base import PartitionInfo

YEARS = range(2019, 2024)


class Counting(Wrapping):
    """Hands on a source's rows and records the years read; can fail at one year."""

    def __init__(self, inner: SampleSource, *, fail_at: int | None = None) -> None:
        super().__init__(inner)
        self.fail_at = fail_at
        self.read: list[int | None] = []
        self.partitions_years: list[Collection[int] | None] = []

    def partitions(
        self, spec: DatasetSpec, *, years: Collection[int] | None = None
    ) -> Sequence[PartitionInfo]:
        self.partitions_years.append(years)
        return super().partitions(spec, years=years)

    def read_partition(
        self, spec: DatasetSpec, year: int | None, *, batch_rows: int = 131_072
    ) -> Iterator[pa.RecordBatch]:
        self.read.append(year)
        for batch in self.inner.read_partition(spec, year, batch_rows=batch_rows):
            if year == self.fail_at:
                raise ConnectionError(f"network dropped in the middle of {year}")
            yield batch


def sample(vintage: int = 1) -> SampleSource:
    return SampleSource(seed=3, years=YEARS, vintage=vintage, n_securities=40)


def checkpoints(root: Path) -> list[str]:
    """Every file and folder under ``tmp/resume``, sorted."""
    return sorted(entry_paths(root / "tmp" / "resume"))


def fail_at(dataset: str, year: int, root: Path, *, vintage: int = 1) -> None:
    """A sync of ``dataset`` whose source drops the connection in the middle of ``year``."""
    with (
        wrdsvault.Warehouse(root, source=Counting(sample(vintage), fail_at=year)) as wh,
        pytest.raises(wrdsvault.SyncError),
    ):
        wh.sync(dataset)


def reference(tmp_path: Path, vintage: int, dataset: str) -> str:
    """The fingerprint of a clean, uninterrupted sync of the same data."""
    with wrdsvault.Warehouse(tmp_path / "reference", source=sample(vintage)) as wh:
        wh.sync(dataset)
        with wh.snapshot() as snap:
            return snap.fingerprint


def test_failed_sync_resumes_from_the_years_it_staged(tmp_path: Path) -> None:
    """Years 2019-2020 staged, 2021 fails: the retry reads 2021-2023 only, same result."""
    root = tmp_path / "vault"
    failing = Counting(sample(), fail_at=2021)
    with wrdsvault.Warehouse(root, source=failing) as wh:
        with pytest.raises(wrdsvault.SyncError):
            wh.sync("crsp.dsf")
        assert wh.snapshots() == []
    assert failing.read == [2019, 2020, 2021]
    assert checkpoints(root) == [
        "crsp",
        "crsp/dsf",
        "crsp/dsf/2019.json",
        "crsp/dsf/2019.parquet",
        "crsp/dsf/2020.json",
        "crsp/dsf/2020.parquet",
    ]
    events: list[Progress] = []
    retry = Counting(sample())
    with wrdsvault.Warehouse(root, source=retry) as wh:
        report = wh.sync("crsp.dsf", progress=events.append)
        # the failed sync's staging went to quarantine (evidence); no checkpoint is left
        assert {f.kind for f in wh.doctor().findings} == {"quarantine"}
        with wh.snapshot() as snap:
            assert snap.fingerprint == reference(tmp_path, 1, "crsp.dsf")
    assert retry.read == [2021, 2022, 2023]
    result = report["crsp.dsf"]
    assert result.status == "added"
    assert result.years_written == tuple(YEARS)
    assert result.years_resumed == (2019, 2020)
    assert "2 resumed from an interrupted sync" in report.summary()
    done = {e.year: e.action for e in events if e.done}
    assert done == {2019: "resumed", 2020: "resumed", 2021: "read", 2022: "read", 2023: "read"}
    assert checkpoints(root) == []  # the commit removed them


def test_year_changed_since_the_interruption_is_read_again(tmp_path: Path) -> None:
    """A checkpoint is used only while the source's marker for that year is the same."""
    root = tmp_path / "vault"
    fail_at("crsp.msf", 2023, root, vintage=1)
    # between the interruption and the retry, the source moves to vintage 2
    spec = wrdsvault.datasets.builtin_spec("crsp.msf")
    marks1 = {p.year: p.marker for p in sample(1).partitions(spec)}
    marks2 = {p.year: p.marker for p in sample(2).partitions(spec)}
    staged = {2019, 2020, 2021, 2022}
    stale = {y for y in staged if marks1[y] != marks2[y]}
    assert stale and stale != staged, "the scenario needs changed and unchanged years"
    retry = Counting(sample(2))
    with wrdsvault.Warehouse(root, source=retry) as wh:
        report = wh.sync("crsp.msf")
        with wh.snapshot() as snap:
            assert snap.fingerprint == reference(tmp_path, 2, "crsp.msf")
    assert set(report["crsp.msf"].years_resumed) == staged - stale
    assert sorted(retry.read) == sorted(stale | {2023})


def test_ctrl_c_keeps_the_finished_years(tmp_path: Path) -> None:
    """KeyboardInterrupt mid-sync: staging is cleaned, checkpoints stay, the retry resumes."""
    root = tmp_path / "vault"

    def interrupt(event: Progress) -> None:
        if event.year == 2022 and not event.done:
            raise KeyboardInterrupt

    with wrdsvault.Warehouse(root, source=sample()) as wh:
        with pytest.raises(KeyboardInterrupt):
            wh.sync("crsp.dsf", progress=interrupt)
        assert [p.name for p in (root / "tmp").iterdir()] == ["resume"]
    retry = Counting(sample())
    with wrdsvault.Warehouse(root, source=retry) as wh:
        report = wh.sync("crsp.dsf")
    assert report["crsp.dsf"].years_resumed == (2019, 2020, 2021)
    assert retry.read == [2022, 2023]


def test_damaged_checkpoint_is_read_again(tmp_path: Path) -> None:
    """A checkpoint whose bytes no longer match its record is ignored, never committed."""
    root = tmp_path / "vault"
    fail_at("crsp.dsf", 2021, root)
    victim = root / "tmp" / "resume" / "crsp" / "dsf" / "2019.parquet"
    raw = bytearray(victim.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    victim.write_bytes(bytes(raw))
    (root / "tmp" / "resume" / "crsp" / "dsf" / "2020.json").write_text("{not json")
    retry = Counting(sample())
    with wrdsvault.Warehouse(root, source=retry) as wh:
        report = wh.sync("crsp.dsf")
        assert wh.verify().ok
        with wh.snapshot() as snap:
            assert snap.fingerprint == reference(tmp_path, 1, "crsp.dsf")
    assert report["crsp.dsf"].years_resumed == ()
    assert retry.read == list(YEARS)


def test_checkpoint_of_another_source_is_not_taken(tmp_path: Path) -> None:
    """The record names the source: rows staged from one source never stand in for another's."""
    root = tmp_path / "vault"
    fail_at("crsp.dsf", 2021, root)
    other = Counting(sample())
    other.name = "mirror"
    with wrdsvault.Warehouse(root, source=other) as wh:
        report = wh.sync("crsp.dsf")
    assert report["crsp.dsf"].years_resumed == ()
    assert other.read == list(YEARS)
    assert checkpoints(root) == []


def test_week_old_and_incomplete_checkpoints_are_dropped_by_recovery(tmp_path: Path) -> None:
    root = tmp_path / "vault"
    fail_at("crsp.dsf", 2022, root)
    folder = root / "tmp" / "resume" / "crsp" / "dsf"
    old = time.time() - MAX_AGE_S - 60
    os.utime(folder / "2019.parquet", (old, old))
    (folder / "2020.json").unlink()  # a crash between the link and the record
    with wrdsvault.Warehouse(root, source=sample()) as wh:
        found = {f.kind for f in wh.doctor().findings}
        assert found == {"checkpoint", "quarantine"}
        retry = Counting(sample())
        wh.source = retry
        report = wh.sync("crsp.dsf")
    assert report["crsp.dsf"].years_resumed == (2021,)
    assert retry.read == [2019, 2020, 2022, 2023]


def test_years_hint_reaches_the_source(tmp_path: Path) -> None:
    """sync(years=...) asks the source about those years only; a source without the
    parameter still works (the sync filters)."""
    root = tmp_path / "vault"
    counting = Counting(sample())
    with wrdsvault.Warehouse(root, source=counting) as wh:
        report = wh.sync("crsp.msf", years=[2020, 2022])
    assert counting.partitions_years == [frozenset({2020, 2022})]
    assert counting.read == [2020, 2022]
    assert report["crsp.msf"].years_written == (2020, 2022)

    class Old(Counting):
        def partitions(self, spec: DatasetSpec) -> Sequence[PartitionInfo]:  # type: ignore[override]
            self.partitions_years.append(None)
            return self.inner.partitions(spec)

    old = Old(sample())
    with wrdsvault.Warehouse(tmp_path / "old", source=old) as wh:
        report = wh.sync("crsp.msf", years=[2021])
    assert old.partitions_years == [None]
    assert old.read == [2021]
    assert report["crsp.msf"].years_written == (2021,)


def test_requested_year_gone_from_the_source_is_removed(tmp_path: Path) -> None:
    """years=[y] where the source no longer has y: allowed, y leaves the snapshot, others stay."""
    root = tmp_path / "vault"
    with wrdsvault.Warehouse(root, source=sample()) as wh:
        wh.sync("crsp.msf")
    shorter = SampleSource(seed=3, years=range(2019, 2023), vintage=1, n_securities=40)
    with wrdsvault.Warehouse(root, source=shorter) as wh:
        with pytest.raises(wrdsvault.ValidationFailedError, match="removed_years"):
            wh.sync("crsp.msf", years=[2022, 2023])
        report = wh.sync("crsp.msf", years=[2022, 2023], allow_removal=True)
        assert report["crsp.msf"].years_removed == (2023,)
        with wh.snapshot() as snap:
            assert [p.year for p in snap.dataset("crsp.msf").partitions] == [
                2019,
                2020,
                2021,
                2022,
            ]


def test_full_sync_does_not_resume(tmp_path: Path) -> None:
    """full=True trusts no marker, so it reads every year even where a checkpoint exists."""
    root = tmp_path / "vault"
    fail_at("crsp.dsf", 2021, root)
    retry = Counting(sample())
    with wrdsvault.Warehouse(root, source=retry) as wh:
        report = wh.sync("crsp.dsf", full=True)
    assert report["crsp.dsf"].years_resumed == ()
    assert retry.read == list(YEARS)
    assert checkpoints(root) == []
