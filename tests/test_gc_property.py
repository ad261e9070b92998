"""Random sequences of sync / tag / untag / gc / open-reader (hypothesis): nothing kept is lost.

After every step, every snapshot the vault still lists verifies (every file re-hashed) and
answers exactly as when it was committed; every reader opened earlier still answers exactly as
when it was opened, even if gc expired its snapshot meanwhile; every snapshot that is gone is in
the expiry log; and the latest and every tagged snapshot are listed.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from wrdsvault import RetentionPolicy, Snapshot, Warehouse
from wrdsvault.sources import SampleSource

QUERY = (
    "select year(date) as y, count(*) as n, round(sum(ret), 9) as s "
    "from crsp.msf group by y order by y"
)
TAGS = ("paper", "draft", "v1")
POLICIES = st.builds(
    RetentionPolicy,
    keep_last=st.none() | st.integers(1, 3),
    keep_within=st.none() | st.sampled_from(["1h", "1d"]),
    keep_daily=st.none() | st.integers(1, 2),
)


def answers(snap: Snapshot) -> tuple[str, list[tuple[Any, ...]]]:
    df = snap.query(QUERY)
    return snap.fingerprint, [tuple(r) for r in df.itertuples(index=False)]


class Retention(RuleBasedStateMachine):
    """One vault per example; the model is what each snapshot answered when committed."""

    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="wrdsvault-gc-"))
        self.wh = Warehouse(self.dir / "vault", create=True)
        self.committed: dict[str, tuple[str, list[tuple[Any, ...]]]] = {}
        self.readers: list[tuple[Snapshot, tuple[str, list[tuple[Any, ...]]]]] = []

    def teardown(self) -> None:
        for snap, _ in self.readers:
            snap.close()
        self.wh.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    @rule(seed=st.integers(0, 3), vintage=st.sampled_from([1, 2]))
    def sync(self, seed: int, vintage: int) -> None:
        self.wh.source = SampleSource(
            seed=seed, years=range(2020, 2022), n_securities=10, vintage=vintage
        )
        report = self.wh.sync("crsp.msf", validate=False)  # other seeds are no vintage
        if report.committed:
            assert report.snapshot_id is not None
            with self.wh.snapshot(report.snapshot_id) as snap:
                self.committed[report.snapshot_id] = answers(snap)

    @precondition(lambda self: self.committed)
    @rule(name=st.sampled_from(TAGS), pick=st.integers(0, 100))
    def tag(self, name: str, pick: int) -> None:
        listed = [s.snapshot_id for s in self.wh.snapshots()]
        self.wh.tag(name, listed[pick % len(listed)], force=True)

    @precondition(lambda self: self.wh.tags())
    @rule(pick=st.integers(0, 100))
    def untag(self, pick: int) -> None:
        names = sorted(self.wh.tags())
        self.wh.untag(names[pick % len(names)])

    @precondition(lambda self: self.committed)
    @rule(policy=POLICIES)
    def gc(self, policy: RetentionPolicy) -> None:
        before = {s.snapshot_id for s in self.wh.snapshots()}
        keep = {self.wh.snapshot("latest").id, *self.wh.tags().values()}
        report = self.wh.gc(policy=policy)
        assert not keep & set(report.expired)
        assert {s.snapshot_id for s in self.wh.snapshots()} == before - set(report.expired)
        if policy.empty:
            assert report.expired == ()

    @precondition(lambda self: self.committed and len(self.readers) < 3)
    @rule(pick=st.integers(0, 100))
    def open_reader(self, pick: int) -> None:
        listed = [s.snapshot_id for s in self.wh.snapshots()]
        snap = self.wh.snapshot(listed[pick % len(listed)])
        self.readers.append((snap, answers(snap)))

    @precondition(lambda self: self.readers)
    @rule(pick=st.integers(0, 100))
    def close_reader(self, pick: int) -> None:
        snap, _ = self.readers.pop(pick % len(self.readers))
        snap.close()

    @invariant()
    def retained_snapshots_are_intact(self) -> None:
        listed = [s.snapshot_id for s in self.wh.snapshots()]
        expired = {e.snapshot_id for e in self.wh.expired()}
        assert set(self.committed) == set(listed) | expired
        assert not set(listed) & expired
        if listed:
            assert set(self.wh.tags().values()) <= set(listed)
            assert self.wh.verify(all_snapshots=True).ok
        for sid in listed:
            with self.wh.snapshot(sid) as snap:
                assert answers(snap) == self.committed[sid]

    @invariant()
    def open_readers_answer_as_before(self) -> None:
        for snap, expected in self.readers:
            assert answers(snap) == expected


Retention.TestCase.settings = settings(
    max_examples=5,
    stateful_step_count=8,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
test_retention_sequences = Retention.TestCase
