"""A sync that finds the table comment unchanged stops at one catalog query (`change_marker`).

`WrdsSource.change_marker` is `describe`'s marker without the columns, their types or the row
estimate; the sync asks it first (and in its preflight) and describes the table only when the
marker moved. Checked against a real PostgreSQL replica: the marker and the errors are
`describe`'s, and the statements an unchanged sync sends are the comment lookup alone.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

import pytest

from _helpers.sources import Wrapping
from wrdsvault import Warehouse
from wrdsvault.datasets import DatasetSpec, builtin_spec
from wrdsvault.errors import SourceError, UnknownDatasetError
from wrdsvault.sources import SampleSource
from wrdsvault.testing import WrdsReplica

pytestmark = pytest.mark.postgres

MakeReplica = Callable[..., AbstractContextManager[WrdsReplica]]


def _statements_since(rep: WrdsReplica, offset: int) -> str:
    return rep.server.log_path.read_bytes()[offset:].decode(errors="replace")


def _log_statements(rep: WrdsReplica) -> int:
    rep.execute("ALTER SYSTEM SET log_statement = 'all'")
    rep.execute("SELECT pg_reload_conf()")
    return rep.server.log_path.stat().st_size


def test_change_marker_is_describes_marker_with_describes_errors(
    make_replica: MakeReplica,
) -> None:
    with make_replica(datasets=["crsp.msf"]) as rep:
        source = rep.source()
        try:
            spec = builtin_spec("crsp.msf")
            marker = source.change_marker(spec)
            assert marker is not None
            assert "Updated" in marker
            assert marker == source.describe(spec).change_marker
            # A comment with no update stamp is no marker, for both.
            rep.execute("COMMENT ON VIEW crsp.msf IS 'Monthly Stock File'")
            assert source.change_marker(spec) is None
            assert source.describe(spec).change_marker is None
            for name in ("crsp.no_such_table", "nolib.msf"):
                missing = DatasetSpec(name=name, partition_column=None)
                with pytest.raises(UnknownDatasetError):
                    source.describe(missing)
                with pytest.raises(UnknownDatasetError):
                    source.change_marker(missing)
        finally:
            source.close()


def test_an_unchanged_sync_sends_only_the_comment_lookup(
    make_replica: MakeReplica, vault_dir: Path
) -> None:
    with make_replica(datasets=["crsp.msf"]) as rep:
        with Warehouse(vault_dir, source=rep.source()) as wh:
            assert wh.sync("crsp.msf")["crsp.msf"].status == "added"
        offset = _log_statements(rep)
        with Warehouse(vault_dir, source=rep.source()) as wh:
            assert wh.sync("crsp.msf")["crsp.msf"].status == "unchanged"
        log = _statements_since(rep, offset)
        assert log.count("obj_description") == 2  # the preflight and the check under the lock
        for not_sent in ("json_agg", "EXPLAIN", "COPY (", "hash_record_extended"):
            assert not_sent not in log, not_sent

        # A new comment: the sync describes the table and compares the years again.
        rep.execute("COMMENT ON VIEW crsp.msf IS 'Monthly Stock - Securities (Updated 2099-01-01)'")
        offset = rep.server.log_path.stat().st_size
        with Warehouse(vault_dir, source=rep.source()) as wh:
            result = wh.sync("crsp.msf")["crsp.msf"]
        assert result.change_marker == "Monthly Stock - Securities (Updated 2099-01-01)"
        assert result.years_written == ()  # the rows are the same: every year reused
        log = _statements_since(rep, offset)
        assert "json_agg" in log
        assert "hash_record_extended" in log


class _Quick(Wrapping):
    """A sample source with a ``change_marker`` method answering ``answer(spec)``."""

    def __init__(self, answer: Callable[[DatasetSpec], object]) -> None:
        super().__init__(SampleSource(seed=0, years=range(2021, 2023), n_securities=10))
        self.answer = answer
        self.described = 0

    def describe(self, spec: DatasetSpec) -> object:  # type: ignore[override]
        self.described += 1
        return super().describe(spec)

    def change_marker(self, spec: DatasetSpec) -> object:
        return self.answer(spec)


def test_a_source_change_marker_is_checked_like_describes(vault_dir: Path) -> None:
    honest = _Quick(lambda spec: honest.inner.describe(spec).change_marker)
    with Warehouse(vault_dir, source=honest) as wh:
        assert wh.sync("crsp.msf")["crsp.msf"].status == "added"
    honest.described = 0
    with Warehouse(vault_dir, source=honest) as wh:
        assert wh.sync("crsp.msf")["crsp.msf"].status == "unchanged"
    assert honest.described == 0  # stopped at the marker

    moved = _Quick(lambda spec: "something else")
    with Warehouse(vault_dir, source=moved) as wh:
        assert wh.sync("crsp.msf")["crsp.msf"].status == "unchanged"  # describe decided
    assert moved.described >= 1

    bad = _Quick(lambda spec: 42)
    with Warehouse(vault_dir, source=bad) as wh, pytest.raises(SourceError, match="change_marker"):
        wh.sync("crsp.msf")

    def gone(spec: DatasetSpec) -> object:
        raise UnknownDatasetError(dataset=spec.name, known=[], hint="dropped")

    with Warehouse(vault_dir, source=_Quick(gone)) as wh, pytest.raises(UnknownDatasetError):
        wh.sync("crsp.msf")
