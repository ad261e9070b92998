"""A sync asks its source about every dataset before it writes anything (lock, staging,
quarantine, snapshot): a name the source does not serve costs nothing on disk."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Collection, Iterator, Sequence
from pathlib import Path

import pyarrow as pa
import pytest

import wrdsvault
from _helpers.sources import Wrapping
from wrdsvault.datasets import DatasetSpec
from wrdsvault.errors import InvalidValueError, SyncError, UnknownDatasetError
from wrdsvault.sources import SampleSource
from wrdsvault.sources.base import PartitionInfo, TableInfo


def tree(root: Path) -> dict[str, str]:
    """Every path under ``root`` with a digest of its content (folders: ``"dir"``)."""
    return {
        str(p.relative_to(root)): "dir"
        if p.is_dir()
        else hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
    }


@pytest.fixture
def synced(tmp_path: Path, sample_source: SampleSource) -> Iterator[wrdsvault.Warehouse]:
    """A vault holding one committed snapshot (ff.factors_monthly)."""
    wh = wrdsvault.Warehouse(tmp_path / "vault", source=sample_source)
    wh.sync("ff.factors_monthly")
    yield wh
    wh.close()


def test_unserved_table_fails_before_anything_is_written(synced: wrdsvault.Warehouse) -> None:
    """A table the source does not serve raises UnknownDatasetError naming it and leaves the
    vault byte for byte as it was: no quarantine entry, no tmp file, no new snapshot."""
    before = tree(synced.root)
    for _ in range(2):  # each attempt used to leave one more quarantine entry
        with pytest.raises(UnknownDatasetError, match=r"crsp\.msf_typo") as exc:
            synced.sync(["crsp.msf", "crsp.msf_typo"], date_column="date")
        assert exc.value.dataset == "crsp.msf_typo"  # type: ignore[attr-defined]
        assert "crsp.msf" in exc.value.known  # type: ignore[attr-defined]
    assert synced.quarantine() == []
    assert tree(synced.root) == before  # HEAD and snapshots/ included


def test_unserved_table_on_a_new_vault_creates_nothing(
    tmp_path: Path, sample_source: SampleSource
) -> None:
    """Where no vault exists yet, a sync of a table the source does not serve fails before the
    vault is created: the folder stays absent."""
    with (
        wrdsvault.Warehouse(tmp_path / "vault", source=sample_source) as wh,
        pytest.raises(UnknownDatasetError),
    ):
        wh.sync("comp.nothing", date_column=None)
    assert not (tmp_path / "vault").exists()
    assert list(tmp_path.iterdir()) == []


class _Unreachable:
    """A source whose server drops the connection on every question (an OSError)."""

    name = "unreachable"

    def describe(self, spec: DatasetSpec) -> TableInfo:
        raise ConnectionResetError(104, "Connection reset by peer")

    def partitions(
        self, spec: DatasetSpec, *, years: Collection[int] | None = None
    ) -> Sequence[PartitionInfo]:
        raise AssertionError("not reached")  # pragma: no cover

    def read_partition(
        self, spec: DatasetSpec, year: int | None, *, batch_rows: int = 131_072
    ) -> Iterator[pa.RecordBatch]:
        raise AssertionError("not reached")  # pragma: no cover

    def close(self) -> None:
        pass


def test_source_failing_before_the_sync_is_a_sync_error_and_writes_nothing(
    synced: wrdsvault.Warehouse,
) -> None:
    """A dropped connection while the sync asks its questions is a SyncError that says nothing
    was written, and nothing was: no quarantine entry, the same files."""
    before = tree(synced.root)
    with wrdsvault.Warehouse(synced.root, source=_Unreachable()) as wh:
        with pytest.raises(SyncError, match="nothing was written") as exc:
            wh.sync("ff.factors_monthly")
        assert isinstance(exc.value.__cause__, ConnectionResetError)
        with pytest.raises(SyncError, match="nothing was written"):
            wh.sync("ff.factors_daily", date_column="auto")
        assert wh.quarantine() == []
    assert tree(synced.root) == before


def test_sync_all_on_a_vault_without_datasets_writes_nothing(
    tmp_path: Path, sample_source: SampleSource
) -> None:
    """sync_all on a vault with no snapshot refuses with UnknownDatasetError and leaves no
    quarantine entry or staging behind."""
    with wrdsvault.Warehouse(tmp_path / "vault", source=sample_source, create=True) as wh:
        before = tree(tmp_path)
        with pytest.raises(UnknownDatasetError, match="holds no dataset yet"):
            wh.sync_all()
        assert wh.quarantine() == []
        assert tree(tmp_path) == before


class _Narrowed(Wrapping):
    """The sample source under its own name, no longer serving some tables (WRDS retiring one)."""

    def __init__(self, inner: SampleSource, dropped: set[str]) -> None:
        super().__init__(inner)
        self.dropped = dropped

    def describe(self, spec: DatasetSpec) -> TableInfo:
        if spec.name in self.dropped:
            raise UnknownDatasetError(dataset=spec.name, known=[], hint="retired by the source")
        return self.inner.describe(spec)


def test_sync_all_refusals_write_nothing(
    synced: wrdsvault.Warehouse, make_source: Callable[..., SampleSource]
) -> None:
    """sync_all with a source that no longer serves a held dataset, or with another source,
    refuses before the lock: no quarantine entry, no new snapshot, the same files."""
    before = tree(synced.root)
    retired = _Narrowed(make_source(2), {"ff.factors_monthly"})
    with wrdsvault.Warehouse(synced.root, source=retired) as wh:
        with pytest.raises(UnknownDatasetError, match="retired by the source"):
            wh.sync_all()
        assert wh.quarantine() == []
    with wrdsvault.Warehouse(synced.root, source=_Unreachable()) as wh:
        with pytest.raises(InvalidValueError, match="came from another source"):
            wh.sync_all()
        assert wh.quarantine() == []
    assert tree(synced.root) == before
